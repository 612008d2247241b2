"""The statistics of a change between two sides' cycles (baseline, this run), on the log scale: which cycles are
far enough off to set aside, Welch's interval of the log ratio of geometric means, and how many cycles per side would
likely decide what the interval leaves open. gate.py turns them into verdicts.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

# A cycle is set aside when it is both this factor off its side's median and beyond OUTLIER_Z robust z-scores (scaled
# median absolute deviations, Iglewicz and Hoaglin's 3.5): at a CV of 10% a clean cycle is 1.5x off one time in 30,000.
OUTLIER_FACTOR = 1.5
OUTLIER_Z = 3.5
MAX_CYCLES_SAID = 1000  # beyond this a projection of the cycles needed says "more than"


def outliers(values: Sequence[float]) -> list[bool]:
    """Which cycles of one side (positive values) to set aside: over ``OUTLIER_FACTOR`` off the side's median AND over
    ``OUTLIER_Z`` scaled median absolute deviations from it; never the majority, and only from 3 cycles on (with 2 there
    is no median to be far from)."""
    if len(values) < 3:
        return [False] * len(values)
    from scipy import stats

    logs = [math.log(v) for v in values]
    center = statistics.median(logs)
    spread = float(stats.median_abs_deviation(logs, scale="normal"))
    distance = [abs(x - center) for x in logs]
    far = [d > math.log(OUTLIER_FACTOR) and (spread == 0 or d > OUTLIER_Z * spread) for d in distance]
    if sum(far) > (len(values) - 1) // 2:  # that many far off are not outliers but the data
        return [False] * len(values)
    return far


@dataclass(frozen=True)
class Shift:
    """The log ratio of the two sides' geometric means, its interval and Welch's two-sided p."""

    estimate: float
    low: float
    high: float
    p_value: float


def log_shift(before: Sequence[float], now: Sequence[float], confidence: float) -> Shift:
    """Welch's test of the logs of ``now`` against ``before`` (positive values, 2 or more on each side)."""
    from scipy import stats  # at report time only

    log_before, log_now = [math.log(v) for v in before], [math.log(v) for v in now]
    estimate = statistics.fmean(log_now) - statistics.fmean(log_before)
    if statistics.pvariance(log_before) == 0 and statistics.pvariance(log_now) == 0:
        # identical cycles on both sides: the difference is exact (scipy would divide 0 by 0)
        return Shift(estimate, estimate, estimate, 0.0 if estimate != 0 else 1.0)
    with warnings.catch_warnings():  # near-identical cycles: scipy warns of precision loss
        warnings.simplefilter("ignore", RuntimeWarning)
        test = stats.ttest_ind(log_now, log_before, equal_var=False)
        interval = test.confidence_interval(confidence)
    low, high = float(interval.low), float(interval.high)
    if not (math.isfinite(low) and math.isfinite(high)):
        low, high = estimate, estimate
    p_value = float(test.pvalue) if math.isfinite(test.pvalue) else 1.0
    return Shift(estimate, low, high, p_value)


def pct_change(log_ratio: float) -> float:
    try:
        return (math.exp(log_ratio) - 1) * 100
    except OverflowError:
        return math.inf


def cycles_to_decide(shift: Shift, n_before: int, n_now: int, threshold_pct: float) -> int:
    """Cycles per side at which the interval, shrinking as sqrt(1/n_before + 1/n_now) at the noise seen, would likely
    clear the threshold: fit inside +-threshold (an estimate within it) or lie wholly beyond it (an estimate beyond)."""
    half_width = (shift.high - shift.low) / 2
    bound = math.log1p(threshold_pct / 100) if shift.estimate >= 0 else -math.log1p(-min(threshold_pct, 99.9) / 100)
    distance = abs(bound - abs(shift.estimate))
    if distance <= 0 or not math.isfinite(half_width):
        return MAX_CYCLES_SAID + 1
    scale = 1 / n_before + 1 / n_now  # the half width is proportional to sqrt(scale); equal sides: sqrt(2 / n)
    needed = math.ceil(2 / (scale * (distance / half_width) ** 2))
    return min(max(needed, max(n_before, n_now) + 1), MAX_CYCLES_SAID + 1)
