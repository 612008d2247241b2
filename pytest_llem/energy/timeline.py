"""Energy over windows known only afterwards (a serving load's steady state): the measured devices' cumulative
counters, sampled about every 100 ms by a thread while the load runs, and integrated between any two instants.

The thread only reads counters (through the meter, so Zeus's device layer and its RAPL wrap counting); between two
samples the counter is taken as linear, so a window edge costs at most one sample period of the power's change.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass

from .meter import CounterSample, Meter

PERIOD_S = 0.1  # NVML refreshes its energy counter about this often
MAX_GAP_PERIODS = 10  # a window edge between samples further apart than this is not read off a straight line


@dataclass(frozen=True)
class TimelineEnergy:
    """Energy between two instants: the total and its parts, or why it is unknown."""

    energy_j: float | None
    gpu_energy_j: dict[int, float]
    cpu_energy_j: float | None
    dram_energy_j: float | None
    reason: str | None = None


class EnergyTimeline:
    """Samples of a meter's counters. ``take`` reads one; ``start``/``stop`` run a thread that takes one every
    ``period_s`` (and one at each end)."""

    def __init__(self, meter: Meter, period_s: float = PERIOD_S) -> None:
        self._meter = meter
        self._period_s = period_s
        self.samples: list[CounterSample] = []
        self.reason: str | None = None  # why there are no samples
        self.failed: str | None = None  # why sampling stopped part-way
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def take(self) -> None:
        """One sample; a reading that fails ends the timeline (its windows are then unknown, with the reason), never
        the load it runs beside."""
        if self.failed is not None:
            return
        try:
            sample = self._meter.sample()
        except Exception as exc:
            self.failed = f"reading the energy counters failed during the load ({type(exc).__name__}: {exc})"
            return
        if sample is None:
            self.reason = self._meter.unavailable_reason or "the measured devices have no energy counter to sample"
            return
        self.samples.append(sample)

    def start(self) -> None:
        self.take()
        self._thread = threading.Thread(target=self._run, name="pytest-llem-energy-timeline", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.wait(self._period_s):
            self.take()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        self.take()

    def energy_between(self, start_s: float, end_s: float) -> TimelineEnergy:
        """Energy from ``start_s`` to ``end_s`` (``perf_counter``), each counter read at both instants by linear
        interpolation between the samples around it."""
        samples = self.samples
        if self.failed is not None:
            return _unknown(self.failed)
        if len(samples) < 2:
            return _unknown(self.reason or "fewer than two counter samples were taken")
        if start_s < samples[0].at_s or end_s > samples[-1].at_s:
            return _unknown("the window reaches outside the sampled span")
        widest = max(self._period_s * MAX_GAP_PERIODS, 1.0)
        if any(_gap_around(samples, t) > widest for t in (start_s, end_s)):
            return _unknown(f"the counters were not sampled for over {widest:g} s around a window edge")
        before, after = _at(samples, start_s), _at(samples, end_s)
        gpu = {i: after.gpu_j[i] - before.gpu_j[i] for i in before.gpu_j if i in after.gpu_j}
        cpu = after.cpu_j - before.cpu_j if after.cpu_j is not None and before.cpu_j is not None else None
        dram = after.dram_j - before.dram_j if after.dram_j is not None and before.dram_j is not None else None
        parts = [*gpu.values(), *(p for p in (cpu, dram) if p is not None)]
        if any(p < 0 for p in parts):
            return _unknown("an energy counter went backwards inside the window")
        return TimelineEnergy(sum(parts) if parts else None, gpu, cpu, dram, None if parts else "nothing measured")


def _unknown(reason: str) -> TimelineEnergy:
    return TimelineEnergy(None, {}, None, None, reason)


def _around(samples: list[CounterSample], t: float) -> tuple[CounterSample, CounterSample]:
    times = [s.at_s for s in samples]
    right = min(max(bisect.bisect_left(times, t), 1), len(samples) - 1)
    return samples[right - 1], samples[right]


def _gap_around(samples: list[CounterSample], t: float) -> float:
    """How far apart the samples an edge is read between are (0 when it falls on one)."""
    a, b = _around(samples, t)
    return 0.0 if t in (a.at_s, b.at_s) else b.at_s - a.at_s


def _at(samples: list[CounterSample], t: float) -> CounterSample:
    """The counters at ``t``, between the two samples around it."""
    a, b = _around(samples, t)
    share = (t - a.at_s) / (b.at_s - a.at_s) if b.at_s > a.at_s else 1.0

    def mix(x: float | None, y: float | None) -> float | None:
        return x + (y - x) * share if x is not None and y is not None else None

    gpu = {i: a.gpu_j[i] + (b.gpu_j[i] - a.gpu_j[i]) * share for i in a.gpu_j if i in b.gpu_j}
    return CounterSample(t, gpu, mix(a.cpu_j, b.cpu_j), mix(a.dram_j, b.dram_j))
