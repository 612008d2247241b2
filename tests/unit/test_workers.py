"""Dealing GPUs out to xdist workers."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pytest_llem.energy.meter import GpuDevice
from pytest_llem.workers import gpu_sets


def gpus(physical: list[int]) -> list[GpuDevice]:
    return [GpuDevice(i, p, "GPU", None) for i, p in enumerate(physical)]


def test_sets_follow_the_drivers_order_and_a_short_remainder_stays_idle() -> None:
    assert gpu_sets(gpus([0, 1, 2, 3]), 1) == [[0], [1], [2], [3]]
    assert gpu_sets(gpus([4, 5, 6, 7, 2]), 2) == [[4, 5], [6, 7]]
    assert gpu_sets(gpus([0]), 2) == []


@given(st.lists(st.integers(0, 63), unique=True, max_size=16), st.integers(1, 8))
def test_sets_are_disjoint_full_and_as_many_as_fit(physical: list[int], per_worker: int) -> None:
    sets = gpu_sets(gpus(physical), per_worker)
    assert len(sets) == len(physical) // per_worker
    assert all(len(s) == per_worker for s in sets)
    flat = [i for s in sets for i in s]
    assert flat == physical[: len(flat)]
