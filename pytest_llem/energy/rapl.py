"""RAPL counter wraparounds for Zeus's RAPL files, counted by one thread in this process.

Zeus 0.16 counts them with a ``RaplWraparoundTracker`` per RAPL file: a spawned, non-daemon process started on the
first read (inside the first measured window) and stopped only by ``atexit``. An isolated item's process leaves
through multiprocessing, which skips ``atexit`` and joins its non-daemon children: 30 s per item before the parent
kills it. The tracker also misses a wrap between a window's first read and its own first read (a fresh interpreter
takes seconds to start), and its count lags the counter by up to 1 s, so a wrap just before a window's edge is lost.

So Zeus's reading code stays (``RAPLFile.read``, ``RAPLCPU``, ``ZeusMonitor``) and only its tracker is replaced, by
an object with the same ``get_num_wraparounds`` that Zeus's ``RAPLFile`` finds already in place: started when the
meter opens (outside every window), a daemon thread polling each counter often enough to see every wrap, plus a poll
on each of Zeus's reads so the count is current when Zeus adds it. Stopped when the last meter using it closes; a
thread, not a process, so nothing outlives the process either way.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from typing import Any

# Zeus's own bound (RAPL_COUNTER_MAX_INCREASE: 100 J per 0.1 s): no RAPL zone draws more.
MAX_POWER_W = 1000.0
MAX_POLL_S = 1.0
MIN_POLL_S = 0.005
STOP_TIMEOUT_S = 2.0


class WrapCounter:
    """Wraparounds of one ``energy_uj`` counter since it was first read here, under Zeus's tracker interface."""

    def __init__(self, energy_uj_path: str, max_energy_range_uj: float) -> None:
        self.path = energy_uj_path
        self._lock = threading.Lock()
        self._last = self._read()
        self._wraps = 0
        # Two polls per counter range at the highest power: a wrap is never skipped between two polls.
        range_j = max_energy_range_uj / 1e6
        self.poll_s = min(MAX_POLL_S, max(MIN_POLL_S, range_j / MAX_POWER_W / 2))

    def _read(self) -> float:
        with open(self.path) as counter:
            return float(counter.read().strip())

    def poll(self) -> None:
        """Read the counter; a value below the last one is a wrap."""
        with self._lock:
            value = self._read()
            if value < self._last:
                self._wraps += 1
            self._last = value

    def get_num_wraparounds(self) -> int:
        """What Zeus's ``RAPLFile.read`` asks right after reading the counter: polled first, so a wrap since the
        thread's last poll is counted (one in the microseconds between Zeus's read and this poll, one read early)."""
        with contextlib.suppress(OSError):  # the counter vanished: the count so far is all there is
            self.poll()
        with self._lock:
            return self._wraps


class _Poller:
    """The daemon thread that polls every watched counter at the shortest period any of them needs."""

    def __init__(self) -> None:
        self._counters: list[WrapCounter] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pytest-llem-rapl-wraps", daemon=True)

    def watch(self, counters: Sequence[WrapCounter]) -> None:
        self._counters = [*self._counters, *(c for c in counters if c not in self._counters)]

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=STOP_TIMEOUT_S)

    def _run(self) -> None:
        while self._counters and not self._stopping.wait(min(c.poll_s for c in self._counters)):
            for counter in self._counters:
                try:
                    counter.poll()
                except OSError:  # gone (a test's fake folder removed): stop watching it, quietly
                    self._counters = [c for c in self._counters if c is not counter]


_lock = threading.Lock()
_poller: _Poller | None = None
_users = 0


def rapl_files(cpus: Any) -> list[Any]:
    """Zeus's ``RAPLFile`` objects behind a CPU manager (packages and DRAM); none for zeusd or other managers."""
    from zeus.device.cpu.rapl import RAPLFile

    files = []
    for cpu in getattr(cpus, "cpus", ()):
        for attribute in ("rapl_file", "dram"):
            found = getattr(cpu, attribute, None)
            if isinstance(found, RAPLFile) and hasattr(found, "_wraparound_tracker"):
                files.append(found)
    return files


def _own_counter(rapl_file: Any) -> WrapCounter:
    """The counter of ``rapl_file``, put in place of Zeus's tracker (which is stopped if someone had started it)."""
    tracker = rapl_file._wraparound_tracker
    if isinstance(tracker, WrapCounter):
        return tracker
    if tracker is not None:  # Zeus's process, started by a read before ours: stop it now, not at exit
        import atexit

        atexit.unregister(tracker._stop)
        tracker._stop()
    counter = WrapCounter(rapl_file.energy_uj_path, rapl_file.max_energy_range_uj)
    rapl_file._wraparound_tracker = counter
    return counter


def start_counting(cpus: Any) -> bool:
    """Count wraparounds of every RAPL counter of ``cpus`` (Zeus's CPU manager) from now on; False when it has none.
    Each True is matched by one ``stop_counting``."""
    global _poller, _users
    files = rapl_files(cpus)
    if not files:
        return False
    with _lock:
        counters = []
        for rapl_file in files:
            try:
                counters.append(_own_counter(rapl_file))
            except OSError:  # unreadable now (it was a moment ago, or Zeus had failed): its reads will fail alike
                continue
        if not counters:
            return False
        if _poller is not None and _poller.alive:
            _poller.watch(counters)
        else:  # none yet, or its thread ended when every counter it watched vanished
            _poller = _Poller()
            _poller.watch(counters)
            _poller.start()
        _users += 1
    return True


def stop_counting() -> None:
    """One user less; the last one stops the thread (the counters stay in place, read-through only)."""
    global _poller, _users
    with _lock:
        _users = max(_users - 1, 0)
        poller = _poller if _users == 0 else None
        if poller is not None:
            _poller = None
    if poller is not None:
        poller.stop()
