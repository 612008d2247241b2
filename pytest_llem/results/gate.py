"""Verdicts: did a metric of one experiment get worse between a baseline run and this one, beyond noise?

Energy and throughput noise is multiplicative (a hotter GPU draws a few % more on every token), so the two samples of
cycles are compared on the log scale with Welch's t-test (``scipy.stats.ttest_ind(equal_var=False)``): it needs no equal
variances between runs, and on the log scale the relative change is what is tested. A verdict is **regressed** only when
the change is beyond the threshold in the metric's bad direction AND significant at ``alpha``; **improved** likewise in
the good direction; **inconclusive** when beyond the threshold but not significant (or too few cycles to test); else
**unchanged**. Each verdict also says the smallest change this n and this noise could have detected (80% power).
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

# +1: a higher value is worse (energy, latency); -1: a lower value is worse (throughput).
DIRECTION: dict[str, int] = {
    "energy_j": 1,
    "energy_per_output_token_j": 1,
    "energy_adjusted_j": 1,
    "mean_power_w": 1,
    "duration_s": 1,
    "ttft_s.mean": 1,
    "ttft_s.p50": 1,
    "itl_s.mean": 1,
    "itl_s.p50": 1,
    "peak_memory_mb": 1,
    "tokens_per_s": -1,
}
DEFAULT_ALPHA = 0.05
POWER = 0.8


@dataclass(frozen=True)
class Verdict:
    metric: str
    outcome: str  # regressed | improved | unchanged | inconclusive
    baseline_mean: float | None
    current_mean: float | None
    change_pct: float | None  # (current / baseline - 1) * 100
    p_value: float | None
    min_detectable_pct: float | None  # the smallest change detectable here at POWER and alpha
    reason: str


def _positive(values: Sequence[float]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v) and v > 0]


def compare(
    metric: str,
    baseline: Sequence[float],
    current: Sequence[float],
    threshold_pct: float,
    alpha: float = DEFAULT_ALPHA,
) -> Verdict:
    """The verdict for one metric of one experiment, from the cycles of the baseline and of this run."""
    if metric not in DIRECTION:
        raise ValueError(f"no known direction for {metric!r}; known: {', '.join(sorted(DIRECTION))}")
    direction = DIRECTION[metric]
    old, new = _positive(baseline), _positive(current)
    if not old or not new:
        return Verdict(metric, "inconclusive", None, None, None, None, None, "no measured values on one side")
    old_mean, new_mean = statistics.fmean(old), statistics.fmean(new)
    change_pct = (new_mean / old_mean - 1) * 100
    beyond = direction * change_pct > threshold_pct or -direction * change_pct > threshold_pct
    if len(old) < 2 or len(new) < 2:
        outcome = "inconclusive" if beyond else "unchanged"
        return Verdict(metric, outcome, old_mean, new_mean, change_pct, None, None, "fewer than 2 cycles on a side")

    from scipy import stats  # at report time only

    log_old, log_new = [math.log(v) for v in old], [math.log(v) for v in new]
    with warnings.catch_warnings():  # near-identical cycles: scipy warns of precision loss; se == 0 is handled below
        warnings.simplefilter("ignore", RuntimeWarning)
        test = stats.ttest_ind(log_new, log_old, equal_var=False)
    p_value = float(test.pvalue) if math.isfinite(test.pvalue) else 1.0
    var_old, var_new = statistics.variance(log_old), statistics.variance(log_new)
    se = math.sqrt(var_old / len(old) + var_new / len(new))
    if se == 0:  # identical cycles on both sides: any difference at all is exact
        p_value = 0.0 if new_mean != old_mean else 1.0
        mde = 0.0
    else:
        df = _welch_df(var_old, len(old), var_new, len(new))
        critical = float(stats.t.ppf(1 - alpha / 2, df)) + float(stats.t.ppf(POWER, df))
        mde = (math.exp(critical * se) - 1) * 100
    significant = p_value < alpha
    worse = direction * change_pct > threshold_pct
    better = -direction * change_pct > threshold_pct
    if (worse or better) and significant:
        outcome, reason = ("regressed" if worse else "improved"), f"beyond {threshold_pct:g}% and p < {alpha:g}"
    elif worse or better:
        outcome, reason = "inconclusive", f"beyond {threshold_pct:g}% but not significant (p = {p_value:.3g})"
    else:
        outcome, reason = "unchanged", f"within {threshold_pct:g}%"
    return Verdict(metric, outcome, old_mean, new_mean, change_pct, p_value, mde, reason)


def _welch_df(var_a: float, n_a: int, var_b: float, n_b: int) -> float:
    a, b = var_a / n_a, var_b / n_b
    denominator = (a * a) / (n_a - 1) + (b * b) / (n_b - 1)
    return (a + b) ** 2 / denominator if denominator > 0 else float(n_a + n_b - 2)
