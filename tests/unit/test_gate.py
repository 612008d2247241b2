"""Verdicts from two samples of cycles (the statistics of the regression gate)."""

from __future__ import annotations

import math
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_llem.results.gate import Threshold, Verdict, compare
from pytest_llem.results.shift import outliers

NOISY_BASE = [1.00, 1.02, 0.98, 1.01, 0.99]


def scaled(values: list[float], factor: float) -> list[float]:
    return [v * factor for v in values]


def test_a_clear_rise_is_a_regression_with_its_interval() -> None:
    verdict = compare("energy_per_output_token_j", NOISY_BASE, scaled(NOISY_BASE, 1.10), threshold_pct=5)
    assert verdict.outcome == "regressed"
    assert verdict.change_pct == pytest.approx(10.0)
    assert verdict.ci_low_pct is not None and verdict.ci_high_pct is not None
    assert 5 < verdict.ci_low_pct < 10 < verdict.ci_high_pct < 15
    assert verdict.confidence == pytest.approx(0.90)  # two one-sided tests at alpha 0.05
    assert verdict.baseline_center == pytest.approx(1.0, rel=1e-3)
    assert "+10.0% [+" in verdict.describe() and "(90% interval)" in verdict.describe()


def test_direction_is_known_per_metric() -> None:
    assert compare("tokens_per_s", NOISY_BASE, scaled(NOISY_BASE, 0.9), 5).outcome == "regressed"
    assert compare("tokens_per_s", NOISY_BASE, scaled(NOISY_BASE, 1.1), 5).outcome == "improved"
    assert compare("energy_j", NOISY_BASE, scaled(NOISY_BASE, 0.9), 5).outcome == "improved"
    with pytest.raises(ValueError, match="no known direction for 'colour'"):
        compare("colour", NOISY_BASE, NOISY_BASE, 5)


@pytest.mark.parametrize(
    "metric", ["prefill_energy_per_input_token_j", "decode_energy_per_output_token_j", "decode_duration_s"]
)
def test_the_phase_metrics_can_be_gated(metric: str) -> None:
    assert Threshold.parse(f"{metric}:5%").metric == metric
    assert compare(metric, NOISY_BASE, scaled(NOISY_BASE, 1.10), 5).outcome == "regressed"


def test_unchanged_needs_the_whole_interval_within_the_threshold() -> None:
    unchanged = compare("energy_j", NOISY_BASE, scaled(NOISY_BASE, 1.02), 5)
    assert unchanged.outcome == "unchanged" and unchanged.ci_high_pct is not None and unchanged.ci_high_pct < 5
    wild = [0.7, 1.4, 0.9, 1.5, 1.0]
    verdict = compare("energy_j", NOISY_BASE, wild, 5)
    assert verdict.outcome == "inconclusive" and verdict.cycles_needed is not None and verdict.cycles_needed > 5
    assert "cycles per side would" in verdict.describe()


def test_a_point_estimate_inside_the_threshold_with_a_wide_interval_is_not_unchanged() -> None:
    """The issue's report: +2.6% with a detectable change of 158% was called unchanged."""
    noisy = [1.0, 1.3, 0.8, 1.2, 0.9]
    verdict = compare("energy_j", noisy, scaled(noisy, 1.02)[::-1], 5)
    assert abs(verdict.change_pct or 0) < 5
    assert verdict.outcome == "inconclusive" and "interval reaches beyond" in verdict.reason


def test_one_cycle_four_times_off_neither_hides_a_40_percent_rise_nor_flips_a_verdict() -> None:
    baseline = [100.0, 101.0, 99.0, 100.5, 400.0]  # one cycle ran 4x longer on a busy machine
    verdict = compare("energy_per_output_token_j", baseline, [140.0, 141.0, 139.0, 140.5, 139.8], 5)
    assert verdict.outcome == "regressed" and verdict.change_pct == pytest.approx(40, abs=1)
    assert verdict.set_aside == (1, 0) and "1 baseline cycle set aside" in verdict.describe()
    same = compare("energy_j", NOISY_BASE, [1.0, 0.99, 1.01, 3.0, 1.0], 5)
    assert same.outcome == "unchanged" and same.set_aside == (0, 1)


