"""Fake devices at Zeus's device layer, so the real ZeusMonitor code path runs on machines without GPUs or RAPL.

A fake device integrates a settable power over a clock and reports it as Zeus's hardware counters do (mJ since "driver
load"). The clock is the real monotonic one unless a test hands the fakes a ``FakeClock``: a clock that moves only when
the test says, so that energy, window length and every warning that depends on them are exact on any machine.
``FakeGPUs`` honours ``CUDA_VISIBLE_DEVICES`` the way Zeus's NVIDIAGPUs does: it instantiates only the visible GPUs, in
that order, each keeping its physical index.

This file is also copied into pytester projects (their conftest installs the fakes), so it imports nothing from tests.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence

import zeus.device.cpu
import zeus.device.gpu
from zeus.device.cpu.common import CPU, CpuDramMeasurement, CPUs
from zeus.device.gpu.common import GPU, GPUs

Clock = Callable[[], float]


class FakeClock:
    """Seconds that pass only through ``sleep``. A test makes it the process's ``time.perf_counter`` and
    ``time.monotonic`` (the clocks windows are timed with) and gives it to the fake devices, whose counters then read
    exactly watts x the seconds slept."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start  # a float whose sums with binary fractions (0.25, 0.5, ...) stay exact

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def patch(self, monkeypatch: object) -> FakeClock:
        """Make this clock ``time.perf_counter`` and ``time.monotonic`` until ``monkeypatch`` (pytest's) undoes it."""
        for name in ("perf_counter", "monotonic"):
            monkeypatch.setattr(time, name, self)  # type: ignore[attr-defined]
        return self


class PowerTrace:
    """Energy (J) of a device drawing ``watts``, which may change at any time; ``offset_j`` jumps the counter."""

    def __init__(self, watts: float, clock: Clock = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._watts = watts
        self._since = clock()
        self._energy_j = 1000.0  # counters do not start at zero
        self.offset_j = 0.0

    @property
    def watts(self) -> float:
        return self._watts

    @watts.setter
    def watts(self, value: float) -> None:
        with self._lock:
            self._energy_j = self._read()
            self._since = self._clock()
            self._watts = value

    def _read(self) -> float:
        return self._energy_j + self._watts * (self._clock() - self._since)

    def energy_j(self) -> float:
        with self._lock:
            return self._read() + self.offset_j


class FakeGPU(GPU):
    def __init__(
        self,
        gpu_index: int,
        watts: float,
        name: str = "Fake GPU",
        limit_w: float = 700.0,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(gpu_index)
        self.trace = PowerTrace(watts, clock)
        self.name = name
        self.limit_w = limit_w
        self.frozen_mj: int | None = None  # a counter stuck at one value reads 0 J

    @property
    def supports_nonblocking_setters(self) -> bool:
        return False

    def get_name(self) -> str:
        return self.name

    def get_power_management_limit_constraints(self) -> tuple[int, int]:
        return (100_000, int(self.limit_w * 1000))

    def get_power_management_limit(self) -> int:
        return int(self.limit_w * 1000)

    def set_power_management_limit(self, power_limit_mw: int, block: bool = True) -> None:
        raise NotImplementedError

    def reset_power_management_limit(self, block: bool = True) -> None:
        raise NotImplementedError

    def set_persistence_mode(self, enabled: bool, block: bool = True) -> None:
        raise NotImplementedError

    def get_persistence_mode(self) -> bool:
        return True

    def get_supported_memory_clocks(self) -> list[int]:
        return [1000]

    def set_memory_locked_clocks(self, min_clock_mhz: int, max_clock_mhz: int, block: bool = True) -> None:
        raise NotImplementedError

    def reset_memory_locked_clocks(self, block: bool = True) -> None:
        raise NotImplementedError

    def get_supported_graphics_clocks(self, memory_clock_mhz: int | None = None) -> list[int]:
        return [1000]

    def set_gpu_locked_clocks(self, min_clock_mhz: int, max_clock_mhz: int, block: bool = True) -> None:
        raise NotImplementedError

    def reset_gpu_locked_clocks(self, block: bool = True) -> None:
        raise NotImplementedError

    def get_average_power_usage(self) -> int:
        return int(self.trace.watts * 1000)

    def get_instant_power_usage(self) -> int:
        return int(self.trace.watts * 1000)

    def get_average_memory_power_usage(self) -> int:
        return 0

    def supports_get_total_energy_consumption(self) -> bool:
        return True  # otherwise Zeus starts power-polling processes that cannot see a fake

    def get_total_energy_consumption(self) -> int:
        if self.frozen_mj is not None:
            return self.frozen_mj
        return int(self.trace.energy_j() * 1000)

    def get_gpu_temperature(self) -> int:
        return 40


class FakeGPUs(GPUs):
    """``watts[i]`` is physical GPU i's power; only the GPUs in CUDA_VISIBLE_DEVICES (if set) are visible."""

    def __init__(
        self,
        watts: Sequence[float],
        names: Sequence[str] | None = None,
        limit_w: float = 700.0,
        clock: Clock = time.monotonic,
    ) -> None:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        indices = [int(i) for i in visible.split(",") if i.strip()] if visible is not None else range(len(watts))
        self.physical = {
            i: FakeGPU(i, watts[i], (names or [])[i] if names else "Fake GPU", limit_w, clock) for i in indices
        }
        self._gpus = list(self.physical.values())

    @property
    def gpus(self) -> Sequence[GPU]:
        return self._gpus

    def __del__(self) -> None:
        pass


class FakeCPU(CPU):
    def __init__(self, cpu_index: int, watts: float, dram_watts: float | None, clock: Clock = time.monotonic) -> None:
        super().__init__(cpu_index)
        self.trace = PowerTrace(watts, clock)
        self.dram = PowerTrace(dram_watts, clock) if dram_watts is not None else None

    def get_total_energy_consumption(self) -> CpuDramMeasurement:
        dram = self.dram.energy_j() * 1000 if self.dram is not None else None
        return CpuDramMeasurement(cpu_mj=self.trace.energy_j() * 1000, dram_mj=dram)

    def supports_get_dram_energy_consumption(self) -> bool:
        return self.dram is not None


class FakeCPUs(CPUs):
    def __init__(self, watts: Sequence[float], dram_watts: float | None = None, clock: Clock = time.monotonic) -> None:
        self._cpus = [FakeCPU(i, w, dram_watts, clock) for i, w in enumerate(watts)]

    @property
    def cpus(self) -> Sequence[CPU]:
        return self._cpus

    def __del__(self) -> None:
        pass


def install(gpus: FakeGPUs | None, cpus: FakeCPUs | None) -> None:
    """Make Zeus's device singletons these fakes (None: no such devices, as Zeus's Empty* stand-ins say)."""
    from zeus.device.cpu.common import EmptyCPUs
    from zeus.device.gpu.common import EmptyGPUs

    zeus.device.gpu._gpus = gpus if gpus is not None else EmptyGPUs()
    zeus.device.cpu._cpus = cpus if cpus is not None else EmptyCPUs()


def uninstall() -> None:
    zeus.device.gpu._gpus = None
    zeus.device.cpu._cpus = None
