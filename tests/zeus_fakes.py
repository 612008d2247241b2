"""Fake devices at Zeus's device layer, so the real ZeusMonitor code path runs on machines without GPUs or RAPL.

A fake device integrates a settable power over a clock and reports it as Zeus's hardware counters do (mJ since "driver
load"). The clock is the real monotonic one unless a test hands the fakes a ``FakeClock``: a clock that moves only when
the test says, so that energy, window length and every warning that depends on them are exact on any machine.
``FakeGPUs`` honours ``CUDA_VISIBLE_DEVICES`` the way Zeus's NVIDIAGPUs does: it instantiates only the visible GPUs, in
that order, each keeping its physical index.

The GPUs' settings (power limit, locked clocks) live in a ``FakeDriver``: in memory, or in a JSON file when processes
share it (the pytest process sets a limit, the item's child draws under it), as they share a real driver. A GPU draws
min(its load power, its power limit), so energy follows the limit; every set and reset is recorded in ``calls``;
without ``root`` a setter raises Zeus's no-permission error, as NVML does for a user; ``fail`` makes one call raise
what a real device layer may (a feature the GPU lacks, a zeusd that is down, Ctrl-C in the middle).

This file is also copied into pytester projects (their conftest installs the fakes), so it imports nothing from tests.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import zeus.device.cpu
import zeus.device.gpu
from zeus.device.cpu.common import CPU, CpuDramMeasurement, CPUs
from zeus.device.gpu.common import GPU, GPUs, ZeusGPUInvalidArgError, ZeusGPUNoPermissionError

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


MIN_LIMIT_W = 100.0
GRAPHICS_CLOCKS_MHZ = list(range(1980, 209, -15))  # what NVML lists: highest first


class FakeDriver:
    """The settings of every fake GPU, by physical index: ``limit_w``, ``clocks`` ([min, max] or None), ``calls`` (every
    set and reset, in order) and ``root`` (whether setters are allowed). Kept in ``path`` (JSON, locked while changed)
    when given, so that processes share them; else in memory."""

    def __init__(self, path: Path | str | None = None, *, root: bool = True) -> None:
        self.path = Path(path) if path is not None else None
        self._memory: dict[str, Any] = {"root": root, "gpus": {}, "calls": []}
        self._failing: dict[tuple[str, int], BaseException] = {}  # this process's only
        if self.path is not None and not self.path.exists():
            self.path.write_text(json.dumps(self._memory))

    def read(self) -> dict[str, Any]:
        if self.path is None:
            return self._memory
        return dict(json.loads(self.path.read_text()))

    @contextlib.contextmanager
    def changing(self) -> Iterator[dict[str, Any]]:
        if self.path is None:
            yield self._memory
            return
        with open(self.path, "r+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            state = json.loads(handle.read())
            yield state
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps(state))

    def gpu(self, index: int, default_limit_w: float) -> dict[str, Any]:
        found = self.read()["gpus"].get(str(index))
        return found if found is not None else {"limit_w": default_limit_w, "clocks": None}

    @property
    def calls(self) -> list[list[Any]]:
        return list(self.read()["calls"])

    def set_root(self, root: bool) -> None:
        with self.changing() as state:
            state["root"] = root

    def fail(self, call: str, index: int, error: BaseException) -> None:
        """From now on, ``call`` ("set_power_limit", "get_power_limit", "power_limit_constraints",
        "set_gpu_locked_clocks") on GPU ``index`` raises ``error``, in this process."""
        self._failing[(call, index)] = error

    def check(self, call: str, index: int) -> None:
        error = self._failing.get((call, index))
        if error is not None:
            raise error

    def change(self, index: int, default_limit_w: float, call: list[Any], **settings: Any) -> None:
        with self.changing() as state:
            if not state["root"]:
                raise ZeusGPUNoPermissionError("Insufficient Permissions")
            gpu = state["gpus"].setdefault(str(index), {"limit_w": default_limit_w, "clocks": None})
            gpu.update(settings)
            state["calls"].append(call)


class FakeGPU(GPU):
    def __init__(
        self,
        gpu_index: int,
        watts: float,
        name: str = "Fake GPU",
        limit_w: float = 700.0,
        clock: Clock = time.monotonic,
        driver: FakeDriver | None = None,
    ) -> None:
        super().__init__(gpu_index)
        self.load_w = watts  # what the work would draw without a limit
        self.default_limit_w = limit_w  # the driver's default, also the highest limit allowed
        self.driver = driver or FakeDriver()
        self.trace = PowerTrace(watts, clock)
        self.name = name
        self.frozen_mj: int | None = None  # a counter stuck at one value reads 0 J
        self._limit_followed: float | None = None
        self._follow_limit()

    @property
    def limit_w(self) -> float:
        return float(self.driver.gpu(self.gpu_index, self.default_limit_w)["limit_w"])

    def draw(self, load_w: float) -> None:
        """The work now asks for ``load_w``; the GPU draws min(load_w, its power limit)."""
        self.load_w = load_w
        self._limit_followed = None
        self.trace.watts = load_w
        self._follow_limit()

    def _follow_limit(self) -> None:
        """Once a limit was set through the driver (here or in another process), draw min(load, limit). Until then the
        trace is the test's to set (a GPU drawing above its limit is how the validity check is tested)."""
        state = self.driver.read()["gpus"].get(str(self.gpu_index))
        if state is None or state["limit_w"] == self._limit_followed:
            return
        self._limit_followed = state["limit_w"]
        self.trace.watts = min(self.load_w, state["limit_w"])

    @property
    def supports_nonblocking_setters(self) -> bool:
        return False

    def get_name(self) -> str:
        return self.name

    def get_power_management_limit_constraints(self) -> tuple[int, int]:
        self.driver.check("power_limit_constraints", self.gpu_index)
        return (int(MIN_LIMIT_W * 1000), int(self.default_limit_w * 1000))

    def get_power_management_limit(self) -> int:
        self.driver.check("get_power_limit", self.gpu_index)
        return int(self.limit_w * 1000)

    def set_power_management_limit(self, power_limit_mw: int, block: bool = True) -> None:
        if power_limit_mw == int(self.limit_w * 1000):
            return  # as Zeus's NVIDIAGPU does: no driver call, so no right needed (and nothing to fail)
        self.driver.check("set_power_limit", self.gpu_index)
        low, high = (int(MIN_LIMIT_W * 1000), int(self.default_limit_w * 1000))
        if not low <= power_limit_mw <= high:
            raise ZeusGPUInvalidArgError("Invalid Argument")
        call = ["set_power_limit", self.gpu_index, power_limit_mw]
        self.driver.change(self.gpu_index, self.default_limit_w, call, limit_w=power_limit_mw / 1000)
        self._follow_limit()

    def reset_power_management_limit(self, block: bool = True) -> None:
        call = ["reset_power_limit", self.gpu_index]
        self.driver.change(self.gpu_index, self.default_limit_w, call, limit_w=self.default_limit_w)
        self._follow_limit()

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
        return list(GRAPHICS_CLOCKS_MHZ)

    @property
    def locked_clocks_mhz(self) -> list[int] | None:
        clocks = self.driver.gpu(self.gpu_index, self.default_limit_w)["clocks"]
        return list(clocks) if clocks is not None else None

    def set_gpu_locked_clocks(self, min_clock_mhz: int, max_clock_mhz: int, block: bool = True) -> None:
        self.driver.check("set_gpu_locked_clocks", self.gpu_index)
        call = ["set_gpu_locked_clocks", self.gpu_index, min_clock_mhz, max_clock_mhz]
        self.driver.change(self.gpu_index, self.default_limit_w, call, clocks=[min_clock_mhz, max_clock_mhz])

    def reset_gpu_locked_clocks(self, block: bool = True) -> None:
        self.driver.change(
            self.gpu_index, self.default_limit_w, ["reset_gpu_locked_clocks", self.gpu_index], clocks=None
        )

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
        self._follow_limit()  # another process may have set the limit since the last read
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
        driver: FakeDriver | Path | str | None = None,
    ) -> None:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        indices = [int(i) for i in visible.split(",") if i.strip()] if visible is not None else range(len(watts))
        self.driver = driver if isinstance(driver, FakeDriver) else FakeDriver(driver)
        self.physical = {
            i: FakeGPU(i, watts[i], (names or [])[i] if names else "Fake GPU", limit_w, clock, self.driver)
            for i in indices
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
