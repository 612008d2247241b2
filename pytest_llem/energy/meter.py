"""The meter protocol: begin and end a named window, get a Reading. ``NullMeter`` times windows when nothing can be
measured.

Meters are opened in ``energy/opening.py``, which chooses between them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

MeterChoice = Literal["auto", "zeus", "none"]
METER_CHOICES: tuple[MeterChoice, ...] = ("auto", "zeus", "none")


# Set (to the worker count) in pytest-xdist workers that share the CPUs: RAPL energy cannot be attributed to one.
CPU_SHARED_ENV = "LLEM_XDIST_WORKERS"


@dataclass(frozen=True)
class GpuDevice:
    """One GPU a meter measures: ``index`` as CUDA numbers it in this process, ``physical_index`` as the driver does."""

    index: int
    physical_index: int
    name: str | None
    power_limit_w: float | None


@dataclass(frozen=True)
class GpuScope:
    """Which GPUs a meter measures, and why: ``indices`` in CUDA numbering (after ``CUDA_VISIBLE_DEVICES``), None for
    every visible GPU. ``chosen``: the study named them (``energy.gpu_indices``), so one that is not visible is an
    error; an engine's own GPUs that are not visible are left out."""

    indices: tuple[int, ...] | None = None
    why: str = "every visible GPU"
    chosen: bool = False

    @classmethod
    def of_study(cls, gpu_indices: Sequence[int] | str) -> GpuScope:
        """``energy.gpu_indices`` as written: ``all`` or a list."""
        if isinstance(gpu_indices, str):
            return cls(None, f"energy.gpu_indices: {gpu_indices}", chosen=True)
        return cls(tuple(gpu_indices), f"energy.gpu_indices: {list(gpu_indices)}", chosen=True)


EVERY_GPU = GpuScope()


@dataclass(frozen=True)
class Reading:
    """What one window measured. Energies in joules; a device that was not measured is absent, not 0."""

    name: str
    duration_s: float
    gpu_energy_j: dict[int, float] = field(default_factory=dict)  # keyed by physical index
    cpu_energy_j: float | None = None
    dram_energy_j: float | None = None
    source: str | None = None  # which devices, through what; None when nothing was measured
    unavailable_reason: str | None = None  # why energy_j is None
    warnings: tuple[str, ...] = ()
    unavailable: dict[str, str] = field(default_factory=dict)  # a part not measured (cpu_energy_j) → why

    @property
    def energy_j(self) -> float | None:
        if self.unavailable_reason is not None:
            return None
        parts = [*self.gpu_energy_j.values(), self.cpu_energy_j, self.dram_energy_j]
        measured = [p for p in parts if p is not None]
        return sum(measured) if measured else None

    @property
    def mean_power_w(self) -> float | None:
        energy = self.energy_j
        return energy / self.duration_s if energy is not None and self.duration_s > 0 else None


@dataclass(frozen=True)
class CounterSample:
    """The measured devices' cumulative energy counters (J since some origin) at one instant (``perf_counter``)."""

    at_s: float
    gpu_j: dict[int, float] = field(default_factory=dict)  # keyed by physical index
    cpu_j: float | None = None
    dram_j: float | None = None


class Meter(Protocol):
    """Measures energy over named windows; several windows may be open at once if their names differ."""

    @property
    def source(self) -> str | None:
        """The devices measured and through what (``None`` when nothing can be)."""

    @property
    def unavailable_reason(self) -> str | None:
        """Why nothing can be measured, or ``None`` when something can."""

    @property
    def gpus(self) -> Sequence[GpuDevice]: ...

    def begin(self, name: str) -> None: ...

    def end(self, name: str) -> Reading: ...

    def cancel(self, name: str) -> None:
        """Forget an open window (the work inside it failed)."""

    def close(self) -> None:
        """Stop whatever the meter runs in the background (before its process exits); no window after this."""

    def sample(self) -> CounterSample | None:
        """The devices' cumulative counters now, for windows known only afterwards (energy/timeline.py); None when
        there are no counters to read."""


class NullMeter:
    """No energy source: windows are still timed, every energy figure is None with ``reason``."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self._open: dict[str, float] = {}

    @property
    def source(self) -> str | None:
        return None

    @property
    def unavailable_reason(self) -> str | None:
        return self.reason

    @property
    def gpus(self) -> Sequence[GpuDevice]:
        return ()

    def begin(self, name: str) -> None:
        if name in self._open:
            raise ValueError(f"energy window {name!r} is already open")
        self._open[name] = time.perf_counter()

    def end(self, name: str) -> Reading:
        ended = time.perf_counter()
        started = self._open.pop(name)
        return Reading(name=name, duration_s=ended - started, unavailable_reason=self.reason)

    def cancel(self, name: str) -> None:
        self._open.pop(name, None)

    def close(self) -> None:
        self._open.clear()

    def sample(self) -> CounterSample | None:
        return None


def resolve_choice(command_line: str | None, study: str | None, ini: str | None) -> MeterChoice:
    """Command line beats the study's ``energy.meter``, which beats the ini; ``auto`` when nobody says."""
    for value in (command_line, study, ini):
        if value:
            if value not in METER_CHOICES:
                raise ValueError(f"meter must be one of {', '.join(METER_CHOICES)}, not {value!r}")
            return value
    return "auto"
