"""The meter over Zeus's real RAPL code, reading a fake powercap folder whose counters advance at set watts.

Windows are real time padded with sleeps of at least 0.5 s: the fake counters are kept current every millisecond, so a
stale counter at a window's edge is far inside the 2% asked of the energy.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zeus.device.cpu
import zeus.device.gpu
from zeus.device.gpu.common import EmptyGPUs

from pytest_llem.energy.baseline import measure_idle_power
from pytest_llem.energy.opening import open_meter
from tests.rapl_fakes import FakeRapl, point_zeus, unpoint_zeus

PACKAGE_W, DRAM_W = 50.0, 10.0


@pytest.fixture
def rapl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """``rapl(max_range_j=...)`` starts a fake powercap tree (50 W package, 10 W DRAM) and points Zeus at it; no
    GPU. Everything is stopped and Zeus pointed back afterwards."""
    monkeypatch.setattr(zeus.device.gpu, "_gpus", EmptyGPUs())
    rigs: list[FakeRapl] = []

    def make(**kwargs: float) -> FakeRapl:
        rig = FakeRapl(tmp_path / "powercap", package_w=PACKAGE_W, dram_w=DRAM_W, **kwargs).start()
        rigs.append(rig)
        point_zeus(rig.folder)
        return rig

    yield make
    for rig in rigs:
        rig.stop()
    unpoint_zeus()


def window(meter, seconds: float, name: str = "w"):
    meter.begin(name)
    time.sleep(seconds)
    return meter.end(name)


def wrap_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "pytest-llem-rapl-wraps"]


@pytest.mark.parametrize("seconds", [0.5, 1.0])
def test_cpu_and_dram_energy_through_zeus_rapl_are_watts_times_duration(rapl, seconds: float) -> None:
    rapl()
    meter = open_meter("zeus")
    try:
        assert meter.source == "zeus: CPU package + DRAM via RAPL"
        reading = window(meter, seconds)
    finally:
        meter.close()
    assert reading.duration_s >= seconds
    assert reading.cpu_energy_j == pytest.approx(PACKAGE_W * reading.duration_s, rel=0.02)
    assert reading.dram_energy_j == pytest.approx(DRAM_W * reading.duration_s, rel=0.02)
    assert reading.energy_j == pytest.approx((PACKAGE_W + DRAM_W) * reading.duration_s, rel=0.02)
    assert reading.gpu_energy_j == {} and reading.warnings == ()


def test_counter_wraparounds_inside_a_window_are_counted(rapl) -> None:
    """A 40 J counter at 50 W wraps every 0.8 s: the window, opened right after the meter, sees two or three, the
    first 0.2 s after the counters start (Zeus's own tracker, started by the window's first read, missed that one)."""
    rig = rapl(max_range_j=40.0, start_j=30.0)
    meter = open_meter("zeus")
    try:
        reading = window(meter, 2.0)
    finally:
        meter.close()
    assert PACKAGE_W * reading.duration_s > 2 * 40.0  # the window really spans wraps
    assert reading.cpu_energy_j == pytest.approx(PACKAGE_W * reading.duration_s, rel=0.02)
    assert reading.dram_energy_j == pytest.approx(DRAM_W * reading.duration_s, rel=0.02)
    assert reading.warnings == ()
    assert rig.package.max_range_uj == 40_000_000


def test_the_idle_baseline_through_rapl(rapl) -> None:
    rapl(max_range_j=40.0)
    meter = open_meter("zeus")
    try:
        idle = measure_idle_power(meter, 1.0)
    finally:
        meter.close()
    assert idle.watts == pytest.approx(PACKAGE_W + DRAM_W, rel=0.02)
    assert idle.reason is None


def test_no_process_is_started_and_the_counting_stops_when_the_meter_closes(rapl) -> None:
    """Zeus's own tracker is a process per RAPL file (spawned, non-daemon); ours is one thread, gone at close."""
    rapl()
    before = multiprocessing.active_children()
    meter = open_meter("zeus")
    assert len(wrap_threads()) == 1  # started at open, before any window
    window(meter, 0.5)
    assert multiprocessing.active_children() == before
    second = open_meter("zeus")  # another meter on the same counters shares the thread
    meter.close()
    assert len(wrap_threads()) == 1
    window(second, 0.5)
    second.close()
    assert wrap_threads() == []
    assert multiprocessing.active_children() == before


def test_a_tracker_zeus_started_before_the_meter_is_stopped_and_replaced(rapl) -> None:
    """A read through Zeus before any meter opened spawned Zeus's tracker processes; opening the meter stops them
    (rather than leaving them to the interpreter's exit) and counts from then on."""
    rapl(max_range_j=40.0)
    before = set(multiprocessing.active_children())
    zeus.device.cpu.get_cpus().get_total_energy_consumption(0)  # Zeus's first read starts its trackers
    assert len(set(multiprocessing.active_children()) - before) == 2  # package and DRAM
    meter = open_meter("zeus")
    try:
        assert set(multiprocessing.active_children()) - before == set()
        reading = window(meter, 1.0)
    finally:
        meter.close()
    assert reading.cpu_energy_j == pytest.approx(PACKAGE_W * reading.duration_s, rel=0.02)
