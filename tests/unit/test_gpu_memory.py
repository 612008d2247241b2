"""After a killed item the next one waits, bounded, for the GPU memory the killed one held: NVML is faked at pynvml's
functions (the boundary), its used memory dropping after a delay on a clock the test controls."""

from __future__ import annotations

import types

import pynvml
import pytest

from pytest_llem.runner.gpu_memory import MemoryRelease, used_memory_mb
from tests.zeus_fakes import FakeClock


class FakeNvml:
    """Physical GPUs with used memory (MiB) that the test sets, or that drops to ``after_mb`` at ``release_at``."""

    def __init__(self, clock: FakeClock, used_mb: list[float]) -> None:
        self.clock, self.used_mb = clock, used_mb
        self.release_at: float | None = None
        self.after_mb: list[float] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name, function in {
            "nvmlInit": lambda: None,
            "nvmlShutdown": lambda: None,
            "nvmlDeviceGetCount": lambda: len(self.used_mb),
            "nvmlDeviceGetHandleByIndex": lambda index: index,
            "nvmlDeviceGetHandleByUUID": lambda uuid: int(uuid.rsplit("-", 1)[1]),
            "nvmlDeviceGetIndex": lambda handle: handle,
            "nvmlDeviceGetMemoryInfo": self.memory,
        }.items():
            monkeypatch.setattr(pynvml, name, function)

    def memory(self, handle: int) -> types.SimpleNamespace:
        if self.release_at is not None and self.clock() >= self.release_at:
            self.used_mb = self.after_mb
        return types.SimpleNamespace(used=int(self.used_mb[handle] * 2**20), total=80_000 * 2**20)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def nvml(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> FakeNvml:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    fake = FakeNvml(clock, [500.0, 700.0])
    fake.install(monkeypatch)
    return fake


def release(clock: FakeClock) -> MemoryRelease:
    return MemoryRelease(clock=clock, sleep=clock.sleep)


def test_the_item_after_a_killed_one_waits_until_its_memory_is_back(nvml: FakeNvml, clock: FakeClock) -> None:
    memory = release(clock)
    assert memory.before_item() is None  # the killed item's starting point: 500 and 700 MiB
    nvml.used_mb = [70_000.0, 700.0]  # it filled GPU 0, then was killed
    memory.after_item(killed=True)
    nvml.release_at, nvml.after_mb = clock() + 3.0, [600.0, 700.0]  # the driver frees it 3 s later
    story = memory.before_item()
    assert clock() - 1000.0 == pytest.approx(3.0, abs=0.25)  # waited for it, and no longer
    assert story == "waited 3.0 s for the GPU memory of the killed item before this one (GPU 0: 70000 → 600 MiB used)"


def test_the_wait_is_bounded_and_says_what_is_still_held(nvml: FakeNvml, clock: FakeClock) -> None:
    memory = release(clock)
    memory.before_item()
    nvml.used_mb = [70_000.0, 700.0]
    memory.after_item(killed=True)
    story = memory.before_item()  # never released
    assert clock() - 1000.0 == pytest.approx(60.0, abs=0.25)
    assert story == (
        "the GPU memory of the killed item before this one is not back after 60 s (GPU 0: 70000 MiB (before it: 500) "
        "used); starting anyway"
    )


def test_no_wait_after_an_item_that_ended_on_its_own_or_whose_memory_is_already_back(nvml, clock) -> None:
    memory = release(clock)
    memory.before_item()
    nvml.used_mb = [70_000.0, 700.0]  # another process's: this item ended cleanly
    memory.after_item(killed=False)
    assert memory.before_item() is None and clock() == 1000.0
    nvml.used_mb = [1000.0, 700.0]
    memory.after_item(killed=True)
    nvml.used_mb = [1200.0, 700.0]  # within the tolerance of where it was
    assert memory.before_item() is None and clock() == 1000.0


def test_only_the_gpus_this_process_may_use_by_index_or_uuid(nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch) -> None:
    nvml.used_mb = [1.0, 2.0, 3.0]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,GPU-abc-0,MIG-xyz")
    assert used_memory_mb() == {2: 3.0, 0: 1.0}

    def unknown(uuid: str) -> int:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByUUID", unknown)  # a shortened UUID CUDA takes, NVML does not
    assert used_memory_mb() == {2: 3.0}


def test_without_nvml_nothing_is_read_or_waited_for(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> None:
    def absent() -> None:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    monkeypatch.setattr(pynvml, "nvmlInit", absent)
    memory = release(clock)
    assert used_memory_mb() is None and memory.before_item() is None
    memory.after_item(killed=True)
    assert memory.before_item() is None and clock() == 1000.0
