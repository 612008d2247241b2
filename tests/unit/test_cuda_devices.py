"""Sync, peak-memory reset and peak-memory read act on every GPU the item's process uses, not only the current one.

torch is faked at its CUDA API (the boundary), as a process with contexts on GPUs 0 and 2 of 4 would see it."""

from __future__ import annotations

import sys
import types

import pytest

from pytest_llem.backends.memory import PeakTracker
from pytest_llem.energy import cuda


class FakeCuda:
    def __init__(self, contexts: set[int], peaks_mb: dict[int, float], initialised: bool = True) -> None:
        self.contexts, self.peaks_mb, self.initialised = contexts, peaks_mb, initialised
        self.calls: list[tuple[str, int]] = []

    def is_initialized(self) -> bool:
        return self.initialised

    def device_count(self) -> int:
        return 4

    def synchronize(self, index: int) -> None:
        self.calls.append(("synchronize", index))

    def reset_peak_memory_stats(self, index: int) -> None:
        self.calls.append(("reset", index))
        self.peaks_mb[index] = 0.0

    def max_memory_allocated(self, index: int) -> int:
        return int(self.peaks_mb[index] * 2**20)


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> FakeCuda:
    fake = FakeCuda({0, 2}, {0: 100.0, 1: 0.0, 2: 300.0, 3: 0.0})
    torch = types.SimpleNamespace(
        cuda=fake, _C=types.SimpleNamespace(_cuda_hasPrimaryContext=fake.contexts.__contains__)
    )
    monkeypatch.setitem(sys.modules, "torch", torch)
    return fake


def test_sync_waits_on_every_gpu_with_a_context_and_creates_none(fake_cuda: FakeCuda) -> None:
    cuda.synchronize()
    assert fake_cuda.calls == [("synchronize", 0), ("synchronize", 2)]


def test_peak_memory_is_kept_per_gpu_and_the_headline_is_their_sum(fake_cuda: FakeCuda) -> None:
    tracker = PeakTracker()
    tracker.reset(cuda=True)
    assert fake_cuda.calls == [("reset", 0), ("reset", 2)]
    fake_cuda.peaks_mb.update({0: 1024.0, 2: 2048.0, 1: 999.0})  # GPU 1 is another process's: not ours
    memory = tracker.read(cuda=True)
    assert memory.per_device_mb == {0: 1024.0, 2: 2048.0}
    assert memory.mb == 3072.0
    assert "cuda:0, cuda:2" in memory.source


def test_nothing_is_asked_of_cuda_before_it_is_initialised(fake_cuda: FakeCuda) -> None:
    fake_cuda.initialised = False
    cuda.synchronize()
    assert cuda.peak_memory_mb() == {} and fake_cuda.calls == []
