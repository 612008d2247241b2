"""The meter over Zeus: ``ZeusMonitor`` reads the GPUs' (NVML / AMD SMI) and CPUs' (RAPL) energy counters.

Zeus finds the devices; this module only says which it found, why others are missing, and checks each reading.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from zeus.device import cpu as zeus_cpu
from zeus.device import gpu as zeus_gpu
from zeus.device.cpu.common import ZeusCPUInitError, ZeusCPUNoPermissionError
from zeus.device.exception import ZeusBaseCPUError, ZeusBaseGPUError
from zeus.device.gpu.common import ZeusGPUInitError
from zeus.monitor import ZeusMonitor

from ..errors import EnergyUnavailableError
from . import cuda
from .meter import CPU_SHARED_ENV, EVERY_GPU, CounterSample, GpuDevice, GpuScope, Reading
from .rapl import start_counting, stop_counting
from .validity import check_window

# How Zeus reaches each kind of GPU, for the energy_source line.
GPU_INTERFACES = {"NVIDIAGPUs": "NVML", "AMDGPUs": "AMD SMI"}
WINDOW_PREFIX = "pytest-llem:"


@dataclass(frozen=True)
class _FoundGpus:
    gpus: Any | None  # Zeus's GPU manager
    problem: str | None = None  # why there is none
    unopened: bool = False  # there are GPUs, but Zeus could not open them: the GPU part of a reading is missing


def _find_gpus() -> _FoundGpus:
    """Zeus's GPU manager, or why there is none."""
    named = _named_by_id()
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip() == "-1"  # the user hid them: nothing is missing
    try:
        gpus = zeus_gpu.get_gpus()
    except ZeusGPUInitError as exc:
        if "NVML and AMDSMI unavailable" in str(exc):
            return _FoundGpus(None, "no NVIDIA/AMD GPU (neither NVML nor AMD SMI is available)")
        return _FoundGpus(None, named or f"no usable NVIDIA/AMD GPU ({exc})", unopened=not hidden)
    except (ZeusBaseGPUError, ValueError, ImportError) as exc:
        # e.g. a GPU-<uuid> in CUDA_VISIBLE_DEVICES, a driver/library mismatch, a foreign pynvml package
        problem = named or f"Zeus could not open the GPUs ({type(exc).__name__}: {exc})"
        return _FoundGpus(None, problem, unopened=not hidden)
    if len(gpus) == 0:
        return _FoundGpus(None, "no GPU visible to this process")
    return _FoundGpus(gpus)


