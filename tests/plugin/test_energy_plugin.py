"""Energy through the plugin: study items and the llem_energy fixture, with fake devices installed at Zeus's device
layer by the temp project's conftest (so the real ZeusMonitor path runs inside the pytest run under test)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests import studies

FAKES = Path(__file__).parent.parent / "zeus_fakes.py"

# Each test says whether it wants the idle baseline; with fake devices it costs real seconds.
FAST = studies.FAST.replace("baseline: {enabled: false}", "warmup: {enabled: false}")

# Backends for windows whose length matters: ``padded`` (at least 0.3 s, see studies.PADDED_BACKEND) and ``blink``,
# whose window is a 20 ms sleep, its inference done before (shorter than the GPU counter period on any machine, long
# enough to read energy). ``clock``, a fixture for the temp project's tests: a FakeClock, on which the fake GPUs count,
# as time.perf_counter and time.monotonic.
CONFTEST = (
    studies.PADDED_BACKEND
    + """
import pytest
import zeus_fakes

CLOCK = zeus_fakes.FakeClock()


class Blink(PyTorchBackend):
    '''The pytorch backend with its inference done in prepare, before the timed window.'''

    def prepare(self, prompts):
        prepared = super().prepare(prompts)
        self.done = super().generate(prepared)
        return prepared

    def generate(self, prepared):
        time.sleep(0.02)
        return self.done


def pytest_llem_backends():
    return {"padded": Padded, "blink": Blink}


@pytest.fixture
def clock(monkeypatch):
    return CLOCK.patch(monkeypatch)


def install_fakes():
    zeus_fakes.install(DEVICES, None)


def pytest_configure(config):
    install_fakes()


def pytest_llem_child_setup():  # items run in child processes: they need the fakes too
    return [install_fakes]


def pytest_unconfigure(config):
    zeus_fakes.uninstall()
