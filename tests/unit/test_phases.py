"""Energy per phase: the prefill measured alone (repeated until its window lasts 1 s), the generate window split into
prefill and decode, and decode null with the reason when it is inside the counters' resolution."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_llem.energy.meter import NullMeter, Reading
from pytest_llem.energy.opening import open_meter
from pytest_llem.runner.phases import PrefillReading, measure_prefill, split_phases
from tests.zeus_fakes import FakeClock, FakeGPUs, install, uninstall


class SteadyPrefill:
    """A backend double whose prefill pass takes ``seconds`` on the test's clock."""

    def __init__(self, clock: FakeClock, seconds: float) -> None:
        self.clock, self.seconds, self.passes = clock, seconds, 0

    def prefill(self, prepared: Any) -> None:
        self.clock.sleep(self.seconds)
        self.passes += 1

    def synchronize(self) -> None:
        pass


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    return FakeClock().patch(monkeypatch)


def test_the_prefill_is_repeated_until_its_window_lasts_a_second(clock: FakeClock, monkeypatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    install(FakeGPUs([200.0], clock=clock), None)
    try:
        backend = SteadyPrefill(clock, 0.25)
        prefill = measure_prefill(backend, [], open_meter("auto"), clock=clock)  # type: ignore[arg-type]
    finally:
        uninstall()
    assert prefill.passes == backend.passes == 4
    assert prefill.reading.duration_s == 1.0
    assert prefill.reading.energy_j == pytest.approx(200.0)


def test_a_pass_longer_than_the_floor_runs_once(clock: FakeClock) -> None:
    prefill = measure_prefill(SteadyPrefill(clock, 2.5), [], NullMeter("nothing here"), clock=clock)  # type: ignore[arg-type]
    assert prefill.passes == 1 and prefill.reading.duration_s == 2.5


def reading(name: str, seconds: float, gpu_j: float | None) -> Reading:
    if gpu_j is None:
        return Reading(name, seconds, unavailable_reason="no GPU here")
    return Reading(name, seconds, gpu_energy_j={0: gpu_j}, source="zeus: GPU 0")


def test_the_generate_window_splits_into_prefill_and_decode() -> None:
    generate = reading("generate", 4.0, 800.0)  # 200 W
    prefill = PrefillReading(reading("prefill", 1.0, 250.0), passes=10)  # 25 J and 0.1 s a pass
    fields, unavailable = split_phases(generate, prefill, input_tokens=500, output_tokens=1000, first_tokens=50)
    assert unavailable == {}
    assert fields["prefill_energy_j"] == pytest.approx(25.0) and fields["prefill_duration_s"] == pytest.approx(0.1)
    assert fields["decode_energy_j"] == pytest.approx(775.0) and fields["decode_duration_s"] == pytest.approx(3.9)
    assert fields["prefill_energy_per_input_token_j"] == pytest.approx(25.0 / 500)
    assert fields["decode_energy_per_output_token_j"] == pytest.approx(775.0 / 950)  # the prefill made 50 of them
    assert fields["prefill_passes"] == 10


def test_decode_inside_the_counters_resolution_is_null_with_the_reason() -> None:
    generate = reading("generate", 0.2, 40.0)  # 200 W: one 100 ms counter step is 20 J
    prefill = PrefillReading(reading("prefill", 1.0, 100.0), passes=5)  # 20 J a pass
    fields, unavailable = split_phases(generate, prefill, input_tokens=50, output_tokens=5, first_tokens=1)
    assert fields["decode_energy_j"] is None and fields["decode_energy_per_output_token_j"] is None
    assert fields["prefill_energy_j"] == pytest.approx(20.0)
    assert unavailable["decode_energy_j"].startswith("decode energy (20 J: the window's 40 J less a prefill's 20 J)")
    assert "within the counters' resolution" in unavailable["decode_energy_j"]
    assert unavailable["decode_energy_per_output_token_j"] == unavailable["decode_energy_j"]


def test_without_energy_the_times_still_split_and_energies_say_why() -> None:
    fields, unavailable = split_phases(
        reading("generate", 3.0, None), PrefillReading(reading("prefill", 1.5, None), 3), 10, 10, first_tokens=2
    )
    assert fields["prefill_duration_s"] == pytest.approx(0.5) and fields["decode_duration_s"] == pytest.approx(2.5)
    assert fields["prefill_energy_j"] is None and fields["decode_energy_j"] is None
    assert unavailable["prefill_energy_j"] == unavailable["decode_energy_j"] == "no GPU here"
