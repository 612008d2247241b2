"""The energy timeline: cumulative counters sampled through Zeus's device layer (fake devices whose power changes
during the load), integrated over windows known only afterwards. On a FakeClock, so every figure is exact."""

from __future__ import annotations

import threading
import time

import pytest

from pytest_llem.energy.meter import NullMeter
from pytest_llem.energy.opening import open_meter
from pytest_llem.energy.timeline import EnergyTimeline
from tests.zeus_fakes import FakeClock, FakeCPUs, FakeGPUs, install, uninstall


@pytest.fixture
def rig(monkeypatch: pytest.MonkeyPatch):
    """One fake GPU (100 W) and one CPU package (20 W + 5 W DRAM) on a fake clock."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    clock = FakeClock().patch(monkeypatch)
    gpus, cpus = FakeGPUs([100.0], clock=clock), FakeCPUs([20.0], dram_watts=5.0, clock=clock)
    install(gpus, cpus)
    yield clock, gpus.physical[0].trace, cpus
    uninstall()


def test_a_window_across_a_power_change_gets_each_side_s_energy(rig) -> None:
    clock, gpu, _ = rig
    meter = open_meter("zeus")
    timeline = EnergyTimeline(meter, period_s=1.0)
    timeline.take()  # t = 0
    for watts in (100.0, 300.0, 300.0, 50.0):  # the load changes the GPU's power second by second
        gpu.watts = watts
        clock.sleep(1.0)
        timeline.take()
    start = timeline.samples[0].at_s
    steady = timeline.energy_between(start + 1.0, start + 3.0)  # the two seconds at 300 W
    assert steady.gpu_energy_j == {0: pytest.approx(600.0)}
    assert steady.cpu_energy_j == pytest.approx(40.0) and steady.dram_energy_j == pytest.approx(10.0)
    assert steady.energy_j == pytest.approx(650.0)
    whole = timeline.energy_between(start, start + 4.0)
    assert whole.gpu_energy_j[0] == pytest.approx(750.0)


def test_edges_between_samples_are_read_on_the_line_between_them(rig) -> None:
    clock, gpu, _ = rig
    timeline = EnergyTimeline(open_meter("zeus"), period_s=1.0)
    timeline.take()
    gpu.watts = 200.0
    clock.sleep(1.0)
    timeline.take()
    start = timeline.samples[0].at_s
    assert timeline.energy_between(start + 0.25, start + 0.75).gpu_energy_j[0] == pytest.approx(100.0)


def test_a_window_outside_the_samples_or_without_counters_has_no_energy_and_a_reason(rig) -> None:
    clock, _, _ = rig
    timeline = EnergyTimeline(open_meter("zeus"), period_s=1.0)
    timeline.take()
    clock.sleep(1.0)
    timeline.take()
    start = timeline.samples[0].at_s
    outside = timeline.energy_between(start - 1.0, start + 0.5)
    assert outside.energy_j is None and "outside" in (outside.reason or "")
    nothing = EnergyTimeline(NullMeter("no devices here"))
    nothing.take()
    nothing.take()
    assert nothing.energy_between(0.0, 1.0).reason == "no devices here"


def test_the_thread_samples_until_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    """On the real clock: whatever the machine's speed, start and stop each take a sample, in time order, and the
    thread is gone after stop (the energies are checked on the fake clock above)."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    install(FakeGPUs([100.0]), None)
    try:
        timeline = EnergyTimeline(open_meter("zeus"), period_s=0.01)
        timeline.start()
        time.sleep(0.05)
        timeline.stop()
    finally:
        uninstall()
    times = [sample.at_s for sample in timeline.samples]
    assert len(times) >= 2 and times == sorted(times)
    assert not any(t.name == "pytest-llem-energy-timeline" for t in threading.enumerate())


class Flaky:
    """A meter whose counters read once, then fail (a driver error mid-load)."""

    unavailable_reason = None

    def __init__(self, meter) -> None:
        self.meter, self.reads = meter, 0

    def sample(self):
        self.reads += 1
        if self.reads > 1:
            raise RuntimeError("NVML_ERROR_GPU_IS_LOST")
        return self.meter.sample()


def test_a_failed_reading_ends_the_timeline_with_the_reason_not_the_load(rig) -> None:
    clock, _, _ = rig
    timeline = EnergyTimeline(Flaky(open_meter("zeus")), period_s=1.0)
    timeline.take()
    clock.sleep(1.0)
    timeline.take()  # raises inside: recorded, not raised
    timeline.stop()  # nor here
    start = timeline.samples[0].at_s
    unknown = timeline.energy_between(start, start + 0.5)
    assert unknown.energy_j is None and "NVML_ERROR_GPU_IS_LOST" in (unknown.reason or "")


def test_an_edge_in_a_long_gap_between_samples_is_not_guessed(rig) -> None:
    clock, _, _ = rig
    timeline = EnergyTimeline(open_meter("zeus"), period_s=0.1)  # samples expected every 0.1 s: a 3 s hole is a fault
    timeline.take()
    clock.sleep(3.0)
    timeline.take()
    start = timeline.samples[0].at_s
    assert "not sampled" in (timeline.energy_between(start + 1.0, start + 2.0).reason or "")
    assert timeline.energy_between(start, start + 3.0).gpu_energy_j[0] == pytest.approx(300.0)  # edges on samples
