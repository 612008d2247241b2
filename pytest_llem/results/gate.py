"""Verdicts: did a metric of one experiment get worse between a baseline run and this one, beyond noise?

Energy and throughput noise is multiplicative, so the cycles are compared on the log scale: the change is the ratio of
the two sides' geometric means, given with its confidence interval from Welch's t-test on the logs
(``scipy.stats.ttest_ind(equal_var=False)``). Before that, a cycle far off its side's median (a busy machine made it
run 2-4x longer) is set aside by a stated rule, ``outliers``: such a cycle would otherwise drag the mean and inflate the
variance until a +40% change reads as noise. Clean cycles are never set aside, so on them this is Welch's test with its
full power.

The verdicts read where the (1 - 2 alpha) interval of the change lies against the threshold T:
- **regressed** / **improved**: the whole interval lies beyond +T (or -T) in that direction: significantly beyond the
  threshold (a one-sided test at ``alpha``);
- **unchanged**: the whole interval lies within +-T (an equivalence test, two one-sided tests at ``alpha``);
- **inconclusive**: the interval straddles the threshold; it says how many cycles per side would likely decide it at the
  noise seen.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from .shift import MAX_CYCLES_SAID, OUTLIER_FACTOR, cycles_to_decide, log_shift, outliers, pct_change
from .stats import display_digits

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
    # phases: true
    "prefill_energy_j": 1,
    "decode_energy_j": 1,
    "prefill_energy_per_input_token_j": 1,
    "decode_energy_per_output_token_j": 1,
    "prefill_duration_s": 1,
    "decode_duration_s": 1,
    # scenario: serving
    "steady_energy_per_output_token_j": 1,
    "steady_energy_j": 1,
    "energy_per_request_j": 1,
    "goodput_rps": -1,
    "slo_attainment": -1,
    "request_throughput_rps": -1,
    "ttft_s.p90": 1,
    "ttft_s.p99": 1,
    "tpot_s.mean": 1,
    "tpot_s.p50": 1,
    "tpot_s.p90": 1,
    "itl_s.p90": 1,
    "e2el_s.p90": 1,
}
DEFAULT_ALPHA = 0.05
DEFAULT_METRIC = "energy_per_output_token_j"
SERVING_METRIC = "steady_energy_per_output_token_j"  # serving items: the steady state, not the ramp up and down
# Sums over the measured devices: comparable only when both sides measured the same ones.
ENERGY_METRICS = frozenset(
    {
        "energy_j",
        "energy_per_output_token_j",
        "mean_power_w",
        "energy_adjusted_j",
        "prefill_energy_j",
        "decode_energy_j",
        "prefill_energy_per_input_token_j",
        "decode_energy_per_output_token_j",
        "steady_energy_j",
        "steady_energy_per_output_token_j",
        "energy_per_request_j",
    }
)
FALLBACK_METRIC = "tokens_per_s"  # when neither side measured energy
OUTCOMES = ("regressed", "inconclusive", "improved", "unchanged", "not measured")  # worst first
DECIDED = frozenset({"regressed", "improved", "unchanged"})
UNITS = {"energy_per_output_token_j": "J/tok", "energy_j": "J", "mean_power_w": "W",
         "tokens_per_s": "tok/s", "peak_memory_mb": "MB", "prefill_energy_j": "J", "decode_energy_j": "J",
         "prefill_energy_per_input_token_j": "J/in-tok", "decode_energy_per_output_token_j": "J/tok",
         "steady_energy_per_output_token_j": "J/tok", "steady_energy_j": "J", "energy_per_request_j": "J/req",
         "goodput_rps": "req/s", "request_throughput_rps": "req/s"}  # fmt: skip


class ThresholdError(ValueError):
    """A --llem-fail / llem_fail value that cannot be read."""


def parse_alpha(text: str | float) -> float:
    """A significance level: a number strictly between 0 and 0.5 (the interval is 1 - 2 alpha)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 0.5:
        raise ThresholdError(f"the significance level must be between 0 and 0.5 (e.g. 0.05), not {text!r}")
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
    outcome: str  # regressed | improved | unchanged | inconclusive | not measured
    reason: str
    threshold_pct: float = 0.0
    baseline_center: float | None = None  # geometric mean of the side's cycles (outliers set aside)
    current_center: float | None = None
    baseline_n: int = 0
    current_n: int = 0
    change_pct: float | None = None  # (current center / baseline center - 1) * 100
    ci_low_pct: float | None = None  # the interval of the change, at ``confidence``
    ci_high_pct: float | None = None
    confidence: float | None = None  # 1 - 2 alpha (of this look, under adaptive cycles)
    p_value: float | None = None  # two-sided, Welch's test on the logs: is there any change at all
    set_aside: tuple[int, int] = (0, 0)  # outlier cycles left out, (baseline, current)
    cycles_needed: int | None = None  # inconclusive by noise: cycles per side that would likely decide it
    look: str | None = None  # under adaptive cycles: "look 2 of 5" (which of the planned looks decided)

    @property
    def decided(self) -> bool:
        return self.outcome in DECIDED

    @property
    def more_cycles_may_decide(self) -> bool:
        """Inconclusive because of noise (not because a side lacks the metric or the devices differ)."""
        return self.outcome == "inconclusive" and self.cycles_needed is not None

    def interval_text(self) -> str:
        """``+24.0% [+8.0%, +43.0%]``: the change and its interval, or "-" when there is none."""
        if self.change_pct is None:
            return "-"
        if self.ci_low_pct is None or self.ci_high_pct is None:
            return f"{self.change_pct:+.1f}%"
        return f"{self.change_pct:+.1f}% [{self.ci_low_pct:+.1f}%, {self.ci_high_pct:+.1f}%]"

    def short_text(self) -> str:
        """``+24% ±18`` for a table cell: the change and the interval's half width (points of percent)."""
        if self.change_pct is None:
            return "-"
        if self.ci_low_pct is None or self.ci_high_pct is None:
            return f"{self.change_pct:+.1f}%"
        if math.isinf(self.ci_low_pct) or math.isinf(self.ci_high_pct):
            return f"{self.change_pct:+.1f}% ±inf"
        return f"{self.change_pct:+.1f}% ±{(self.ci_high_pct - self.ci_low_pct) / 2:.1f}"

    def more_cycles_text(self) -> str | None:
        if self.cycles_needed is None:
            return None
        if self.cycles_needed > MAX_CYCLES_SAID:
            return f"more than {MAX_CYCLES_SAID} cycles per side would be needed to decide it at this noise"
        return f"about {self.cycles_needed} cycles per side would likely decide it at this noise"

    def describe(self) -> str:
        """One line a person reads: the change with its interval, both sides' central values, the test, and (when
        inconclusive) how many cycles would decide it."""
        unit = UNITS.get(self.metric, "s" if self.metric.endswith("_s") or "_s." in self.metric else "")
        figures = []
        if self.change_pct is not None:
            interval = self.interval_text()
            if self.confidence is not None and self.ci_low_pct is not None:
                interval += f" ({self.confidence * 100:.3g}% interval)"
            figures.append(interval)
        if self.baseline_center is not None and self.current_center is not None:
            figures.append(
                f"baseline {_figure(self.baseline_center)} {unit} (n={self.baseline_n}) -> "
                f"now {_figure(self.current_center)} {unit} (n={self.current_n})"
            )
        if self.p_value is not None:
            figures.append(f"p = {self.p_value:.3g}")
        if any(self.set_aside):
            sides = zip(("baseline", "current"), self.set_aside, strict=True)
            listed = " and ".join(f"{n} {side} cycle{'s' * (n > 1)}" for side, n in sides if n)
            figures.append(f"{listed} set aside (over {OUTLIER_FACTOR:g}x off the median)")
        if self.look is not None:
            figures.append(self.look)
        more = self.more_cycles_text()
        if more is not None:
            figures.append(more)
        return f"{self.metric}: {self.outcome} ({self.reason})" + (": " + "; ".join(figures) if figures else "")

    def as_dict(self) -> dict[str, object]:
        return {
            "metric": self.metric,
            "outcome": self.outcome,
            "reason": self.reason,
            "threshold_pct": self.threshold_pct,
            "change_pct": self.change_pct,
            "ci_low_pct": _finite_or_none(self.ci_low_pct),
            "ci_high_pct": _finite_or_none(self.ci_high_pct),
            "confidence": self.confidence,
            "p_value": self.p_value,
            "cycles_needed": self.cycles_needed,
            "look": self.look,
            "baseline": {"center": self.baseline_center, "n": self.baseline_n, "set_aside": self.set_aside[0]},
            "current": {"center": self.current_center, "n": self.current_n, "set_aside": self.set_aside[1]},
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Verdict:
        base, now = data["baseline"], data["current"]
        assert isinstance(base, dict) and isinstance(now, dict)
        return cls(
            metric=str(data["metric"]),
            outcome=str(data["outcome"]),
            reason=str(data["reason"]),
            threshold_pct=float(data["threshold_pct"]),  # type: ignore[arg-type]
            baseline_center=base["center"],
            current_center=now["center"],
            baseline_n=int(base["n"]),
            current_n=int(now["n"]),
            change_pct=data["change_pct"],  # type: ignore[arg-type]
            ci_low_pct=data["ci_low_pct"],  # type: ignore[arg-type]
            ci_high_pct=data["ci_high_pct"],  # type: ignore[arg-type]
            confidence=data["confidence"],  # type: ignore[arg-type]
            p_value=data["p_value"],  # type: ignore[arg-type]
            cycles_needed=data["cycles_needed"],  # type: ignore[arg-type]
            look=data["look"],  # type: ignore[arg-type]
            set_aside=(int(base["set_aside"]), int(now["set_aside"])),
        )


def _finite_or_none(value: float | None) -> float | None:
    """JSON has no infinity: an unbounded end of an interval is null."""
    return value if value is not None and math.isfinite(value) else None


def _figure(value: float) -> str:
    return f"{value:.{display_digits(value)}f}"


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
    The default metric is the steady-state energy per output token for serving items, energy per output token when
    either side measured it (a side that lost its meter is then
    inconclusive, not silently judged on speed); energy when there are no token counts (an ``llem_energy`` window
    without ``output_tokens``); otherwise tokens/s."""
    return [
        compare(metric, baseline(metric), current(metric), threshold.pct, alpha, energy_mismatch)
        for metric, threshold in ((gated_metric(threshold, baseline, current), threshold) for threshold in thresholds)
    ]


def gated_metric(
    threshold: Threshold, baseline: Callable[[str], list[float]], current: Callable[[str], list[float]]
) -> str:
    if threshold.metric is not None:
        return threshold.metric
    defaults = (SERVING_METRIC, DEFAULT_METRIC, "energy_j")
    return next((m for m in defaults if baseline(m) or current(m)), FALLBACK_METRIC)


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
    """The verdict for one metric of one experiment, from the cycles of the baseline and of this run, at one look.
    ``energy_mismatch`` says why the two sides' energies cover different devices (then energy is not comparable)."""
    if metric not in DIRECTION:
        raise ValueError(f"no known direction for {metric!r}; known: {', '.join(sorted(DIRECTION))}")
    direction = DIRECTION[metric]
    before, now = _positive(baseline), _positive(current)
    base = Verdict(metric, "inconclusive", "", threshold_pct, baseline_n=len(before), current_n=len(now))
    if not before and not now:
        return replace(base, outcome="not measured", reason="neither run measured it")
    if not before or not now:
        return replace(base, reason=f"{'the baseline' if not before else 'this run'} has no measured value")
    if energy_mismatch and metric in ENERGY_METRICS:
        return replace(base, reason=f"not comparable: {energy_mismatch}")
    far_before, far_now = outliers(before), outliers(now)
    before = [v for v, far in zip(before, far_before, strict=True) if not far]
    now = [v for v, far in zip(now, far_now, strict=True) if not far]
    base = replace(
        base,
        baseline_center=statistics.geometric_mean(before),
        current_center=statistics.geometric_mean(now),
        set_aside=(sum(far_before), sum(far_now)),
    )
    if len(before) < 2 or len(now) < 2:
        change = (statistics.geometric_mean(now) / statistics.geometric_mean(before) - 1) * 100
        return replace(base, reason="fewer than 2 cycles on a side", change_pct=change)
    confidence = 1 - 2 * alpha
    shift = log_shift(before, now, confidence)
    change, low, high = pct_change(shift.estimate), pct_change(shift.low), pct_change(shift.high)
    judged = replace(
        base, change_pct=change, ci_low_pct=low, ci_high_pct=high, confidence=confidence, p_value=shift.p_value
    )
    worse, better = direction * change > threshold_pct, -direction * change > threshold_pct
    above, below = low > threshold_pct, high < -threshold_pct  # the whole interval beyond the threshold
    if above or below:
        outcome = "regressed" if (above if direction > 0 else below) else "improved"
        beyond = f"{'+' if above else '-'}{threshold_pct:g}%"
        return replace(judged, outcome=outcome, reason=f"the interval lies beyond {beyond}")
    if -threshold_pct < low and high < threshold_pct:
        return replace(judged, outcome="unchanged", reason=f"the interval lies within ±{threshold_pct:g}%")
    if worse or better:
        reason = f"beyond {threshold_pct:g}% but the interval reaches back within it"
    else:
        reason = f"within {threshold_pct:g}% but the interval reaches beyond it"
    needed = cycles_to_decide(shift, len(before), len(now), threshold_pct)
    return replace(judged, reason=reason, cycles_needed=needed)
