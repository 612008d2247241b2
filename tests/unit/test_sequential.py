"""Adaptive cycles: the looks, alpha spent over them, and the walk that stops once a verdict is decided."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_llem.results.gate import compare
from pytest_llem.results.sequential import Plan, looks, spending, walk


@given(planned=st.integers(1, 30), extra=st.integers(0, 60), baseline_n=st.integers(1, 40))
def test_looks_rise_to_the_maximum_and_spend_exactly_alpha(planned: int, extra: int, baseline_n: int) -> None:
    counts = looks(planned, planned + extra)
    assert counts[0] == planned and counts[-1] == planned + extra
    assert all(b > a for a, b in itertools.pairwise(counts))
    shares = spending(0.05, baseline_n, counts)
    assert all(share > 0 for share in shares) and sum(shares) == pytest.approx(0.05, abs=1e-12)


def test_one_look_is_the_fixed_gate_at_the_full_alpha() -> None:
    assert looks(5, 5) == (5,) and spending(0.05, 5, (5,)) == (0.05,)
    assert Plan(5, 20).looks() == (5, 7, 10, 14, 20)


def sample(rng: np.random.Generator, n: int, change: float, cv: float = 0.03) -> list[float]:
    return list(rng.lognormal(np.log1p(change), cv, n))


def judge_first(baseline: list[float], current: list[float]):  # type: ignore[no-untyped-def]
    return lambda count, alpha: [compare("energy_j", baseline, current[:count], 5, alpha)]


def test_the_walk_stops_at_the_first_look_that_decides() -> None:
    rng = np.random.default_rng(3)
    baseline, current = sample(rng, 20, 0.0), sample(rng, 20, 0.30)
    counts = looks(5, 20)
    done = walk(judge_first(baseline, current), counts, spending(0.05, 20, counts), available=20)
    assert done.verdicts[0].outcome == "regressed" and done.cycles_judged == 5 and not done.wants_more
    assert done.verdicts[0].look == "look 1 of 5"


def test_an_undecided_walk_wants_the_next_cycle_until_its_last_look() -> None:
    rng = np.random.default_rng(4)
    baseline, current = sample(rng, 20, 0.0, cv=0.2), sample(rng, 20, 0.05, cv=0.2)  # at the threshold, noisy
    counts = looks(5, 20)
    shares = spending(0.05, 20, counts)
    early = walk(judge_first(baseline, current), counts, shares, available=9)
    assert early.cycles_judged == 7 and early.wants_more and early.verdicts[0].outcome == "inconclusive"
    final = walk(judge_first(baseline, current), counts, shares, available=20)
    assert final.cycles_judged == 20 and not final.wants_more and final.verdicts[0].look == "look 5 of 5"


def walk_two_metrics(seed: int, energy_change: float):  # type: ignore[no-untyped-def]
    """A steady energy metric with ``energy_change`` beside a tokens/s metric too noisy (CV 30%) to decide."""
    rng = np.random.default_rng(seed)
    baseline, current = sample(rng, 20, 0.0), sample(rng, 20, energy_change)
    noisy_base, noisy_now = sample(rng, 20, 0.0, cv=0.3), sample(rng, 20, 0.0, cv=0.3)

    def judge_at(count: int, alpha: float):  # type: ignore[no-untyped-def]
        return [compare("energy_j", baseline, current[:count], 5, alpha),
                compare("tokens_per_s", noisy_base, noisy_now[:count], 5, alpha)]  # fmt: skip

    counts = looks(5, 20)
    return walk(judge_at, counts, spending(0.05, 20, counts), available=20)


def test_a_decided_metric_keeps_its_verdict_while_another_needs_more_cycles() -> None:
    done = walk_two_metrics(5, 0.0)
    assert done.verdicts[0].outcome == "unchanged" and done.verdicts[0].look in ("look 1 of 5", "look 2 of 5")
    assert done.verdicts[1].look == "look 5 of 5"


def test_a_regression_ends_the_walk_even_when_another_metric_is_undecided() -> None:
    done = walk_two_metrics(6, 0.5)
    assert done.verdicts[0].outcome == "regressed" and not done.wants_more and done.cycles_judged == 5
    assert done.verdicts[1].outcome == "inconclusive"
