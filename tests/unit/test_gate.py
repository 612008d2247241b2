"""Verdicts from two samples of cycles (the statistics of the regression gate)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_llem.results.gate import compare

NOISY_BASE = [1.00, 1.02, 0.98, 1.01, 0.99]


def scaled(values: list[float], factor: float) -> list[float]:
    return [v * factor for v in values]


def test_a_clear_rise_in_energy_per_token_is_a_regression_with_its_figures() -> None:
    verdict = compare("energy_per_output_token_j", NOISY_BASE, scaled(NOISY_BASE, 1.10), threshold_pct=5)
    assert verdict.outcome == "regressed"
    assert verdict.change_pct == pytest.approx(10.0)
    assert verdict.p_value is not None and verdict.p_value < 0.001
    assert verdict.min_detectable_pct is not None and 0 < verdict.min_detectable_pct < 5
    assert verdict.baseline_mean == pytest.approx(1.0)


def test_direction_is_known_per_metric() -> None:
    assert compare("tokens_per_s", NOISY_BASE, scaled(NOISY_BASE, 0.9), 5).outcome == "regressed"
    assert compare("tokens_per_s", NOISY_BASE, scaled(NOISY_BASE, 1.1), 5).outcome == "improved"
    assert compare("energy_j", NOISY_BASE, scaled(NOISY_BASE, 0.9), 5).outcome == "improved"
    with pytest.raises(ValueError, match="no known direction for 'colour'"):
        compare("colour", NOISY_BASE, NOISY_BASE, 5)


def test_within_threshold_is_unchanged_and_noise_beyond_it_is_inconclusive() -> None:
    assert compare("energy_j", NOISY_BASE, scaled(NOISY_BASE, 1.02), 5).outcome == "unchanged"
    wild = [0.7, 1.4, 0.9, 1.5, 1.0]
    verdict = compare("energy_j", NOISY_BASE, wild, 5)
    assert verdict.outcome == "inconclusive" and "not significant" in verdict.reason
    assert verdict.min_detectable_pct is not None and verdict.min_detectable_pct > 20


def test_too_few_cycles_or_no_values_cannot_be_judged() -> None:
    single = compare("energy_j", [1.0], [1.5], 5)
    assert (
        single.outcome == "inconclusive" and single.p_value is None and single.reason == "fewer than 2 cycles on a side"
    )
    assert compare("energy_j", [], [1.0, 1.1], 5).outcome == "inconclusive"
    assert compare("energy_j", [1.0, 1.0], [1.0, 1.0], 5).outcome == "unchanged"


@given(
    base=st.lists(st.floats(0.5, 2.0), min_size=2, max_size=8),
    factor=st.floats(0.5, 2.0),
    jitter=st.lists(st.floats(0.9, 1.1), min_size=2, max_size=8),
)
def test_swapping_the_runs_swaps_regressed_and_improved(base: list[float], factor: float, jitter: list[float]) -> None:
    current = [b * factor * j for b, j in zip(base, jitter, strict=False)]
    forward, backward = compare("energy_j", base, current, 5), compare("energy_j", current, base, 5)
    assert forward.p_value == pytest.approx(backward.p_value, abs=1e-9)  # the test does not care which run is first
    assert backward.change_pct is not None and forward.change_pct is not None
    assert (forward.change_pct > 0) == (backward.change_pct < 0) or forward.change_pct == backward.change_pct == 0
    if abs(backward.change_pct) > 5 and abs(forward.change_pct) > 5:  # beyond the threshold from both sides
        swap = {"regressed": "improved", "improved": "regressed", "inconclusive": "inconclusive"}
        assert backward.outcome == swap[forward.outcome]