"""
)


def project(
    pytester: pytest.Pytester, gpus: list[float] | None, study: str | None = FAST, *, fake_clock: bool = False
) -> None:
    """A temp project whose conftest makes Zeus see fake GPUs at ``gpus`` watts (None: no device at all), in the
    pytest process and in every item's child process; with ``fake_clock`` they count on the ``clock`` fixture's time."""
    pytester.makepyfile(zeus_fakes=FAKES.read_text())
    devices = "None" if gpus is None else f"zeus_fakes.FakeGPUs({gpus!r}{', clock=CLOCK' if fake_clock else ''})"
    pytester.makeconftest(CONFTEST.replace("DEVICES", devices))
    if study is not None:
        pytester.makefile(".yaml", study_e=study)


def results(pytester: pytest.Pytester) -> list[dict]:
    tree = ET.parse(pytester.path / "out.xml")
    return [json.loads(p.get("value")) for p in tree.iter("property") if p.get("name") == "llem_result"]


def test_study_items_record_energy_per_gpu_idle_power_and_the_environment(pytester: pytest.Pytester) -> None:
    project(pytester, [120.0, 80.0], FAST + "backend: padded\nbaseline: {enabled: true, duration_seconds: 5}\n")
    result = pytester.runpytest("--llem-cycles=2", "--junitxml=out.xml")
    result.assert_outcomes(passed=2)
    first, second = results(pytester)
    for r in (first, second):
        m = r["metrics"]
        assert set(m["gpu_energy_j"]) == {"0", "1"}
        assert m["duration_s"] >= 0.3
        assert m["gpu_energy_j"]["0"] == pytest.approx(120.0 * m["duration_s"], rel=0.05)
        assert m["gpu_energy_j"]["1"] == pytest.approx(80.0 * m["duration_s"], rel=0.05)
        assert m["energy_j"] == pytest.approx(sum(m["gpu_energy_j"].values()))
        assert m["mean_power_w"] == pytest.approx(m["energy_j"] / m["duration_s"])
        assert m["energy_per_output_token_j"] == pytest.approx(m["energy_j"] / m["output_tokens"])
        assert m["energy_source"] == (
            "zeus: GPU 0 (Fake GPU), GPU 1 (Fake GPU) via FakeGPUs (every visible GPU: the engine runs on the CPU)"
        )
        assert m["energy_unavailable_reason"] is None
        assert m["idle_power_w"] == pytest.approx(200.0, rel=0.01)
        assert m["energy_adjusted_j"] == pytest.approx(m["energy_j"] - m["idle_power_w"] * m["duration_s"])
        assert [g["name"] for g in r["environment"]["gpus"]] == ["Fake GPU", "Fake GPU"]
    assert first["metrics"]["idle_power_origin"] == "measured before load"
    assert second["metrics"]["idle_power_origin"].startswith("cached, measured")  # one idle measurement per session
    result.stdout.re_match_lines(
        [
            r"experiment\s+cycles\s+tokens/s \(95% CI\).*energy J \(95% CI\)\s+J/tok\s+mean W",
            r"padded\s+2\s+.*\d ± [\d.]+\s+[\d.]+ ± [\d.]+\s+[\d.]+ ± [\d.]+$",
            r"energy: zeus: GPU 0 \(Fake GPU\), GPU 1 \(Fake GPU\) via FakeGPUs \(every visible GPU: the engine "
            r"runs on the CPU\) \(2 results\)",
        ]
    )


def test_a_window_too_short_for_the_counters_is_a_warning_and_a_failure_when_strict(pytester: pytest.Pytester) -> None:
    project(pytester, [100.0], FAST + "backend: blink\nbaseline: {enabled: false}\n")
    lenient = pytester.runpytest("--llem-cycles=1", "--junitxml=out.xml")
    lenient.assert_outcomes(passed=1)
    (only,) = results(pytester)
    assert 0.02 <= only["metrics"]["duration_s"] < 0.1
    (warning,) = only["metrics"]["measurement_warnings"]
    assert "shorter than the GPU energy counter" in warning
    lenient.stdout.re_match_lines(
        [r"measurement warnings \(1; --llem-strict fails such items\):", r"  blink cycle 1: window of \d+ ms"]
    )

    strict = pytester.runpytest("--llem-cycles=1", "--llem-strict")
    strict.assert_outcomes(failed=1)
    strict.stdout.re_match_lines(
        [r".*blink cycle 1: measurement warnings \(--llem-strict\):", r".*  - window of \d+ ms is shorter than"]
    )
    strict.stdout.re_match_lines([r"blink\s+0 \(1 failed\)"])
    assert "Traceback" not in strict.stdout.str()


def test_no_devices_means_null_energy_with_the_reason_and_the_item_still_passes(pytester: pytest.Pytester) -> None:
    project(pytester, None)
    result = pytester.runpytest("--llem-cycles=1", "--junitxml=out.xml")
    result.assert_outcomes(passed=1)
    (only,) = results(pytester)
    reason = "no GPU visible to this process and no CPU package with RAPL counters"
    m = only["metrics"]
    assert m["energy_j"] is None and m["mean_power_w"] is None and m["energy_per_output_token_j"] is None
    assert m["gpu_energy_j"] == {} and m["energy_unavailable_reason"] == reason
    assert m["idle_power_w"] is None and m["unavailable"]["idle_power_w"] == reason
    assert m["tokens_per_s"] > 0
    result.stdout.re_match_lines([r"pytorch\s+1\s.*\s-\s+-\s+-$", rf"energy: not measured: {reason} \(1 results\)"])


def test_meter_choice_command_line_beats_study_and_zeus_demands_a_device(pytester: pytest.Pytester) -> None:
    project(pytester, [100.0], FAST + "baseline: {enabled: false}\nenergy: {meter: none}\n")
    off = pytester.runpytest("--llem-cycles=1", "--junitxml=out.xml")
    off.assert_outcomes(passed=1)
    reason = results(pytester)[0]["metrics"]["energy_unavailable_reason"]
    assert reason == "energy measurement is turned off (meter: none)"
    on = pytester.runpytest("--llem-cycles=1", "--llem-meter=auto", "--junitxml=out.xml")
    on.assert_outcomes(passed=1)
    assert results(pytester)[0]["metrics"]["energy_j"] > 0

    pytester.makeconftest("")  # no device at all now
    demanded = pytester.runpytest("--llem-cycles=1", "--llem-meter=zeus")
    demanded.assert_outcomes(failed=1)
    demanded.stdout.fnmatch_lines(["*pytorch cycle 1: meter 'zeus' was asked for, but nothing can be measured here*"])


def test_a_bad_meter_in_the_ini_is_one_usage_error(pytester: pytest.Pytester) -> None:
    project(pytester, None)
    pytester.makeini("[pytest]\nllem_meter = nvml\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*llem_meter (ini): must be one of auto, zeus, none, not 'nvml'*"])


# On the project's FakeClock: the windows last exactly what the test sleeps on it, and the fake GPU counts on it too.
FIXTURE_TEST = """
import pytest


def test_pipeline(llem_energy, clock):
    with llem_energy.measure("prefill") as first:
        clock.sleep(0.25)
    with llem_energy.measure("decode") as m:
        with pytest.raises(AttributeError, match="still open"):
            m.energy_j
        clock.sleep(0.5)
    m.output_tokens = 20
    with llem_energy.measure("nested"):
        with pytest.raises(ValueError, match="window 'nested' is already open"):
            with llem_energy.measure("nested"):
                pass
    assert (first.duration_s, m.duration_s) == (0.25, 0.5)
    assert m.tokens_per_s == 40.0
    if EXPECT_ENERGY:
        assert m.energy_j == pytest.approx(150.0 * 0.5)
        assert m.gpu_energy_j == {0: pytest.approx(m.energy_j)}
        assert m.energy_per_output_token_j == pytest.approx(m.energy_j / 20)
        assert m.mean_power_w == pytest.approx(150.0)
        assert m.energy_unavailable_reason is None
        assert first.energy_j == pytest.approx(150.0 * 0.25)
    else:
        assert m.energy_j is None and m.energy_per_output_token_j is None and m.gpu_energy_j == {}
        assert "no GPU visible" in m.energy_unavailable_reason
