"""A fake powercap folder for Zeus's real RAPL code: a package zone ``intel-rapl:0`` with a DRAM sub-zone
``intel-rapl:0:0``, whose ``energy_uj`` counters advance at set watts and wrap at ``max_energy_range_uj`` as the
hardware's do.

A writer thread keeps the counters current (every ``period_s``, each file replaced atomically, so a reader never sees
half a number); ``point_zeus(folder)`` makes Zeus read this folder instead of /sys/class/powercap/intel-rapl. Point
Zeus in the pytest process and, through ``pytest_llem_child_setup``, in every isolated child; the writer runs in the
pytest process only (children read the same files).

This file is also copied into pytester projects (their conftest starts the writer), so it imports nothing from tests.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import zeus.device.cpu
import zeus.device.cpu.rapl

PACKAGE = "intel-rapl:0"
DRAM = "intel-rapl:0/intel-rapl:0:0"
REAL_RAPL_DIR = zeus.device.cpu.rapl.RAPL_DIR


def point_zeus(folder: str | os.PathLike[str]) -> None:
    """Make Zeus find RAPL in ``folder``: its RAPL directory, the cached "is RAPL there" answer, its CPU singleton."""
    zeus.device.cpu.rapl.RAPL_DIR = str(folder)
    _forget()


def unpoint_zeus() -> None:
    zeus.device.cpu.rapl.RAPL_DIR = REAL_RAPL_DIR
    _forget()


def _forget() -> None:
    cache_clear = getattr(zeus.device.cpu.rapl.rapl_is_available, "cache_clear", None)
    if cache_clear is not None:
        cache_clear()
    zeus.device.cpu._cpus = None


class Zone:
    """One counter: ``watts`` (settable), energy since the rig started, wrapped at ``max_range_j``."""

    def __init__(self, folder: Path, name: str, watts: float, max_range_j: float, start_j: float) -> None:
        self.folder = folder
        self.watts = watts
        self.max_range_uj = int(max_range_j * 1e6)
        self._energy_uj = start_j * 1e6
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "name").write_text(name + "\n")
        (folder / "max_energy_range_uj").write_text(f"{self.max_range_uj}\n")
        self.write()

    def advance(self, seconds: float) -> None:
        self._energy_uj += self.watts * seconds * 1e6

    def write(self) -> None:
        temporary = self.folder / "energy_uj.tmp"
        temporary.write_text(f"{int(self._energy_uj) % self.max_range_uj}\n")
        os.replace(temporary, self.folder / "energy_uj")


class FakeRapl:
    """The powercap tree under ``folder`` and its writer thread; use as a context manager or ``start``/``stop``."""

    def __init__(
        self,
        folder: str | os.PathLike[str],
        package_w: float = 50.0,
        dram_w: float | None = 10.0,
        max_range_j: float = 262_143.0,  # a common package range; make it small to see wraps
        start_j: float = 1000.0,  # counters do not start at zero
        period_s: float = 0.001,
    ) -> None:
        self.folder = Path(folder)
        self.period_s = period_s
        self.package = Zone(self.folder / PACKAGE, "package-0", package_w, max_range_j, start_j)
        self.zones = [self.package]
        self.dram = None
        if dram_w is not None:
            self.dram = Zone(self.folder / DRAM, "dram", dram_w, max_range_j, start_j)
            self.zones.append(self.dram)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-rapl-writer", daemon=True)

    def start(self) -> FakeRapl:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeRapl:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stopping.wait(self.period_s):
            now = time.monotonic()
            for zone in self.zones:
                zone.advance(now - last)
                zone.write()
            last = now
