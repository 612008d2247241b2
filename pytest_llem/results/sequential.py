"""Adaptive cycles: when an experiment's gate is inconclusive after its planned cycles, more cycles run and the gate
judges again (a *look*), until the verdict is decided or the maximum is reached.

Looking again and again inflates false claims, so each look gets its own share of alpha and the shares add up to
alpha (alpha spending). A share is proportional to the information the look adds, information being
1 / (1/baseline cycles + 1/cycles): the Lan-DeMets spending function alpha * t (t the fraction of the final
information reached), fixed before any data is seen. Each look's claims are two one-sided tests at its share, so by
the union bound the chance that *any* look claims a regression (or an improvement) that is not there, or calls a change
beyond the threshold unchanged, is at most alpha over the whole sequence: a bound that needs no assumption about how
the looks correlate, at the cost of some power against a spending boundary computed for correlated looks.

Looks come at the planned cycles, then about every 40% more cycles (5, 7, 10, 14, 20): fewer looks leave each a
larger share than a look after every cycle would.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from .gate import Verdict

LOOK_GROWTH = 1.4  # each look after the first comes at about 40% more cycles


@dataclass(frozen=True)
class Plan:
    """An experiment's adaptive cycles: ``planned`` cycles first, then up to ``max_cycles`` while undecided."""

    planned: int
    max_cycles: int

    def looks(self) -> tuple[int, ...]:
        return looks(self.planned, max(self.planned, self.max_cycles))


def looks(planned: int, max_cycles: int) -> tuple[int, ...]:
    """The cycle counts at which the gate judges: the planned count, then growing by ``LOOK_GROWTH`` up to the max."""
    counts = [planned]
    while counts[-1] < max_cycles:
        counts.append(min(max_cycles, max(counts[-1] + 1, math.ceil(counts[-1] * LOOK_GROWTH))))
    return tuple(counts)


def spending(alpha: float, baseline_n: int, counts: Sequence[int]) -> tuple[float, ...]:
    """Each look's share of ``alpha``: in proportion to the information it adds; the shares sum to ``alpha``."""
    if len(counts) == 1:
        return (alpha,)

    def information(n: int) -> float:
        return 1 / (1 / max(baseline_n, 1) + 1 / n)

    final = information(counts[-1])
    spent = [alpha * information(n) / final for n in counts]
    shares = [spent[0]] + [b - a for a, b in itertools.pairwise(spent)]
    shares[-1] = alpha - sum(shares[:-1])  # exactly alpha in all, whatever the rounding
    return tuple(shares)


@dataclass(frozen=True)
class Walk:
    """The verdicts after walking the looks that the available cycles allow."""

    verdicts: list[Verdict]
    cycles_judged: int  # the cycle count of the last look taken
    wants_more: bool  # undecided, and a later look may decide: the next cycle should run


def walk(
    judge_at: Callable[[int, float], list[Verdict]],
    counts: Sequence[int],
    shares: Sequence[float],
    available: int,
) -> Walk:
    """Judge at each look whose cycle count is available (``judge_at(cycles, alpha)`` judges the first ``cycles``
    cycles at that look's share), keeping each metric's first decided verdict; stop once nothing is left to decide or a
    regression already fails the gate. With one look this is the fixed-n gate."""
    final: dict[int, Verdict] = {}
    latest: list[Verdict] = []
    judged = 0
    for index, (count, share) in enumerate(zip(counts, shares, strict=True)):
        if count > available and index > 0:
            break
        judged = count
        label = f"look {index + 1} of {len(counts)}" if len(counts) > 1 else None
        latest = [replace(v, look=label) for v in judge_at(count, share)]
        for position, verdict in enumerate(latest):
            if position not in final and not verdict.more_cycles_may_decide:
                final[position] = verdict
        if len(final) == len(latest) or any(v.outcome == "regressed" for v in final.values()):
            verdicts = [final.get(i, v) for i, v in enumerate(latest)]
            return Walk(verdicts, judged, wants_more=False)
    verdicts = [final.get(i, v) for i, v in enumerate(latest)]
    return Walk(verdicts, judged, wants_more=judged < counts[-1])