"""


@pytest.mark.parametrize("gpus", [[150.0], None], ids=["fake-gpu", "no-device"])
def test_the_fixture_measures_plain_tests_into_the_same_results_and_table(
    pytester: pytest.Pytester, gpus: list[float] | None
) -> None:
    project(pytester, gpus, study=None, fake_clock=True)
    pytester.makepyfile(test_fx=f"EXPECT_ENERGY = {gpus is not None}\n" + FIXTURE_TEST)
    result = pytester.runpytest("--junitxml=out.xml")
    result.assert_outcomes(passed=1)
    prefill, decode, _nested = results(pytester)
    assert (prefill["kind"], prefill["study"]) == ("fixture", "test_fx.py")
    assert prefill["experiment_id"] == "test_pipeline::prefill"
    assert decode["experiment_id"] == "test_pipeline::decode" and decode["metrics"]["output_tokens"] == 20
    assert prefill["metrics"]["unavailable"]["output_tokens"] == "the test did not set output_tokens on the window"
    # energy J, J/tok (none without output tokens), mean W
    prefill_energy, decode_energy = (r"37\.5\s+-\s+150$", r"75\.0\s+3\.75\s+150$")
    if gpus is None:
        prefill_energy = decode_energy = r"-\s+-\s+-$"
    result.stdout.re_match_lines(
        [
            r"test_fx\.py: llem_energy windows",
            r"experiment\s+cycles\s+tokens/s",
            r"-+",
            r"test_pipeline::prefill\s+1\s+-\s+-\s.*" + prefill_energy,
            r"test_pipeline::decode\s+1\s+[\d.]+\s+20\s.*" + decode_energy,
        ]
    )


def test_a_strict_session_fails_a_fixture_window_with_warnings(pytester: pytest.Pytester) -> None:
    project(pytester, [100.0], study=None, fake_clock=True)
    pytester.makepyfile(  # no time passes in the window: 0 ms, 0 J
        test_short="def test_blink(llem_energy, clock):\n    with llem_energy.measure('blink'):\n        pass\n"
    )
    result = pytester.runpytest("--llem-strict")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*llem_energy window 'blink': measurement warnings (--llem-strict):*"])


def test_failed_and_same_named_tests_keep_their_own_rows_and_warnings(pytester: pytest.Pytester) -> None:
    project(pytester, [100.0], study=None, fake_clock=True)
    pytester.makepyfile(
        test_budget="""
        class TestA:
            def test_run(self, llem_energy, clock):
                with llem_energy.measure("gen"):
                    clock.sleep(0.25)

        class TestB:
            def test_run(self, llem_energy, clock):
                with llem_energy.measure("gen") as m:  # no time passes: 0 ms, 0 J
                    pass
                assert m.energy_j < 0, "over budget"
        """
    )
    result = pytester.runpytest("--junitxml=out.xml")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.re_match_lines(
        [
            r"test_budget\.py: llem_energy windows",
            r".*",
            r"-+",
            r"TestA::test_run::gen\s+1\s",
            r"TestB::test_run::gen\s+0 \(1 failed\)\s",
        ]
    )
    result.stdout.re_match_lines([r"  TestB::test_run::gen cycle 1: window of 0 ms is shorter than"])


def test_phases_split_the_energy_of_a_study_item_into_prefill_and_decode(pytester: pytest.Pytester) -> None:
    """On a GPU drawing 150 W, each phase's energy is 150 W x its time: the prefill measured alone (repeated for a
    second), decode the rest of the generate window. The backend sleeps 1 s after its inference, so decode is at
    least that long (well over the counters' resolution) however slow the machine's prefill."""
    project(pytester, [150.0], FAST + "backend: padded\nbaseline: {enabled: false}\nphases: true\n")
    conftest = pytester.path / "conftest.py"
    conftest.write_text(conftest.read_text() + "\nEXTRA_S = 1.0\n")
    result = pytester.runpytest("--llem-cycles=1", "--junitxml=out.xml")
    result.assert_outcomes(passed=1)
    m = results(pytester)[0]["metrics"]
    assert m["prefill_passes"] * m["prefill_duration_s"] >= 1.0
    assert m["prefill_energy_j"] == pytest.approx(150.0 * m["prefill_duration_s"], rel=0.05, abs=0.5)
    assert m["decode_energy_j"] == pytest.approx(150.0 * m["decode_duration_s"], rel=0.05)
    assert m["decode_energy_j"] + m["prefill_energy_j"] == pytest.approx(m["energy_j"])
    assert m["prefill_energy_per_input_token_j"] == pytest.approx(m["prefill_energy_j"] / m["input_tokens"])
    decode_tokens = m["output_tokens"] - 4  # each of the 4 prompts' first token came from the prefill
    assert m["decode_energy_per_output_token_j"] == pytest.approx(m["decode_energy_j"] / decode_tokens)
    result.stdout.re_match_lines(
        [
            r"workload: synthetic \(64 words, seed 42\), chat template, at least 4, at most 4 output tokens$",
            r"experiment .* mean W\s+prefill ms\s+prefill J/in-tok\s+decode J/tok$",
        ]
    )