def test_too_few_cycles_or_no_values_cannot_be_judged() -> None:
    single = compare("energy_j", [1.0], [1.5], 5)
    assert single.outcome == "inconclusive" and single.reason == "fewer than 2 cycles on a side"
    assert single.cycles_needed is None  # not a matter of noise: nothing says how many
    assert compare("energy_j", [], [1.0, 1.1], 5).outcome == "inconclusive"
    assert compare("energy_j", [], [], 5).outcome == "not measured"
    assert compare("energy_j", [1.0, 1.0], [1.0, 1.0], 5).outcome == "unchanged"


def test_a_verdict_survives_its_json_round_trip_with_unbounded_ends_as_null() -> None:
    verdict = compare("energy_j", NOISY_BASE, [0.7, 1.4, 0.9, 1.5, 1.0], 5)
    assert Verdict.from_dict(verdict.as_dict()) == verdict
    unbounded = Verdict("energy_j", "inconclusive", "r", ci_low_pct=-math.inf, ci_high_pct=math.inf, change_pct=1.0)
    assert unbounded.as_dict()["ci_low_pct"] is None and unbounded.short_text() == "+1.0% ±inf"


@given(st.lists(st.floats(0.5, 2.0), min_size=3, max_size=20))
def test_the_outlier_rule_never_sets_aside_the_majority_or_a_cycle_within_1_5x(values: list[float]) -> None:
    far = outliers(values)
    assert sum(far) <= (len(values) - 1) // 2
    median = math.exp(statistics.median(math.log(v) for v in values))
    for value, flagged in zip(values, far, strict=True):
        if flagged:
            assert max(value / median, median / value) > 1.5


@given(
    base=st.lists(st.floats(0.5, 2.0), min_size=2, max_size=8),
    factor=st.floats(0.5, 2.0),
    jitter=st.lists(st.floats(0.9, 1.1), min_size=2, max_size=8),
)
def test_swapping_the_runs_mirrors_the_verdict(base: list[float], factor: float, jitter: list[float]) -> None:
    current = [b * factor * j for b, j in zip(base, jitter, strict=False)]
    forward, backward = compare("energy_j", base, current, 5), compare("energy_j", current, base, 5)
    assert forward.p_value == pytest.approx(backward.p_value, abs=1e-9)  # the test does not care which run is first
    assert forward.change_pct is not None and backward.change_pct is not None
    assert (1 + forward.change_pct / 100) * (1 + backward.change_pct / 100) == pytest.approx(1.0)
    # The interval mirrors too; the outcome mirrors where the interval clears the threshold seen from both sides
    # (+5% one way is -4.76% the other).
    assert forward.ci_low_pct is not None and backward.ci_high_pct is not None
    assert (1 + forward.ci_low_pct / 100) * (1 + backward.ci_high_pct / 100) == pytest.approx(1.0)
    if forward.ci_low_pct > (1 / 0.95 - 1) * 100:
        assert forward.outcome == "regressed" and backward.outcome == "improved"


@given(
    base=st.lists(st.floats(0.5, 2.0), min_size=2, max_size=10),
    current=st.lists(st.floats(0.5, 2.0), min_size=2, max_size=10),
)
def test_verdicts_agree_with_where_the_interval_lies(base: list[float], current: list[float]) -> None:
    verdict = compare("energy_j", base, current, 5)
    low, high = verdict.ci_low_pct, verdict.ci_high_pct
    assert low is not None and high is not None and low <= (verdict.change_pct or 0) + 1e-9 <= high + 2e-9
    expected = "regressed" if low > 5 else "improved" if high < -5 else "unchanged" if low > -5 and high < 5 else None
    assert verdict.outcome == (expected or "inconclusive")
    assert (verdict.cycles_needed is not None) == (expected is None)
