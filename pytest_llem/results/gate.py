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
import re
import statistics
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .stats import Summary, display_digits

# +1: a higher value is worse (energy, latency); -1: a lower value is worse (throughput).
DIRECTION: dict[str, int] = {
    "energy_j": 1,
    "energy_per_output_token_j": 1,
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
DEFAULT_METRIC = "energy_per_output_token_j"
# Sums over the measured devices: comparable only when both sides measured the same ones.
ENERGY_METRICS = frozenset({"energy_j", "energy_per_output_token_j", "mean_power_w", "energy_adjusted_j"})
FALLBACK_METRIC = "tokens_per_s"  # when neither side measured energy
OUTCOMES = ("regressed", "inconclusive", "improved", "unchanged", "not measured")  # worst first
UNITS = {"energy_per_output_token_j": "J/tok", "energy_j": "J", "mean_power_w": "W",
         "tokens_per_s": "tok/s", "peak_memory_mb": "MB"}  # fmt: skip


class ThresholdError(ValueError):
    """A --llem-fail / llem_fail value that cannot be read."""


def parse_alpha(text: str | float) -> float:
    """A significance level: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1:
        raise ThresholdError(f"the significance level must be between 0 and 1 (e.g. 0.05), not {text!r}")
    return value


@dataclass(frozen=True)
class Threshold:
    """``METRIC:PCT`` of --llem-fail; ``metric`` None is the default metric (energy per token, else tokens/s)."""

    metric: str | None
    pct: float

    @classmethod
    def parse(cls, text: str) -> Threshold:
        metric, _, pct = text.strip().rpartition(":")
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%?\s*", pct)
        if not match:
            raise ThresholdError(f"{text!r}: write METRIC:PCT (e.g. energy_per_output_token_j:5%) or PCT (5%)")
        metric = metric.strip()
        if metric and metric not in DIRECTION:
            raise ThresholdError(f"{text!r}: unknown metric {metric!r}; known: {', '.join(sorted(DIRECTION))}")
        return cls(metric or None, float(match.group(1)))

    def label(self) -> str:
        return f"{self.metric or 'default metric'}:{self.pct:g}%"


DEFAULT_THRESHOLD = Threshold(None, 5.0)


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
    threshold_pct: float = 0.0
    baseline_ci: float | None = None  # half width of the 95% CI of the mean
    current_ci: float | None = None
    baseline_n: int = 0
    current_n: int = 0

    def describe(self) -> str:
        """One line a person reads: the change, both means with their CIs, the test and what it could detect."""
        unit = UNITS.get(self.metric, "s" if self.metric.endswith("_s") or "_s." in self.metric else "")
        figures = []
        if self.change_pct is not None:
            figures.append(f"{self.change_pct:+.1f}%")
        if self.baseline_mean is not None and self.current_mean is not None:
            figures.append(
                f"baseline {_with_ci(self.baseline_mean, self.baseline_ci)} {unit} (n={self.baseline_n}) -> "
                f"now {_with_ci(self.current_mean, self.current_ci)} {unit} (n={self.current_n})"
            )
        if self.p_value is not None:
            figures.append(f"p = {self.p_value:.3g}")
        if self.min_detectable_pct is not None:
            figures.append(f"detectable change at this n and noise: {self.min_detectable_pct:.1f}%")
        return f"{self.metric}: {self.outcome} ({self.reason})" + (": " + "; ".join(figures) if figures else "")

    def as_dict(self) -> dict[str, object]:
        return {
            "metric": self.metric,
            "outcome": self.outcome,
            "threshold_pct": self.threshold_pct,
            "change_pct": self.change_pct,
            "p_value": self.p_value,
            "min_detectable_pct": self.min_detectable_pct,
            "baseline": {"mean": self.baseline_mean, "ci95_half_width": self.baseline_ci, "n": self.baseline_n},
            "current": {"mean": self.current_mean, "ci95_half_width": self.current_ci, "n": self.current_n},
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Verdict:
        base, now = data["baseline"], data["current"]
        assert isinstance(base, dict) and isinstance(now, dict)
        return cls(
            metric=str(data["metric"]),
            outcome=str(data["outcome"]),
            baseline_mean=base["mean"],
            current_mean=now["mean"],
            change_pct=data["change_pct"],  # type: ignore[arg-type]
            p_value=data["p_value"],  # type: ignore[arg-type]
            min_detectable_pct=data["min_detectable_pct"],  # type: ignore[arg-type]
            reason=str(data["reason"]),
            threshold_pct=float(data["threshold_pct"]),  # type: ignore[arg-type]
            baseline_ci=base["ci95_half_width"],
            current_ci=now["ci95_half_width"],
            baseline_n=int(base["n"]),
            current_n=int(now["n"]),
        )


def _with_ci(mean: float, half_width: float | None) -> str:
    digits = display_digits(mean)
    return f"{mean:.{digits}f}" + (f" ± {half_width:.{digits}f}" if half_width is not None else "")


def verdict_record(study: str, experiment_id: str, verdicts: Sequence[Verdict]) -> dict[str, object]:
    """One experiment's verdicts as JSON-ready data: what a gate item's report carries and the JSON report lists."""
    return {"study": study, "experiment_id": experiment_id, "verdicts": [v.as_dict() for v in verdicts]}


def worst(verdicts: Sequence[Verdict]) -> str | None:
    """The outcome that decides: regressed, then inconclusive, improved, unchanged, not measured."""
    outcomes = {v.outcome for v in verdicts}
    return next((o for o in OUTCOMES if o in outcomes), None)


def judge(
    baseline: Callable[[str], list[float]],
    current: Callable[[str], list[float]],
    thresholds: Sequence[Threshold],
    alpha: float = DEFAULT_ALPHA,
    energy_mismatch: str | None = None,
) -> list[Verdict]:
    """Every threshold's verdict for one experiment; ``baseline`` / ``current`` give a metric's samples by name.
    The default metric is energy per output token when either side measured it (a side that lost its meter is then
    inconclusive, not silently judged on speed); energy when there are no token counts (an ``llem_energy`` window
    without ``output_tokens``); otherwise tokens/s."""
    verdicts = []
    for threshold in thresholds:
        metric = threshold.metric
        if metric is None:
            metric = next(
                (m for m in (DEFAULT_METRIC, "energy_j") if baseline(m) or current(m)),
                FALLBACK_METRIC,
            )
        verdicts.append(compare(metric, baseline(metric), current(metric), threshold.pct, alpha, energy_mismatch))
    return verdicts


def _positive(values: Sequence[float]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v) and v > 0]


def compare(
    metric: str,
    baseline: Sequence[float],
    current: Sequence[float],
    threshold_pct: float,
    alpha: float = DEFAULT_ALPHA,
    energy_mismatch: str | None = None,
) -> Verdict:
    """The verdict for one metric of one experiment, from the cycles of the baseline and of this run.
    ``energy_mismatch`` says why the two sides' energies cover different devices (then energy is not comparable)."""
    if metric not in DIRECTION:
        raise ValueError(f"no known direction for {metric!r}; known: {', '.join(sorted(DIRECTION))}")
    direction = DIRECTION[metric]
    before, now = Summary.of(_positive(baseline)), Summary.of(_positive(current))

    def verdict(
        outcome: str, reason: str, change: float | None = None, p: float | None = None, mde: float | None = None
    ) -> Verdict:
        return Verdict(
            metric, outcome, before.mean, now.mean, change, p, mde, reason, threshold_pct,
            before.half_width, now.half_width, before.n, now.n,
        )  # fmt: skip

    if not before.n and not now.n:
        return verdict("not measured", "neither run measured it")
    if not before.n or not now.n:
        return verdict("inconclusive", f"{'the baseline' if not before.n else 'this run'} has no measured value")
    if energy_mismatch and metric in ENERGY_METRICS:
        return verdict("inconclusive", f"not comparable: {energy_mismatch}")
    old, new = before.samples, now.samples
    log_old, log_new = [math.log(v) for v in old], [math.log(v) for v in new]
    # The change is the ratio of geometric means: the quantity the test on logs is about.
    change_pct = (math.exp(statistics.fmean(log_new) - statistics.fmean(log_old)) - 1) * 100
    if len(old) < 2 or len(new) < 2:
        return verdict("inconclusive", "fewer than 2 cycles on a side", change_pct)

    from scipy import stats  # at report time only

    with warnings.catch_warnings():  # near-identical cycles: scipy warns of precision loss; se == 0 is handled below
        warnings.simplefilter("ignore", RuntimeWarning)
        test = stats.ttest_ind(log_new, log_old, equal_var=False)
    p_value = float(test.pvalue) if math.isfinite(test.pvalue) else 1.0
    var_old, var_new = statistics.variance(log_old), statistics.variance(log_new)
    se = math.sqrt(var_old / len(old) + var_new / len(new))
    if se == 0:  # identical cycles on both sides: any difference at all is exact
        p_value = 0.0 if change_pct != 0 else 1.0
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
        outcome, reason = "inconclusive", f"beyond {threshold_pct:g}% but not significant at {alpha:g}"
    else:
        outcome, reason = "unchanged", f"within {threshold_pct:g}%"
    return verdict(outcome, reason, change_pct, p_value, mde)


def _welch_df(var_a: float, n_a: int, var_b: float, n_b: int) -> float:
    a, b = var_a / n_a, var_b / n_b
    denominator = (a * a) / (n_a - 1) + (b * b) / (n_b - 1)
    return (a + b) ** 2 / denominator if denominator > 0 else float(n_a + n_b - 2)
