"""Cycle layout: the order in which a study's experiments are repeated (sequential, interleaved, shuffled)."""

from __future__ import annotations

import random
from collections.abc import Sequence

from ..config.models import CycleOrder, ExperimentConfig


def apply_cycles(
    experiments: Sequence[ExperimentConfig],
    n_cycles: int,
    order: CycleOrder | str,
    study_design_hash: str,
    shuffle_seed: int | None = None,
) -> list[ExperimentConfig]:
    """The execution sequence: every experiment ``n_cycles`` times, laid out by ``order``."""
    order = CycleOrder(order)
    if n_cycles == 1:
        return list(experiments)
    if order is CycleOrder.SEQUENTIAL:
        return [e for e in experiments for _ in range(n_cycles)]
    if order is CycleOrder.INTERLEAVED:
        return list(experiments) * n_cycles
    seed = shuffle_seed if shuffle_seed is not None else int(study_design_hash, 16) & 0xFFFFFFFF
    rng = random.Random(seed)
    sequence: list[ExperimentConfig] = []
    for _ in range(n_cycles):
        cycle = list(experiments)
        rng.shuffle(cycle)
        sequence.extend(cycle)
    return sequence


def number_cycles(sequence: Sequence[ExperimentConfig]) -> list[tuple[ExperimentConfig, int]]:
    """Pair each entry of an ``apply_cycles`` sequence with its cycle number (1-based)."""
    seen: dict[int, int] = {}
    out = []
    for exp in sequence:
        seen[id(exp)] = seen.get(id(exp), 0) + 1
        out.append((exp, seen[id(exp)]))
    return out