def _named_by_id() -> str | None:
    """Why Zeus cannot read GPUs that CUDA_VISIBLE_DEVICES names by UUID or MIG id (it reads indices only)."""
    entries = [e.strip() for e in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")]
    if any(e.startswith("MIG-") for e in entries):
        return "CUDA_VISIBLE_DEVICES names MIG slices, whose energy NVML does not report; GPU energy is not measured"
    if any(e.startswith("GPU-") for e in entries):
        return (
            "CUDA_VISIBLE_DEVICES names GPUs by UUID, which Zeus cannot map to devices; name them by index "
            "(CUDA_VISIBLE_DEVICES=0,1) to measure their energy"
        )
    return None


@contextlib.contextmanager
def _without_gpus() -> Iterator[None]:
    """The monitor opens the GPUs again and would fail as ``_find_gpus`` did (a UUID, a MIG id, ``-1``), taking the
    CPUs with them; with CUDA_VISIBLE_DEVICES empty for that moment Zeus takes it as "no GPU" and the CPUs are still
    measured."""
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    try:
        yield
    finally:
        if before is None:
            del os.environ["CUDA_VISIBLE_DEVICES"]
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = before


def _find_cpus() -> tuple[Any | None, str | None]:
    """Zeus's RAPL manager, or None and why there is none."""
    sharing = int(os.environ.get(CPU_SHARED_ENV, "1") or 1)
    if sharing > 1:
        return None, (
            f"CPU package energy cannot be attributed to one of {sharing} pytest-xdist workers sharing these CPUs "
            "(run one worker to measure it)"
        )
    try:
        cpus = zeus_cpu.get_cpus()
    except ZeusCPUNoPermissionError:
        return None, "RAPL needs root or zeusd (set ZEUSD_SOCK_PATH to a running zeusd)"
    except ZeusCPUInitError:
        return None, "no readable RAPL (/sys/class/powercap/intel-rapl absent)"
    except (ZeusBaseCPUError, OSError, ValueError) as exc:
        return None, f"Zeus could not open RAPL ({type(exc).__name__}: {exc})"
    if len(cpus) == 0:
        return None, "no CPU package with RAPL counters"
    return cpus, None


def _power_limit_w(gpus: Any, index: int) -> float | None:
    try:
        return float(gpus.get_power_management_limit(index)) / 1000.0
    except Exception:  # not every GPU reports its limit (and the check is then skipped)
        return None


def _gpu_name(gpus: Any, index: int) -> str | None:
    try:
        return str(gpus.get_name(index))
    except Exception:
        return None


def _describe(gpus: Any) -> list[GpuDevice]:
    """Zeus's GPUs as GpuDevices: CUDA index, the driver's index, name, power limit."""
    return [
        GpuDevice(i, int(getattr(gpus.gpus[i], "gpu_index", i)), _gpu_name(gpus, i), _power_limit_w(gpus, i))
        for i in range(len(gpus))
    ]


def visible_gpus() -> tuple[list[GpuDevice], str | None]:
    """Every GPU this process sees (whatever a meter measures), for the environment fingerprint; or why none."""
    found = _find_gpus()
    return (_describe(found.gpus), None) if found.gpus is not None else ([], found.problem)


class ZeusMeter:
    """Windows over one ``ZeusMonitor``; per-GPU energies are keyed by the driver's (physical) GPU index."""

    def __init__(self, monitor: ZeusMonitor | None, gpus: Sequence[GpuDevice], source: str | None, reason: str | None):
        self._monitor = monitor
        self._gpus = tuple(gpus)
        self._physical = {gpu.index: gpu.physical_index for gpu in gpus}
        self._source = source
        self._reason = reason
        self._started: dict[str, float] = {}
        self.cpu_unavailable_reason: str | None = None  # why RAPL is not part of the readings
        self.gpu_unavailable_reason: str | None = None  # why GPUs this process has are not part of them
        self._counting_wraps = False  # whether this meter holds the RAPL wraparound counting (energy/rapl.py)

    @classmethod
    def open(cls, scope: GpuScope = EVERY_GPU) -> ZeusMeter:
        """Find the devices and measure the GPUs of ``scope`` (and the CPUs when RAPL is readable)."""
        found = _find_gpus()
        gpus, gpu_problem = found.gpus, found.problem
        cpus, cpu_problem = _find_cpus()
        visible = len(gpus) if gpus is not None else 0
        selected = list(range(visible)) if scope.indices is None else [i for i in scope.indices if i < visible]
        missing = sorted(set(scope.indices or ()) - set(selected))
        if missing and scope.chosen:
            asked = f"energy.gpu_indices asks for GPU {', '.join(map(str, missing))}"
            if visible:
                raise EnergyUnavailableError(
                    f"{asked}, but this process sees {visible} GPU(s); allowed: 0..{visible - 1}"
                )
            return cls(None, (), None, f"{asked}, but {gpu_problem}")
        visible_devices = _describe(gpus) if gpus is not None else []
        devices = [visible_devices[i] for i in selected]
        if not devices and cpus is None:
            reason = " and ".join(p for p in (gpu_problem or f"no GPU selected ({scope.why})", cpu_problem) if p)
            return cls(None, (), None, reason)
        parts = []
        if devices:
            interface = GPU_INTERFACES.get(type(gpus).__name__, type(gpus).__name__)
            named = ", ".join(f"GPU {d.physical_index} ({d.name or 'unnamed'})" for d in devices)
            others = visible - len(devices)
            left_out = f"; {others} other visible GPU{'s' if others > 1 else ''} not measured" if others else ""
            parts.append(f"{named} via {interface} ({scope.why}{left_out})")
        if cpus is not None:
            dram = any(cpus.supports_get_dram_energy_consumption(i) for i in range(len(cpus)))
            parts.append(f"CPU package{'s' if len(cpus) > 1 else ''}{' + DRAM' if dram else ''} via RAPL")
        # Before the monitor and outside every window: a wrap is counted from the first read Zeus makes.
        counting = cpus is not None and start_counting(cpus)
        try:
            with _without_gpus() if gpus is None else contextlib.nullcontext():
                monitor = ZeusMonitor(gpu_indices=selected, cpu_indices=None if cpus is not None else [])
        except (ZeusBaseGPUError, ZeusBaseCPUError, ValueError, ImportError, RuntimeError) as exc:
            if counting:
                stop_counting()
            return cls(None, (), None, f"Zeus could not start measuring ({type(exc).__name__}: {exc})")
        meter = cls(monitor, devices, "zeus: " + "; ".join(parts), None)
        meter.cpu_unavailable_reason = cpu_problem  # None when RAPL is measured
        meter.gpu_unavailable_reason = gpu_problem if found.unopened else None
        meter._counting_wraps = counting
        return meter

    def close(self) -> None:
        """Stop what the meter started in this process (the RAPL wraparound thread); its windows end with it."""
        if self._counting_wraps:
            self._counting_wraps = False
            stop_counting()

    @property
    def source(self) -> str | None:
        return self._source

    @property
    def unavailable_reason(self) -> str | None:
        return self._reason

    @property
    def gpus(self) -> Sequence[GpuDevice]:
        return self._gpus

    def _sync(self) -> None:
        """Wait for this process's queued GPU work on every GPU it has a CUDA context on (the ones the item uses),
        only where CUDA is already initialised (energy/cuda.py). Not Zeus's sync: it would create a context (and a
        higher power state) on every GPU."""
        cuda.synchronize()

    def _require_monitor(self) -> ZeusMonitor:
        if self._monitor is None:
            raise EnergyUnavailableError(f"nothing can be measured here: {self._reason}")
        return self._monitor

    def begin(self, name: str) -> None:
        monitor = self._require_monitor()
        self._sync()
        monitor.begin_window(WINDOW_PREFIX + name, sync_execution=False)
        self._started[name] = time.perf_counter()

    def end(self, name: str) -> Reading:
        monitor = self._require_monitor()
        self._sync()
        duration = time.perf_counter() - self._started.pop(name)  # the same clock as NullMeter's windows
        with warnings.catch_warnings():  # Zeus's "measured as zero" warning: our own check below records it per item
            warnings.simplefilter("ignore")
            measurement = monitor.end_window(WINDOW_PREFIX + name, sync_execution=False)
        gpu_energy = {self._physical[i]: float(j) for i, j in measurement.gpu_energy.items()}
        cpu_energy = float(sum(measurement.cpu_energy.values())) if measurement.cpu_energy else None
        dram_energy = float(sum(measurement.dram_energy.values())) if measurement.dram_energy else None
        verdict = check_window(duration, gpu_energy, cpu_energy, dram_energy, self._gpus)
        reason = None
        if verdict.broken:  # a negative figure is no measurement: drop it from the breakdown, keep it in the warning
            reason = f"{' and '.join(verdict.broken)}: energy counter went backwards; the window cannot be trusted"
            gpu_energy = {i: j for i, j in gpu_energy.items() if f"GPU {i}" not in verdict.broken}
            cpu_energy = None if "CPU packages" in verdict.broken else cpu_energy
            dram_energy = None if "DRAM" in verdict.broken else dram_energy
        return Reading(
            name=name,
            duration_s=duration,
            gpu_energy_j=gpu_energy,
            cpu_energy_j=cpu_energy,
            dram_energy_j=dram_energy,
            source=self._source,
            unavailable_reason=reason,
            warnings=verdict.warnings,
            unavailable=self._parts_unavailable(),
        )

    def _parts_unavailable(self) -> dict[str, str]:
        parts: dict[str, str] = {}
        if self.cpu_unavailable_reason:  # RAPL reads DRAM beside the packages: neither is measured when it is not read
            parts |= dict.fromkeys(("cpu_energy_j", "dram_energy_j"), self.cpu_unavailable_reason)
        if self.gpu_unavailable_reason:
            parts["gpu_energy_j"] = self.gpu_unavailable_reason
        return parts

    def sample(self) -> CounterSample | None:
        """The counters Zeus reads at a window's edges, read the same way (its device layer), at one instant. None
        when a measured GPU has no energy counter (Zeus polls the power of those instead)."""
        monitor = self._monitor
        if monitor is None:
            return None
        gpus, cpus = monitor.gpus, monitor.cpus
        if not all(gpus.supports_get_total_energy_consumption(i) for i in monitor.gpu_indices):
            return None
        before = time.perf_counter()
        gpu_j = {self._physical[i]: gpus.get_total_energy_consumption(i) / 1000.0 for i in monitor.gpu_indices}
        cpu_j = dram_j = None
        for index in monitor.cpu_indices:
            measured = cpus.get_total_energy_consumption(index)
            cpu_j = (cpu_j or 0.0) + measured.cpu_mj / 1000.0
            if measured.dram_mj is not None:
                dram_j = (dram_j or 0.0) + measured.dram_mj / 1000.0
        return CounterSample((before + time.perf_counter()) / 2, gpu_j, cpu_j, dram_j)

    def cancel(self, name: str) -> None:
        self._started.pop(name, None)
        if self._monitor is not None and WINDOW_PREFIX + name in self._monitor.measurement_states:
            self._monitor.end_window(WINDOW_PREFIX + name, sync_execution=False, cancel=True)
