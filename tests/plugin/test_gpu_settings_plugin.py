"""GPU settings through the plugin: a study sweeping ``gpu.power_limit_w`` on a fake GPU at Zeus's device layer that
draws min(900 W, its limit). The fake driver's state is a file shared by the pytest process (which sets and restores)
and each item's child (which draws under the limit), as a real driver is; it records every set and reset.

Each project runs in a pytest subprocess, so that the study's engine placement is decided as on a GPU machine
(LLEM_PLATFORM=cuda, torch not imported in the pytest process: the model is "on cuda:0", GPU 0 is set)."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pytest_llem.cli import main
from pytest_llem.energy.gpu_journal import JOURNALS
from pytest_llem.energy.gpu_settings import NEEDS_RIGHT
from tests import studies
from tests.zeus_fakes import FakeDriver, FakeGPUs, install, uninstall

FAKES = Path(__file__).parent.parent / "zeus_fakes.py"

CONFTEST = (
    studies.CRASHY_CONFTEST
    + studies.PADDED_BACKEND
    + """
import zeus_fakes

DRIVER = Path(__file__).parent / "driver.json"
MODES[6] = "interrupt pytest"
MODES[7] = "kill pytest"
MODES[8] = "terminate pytest"


class Settable(Padded, Crashy):
    def generate(self, prepared):
        pytest_pid = int(os.environ["TEST_PYTEST_PID"])
        if self.mode == "interrupt pytest":  # Ctrl-C reaches pytest (the child leads its own process group)
            os.kill(pytest_pid, signal.SIGINT)
            time.sleep(600)
        if self.mode == "terminate pytest":  # a CI cancel, a Slurm preemption: SIGTERM to pytest alone
            os.kill(pytest_pid, signal.SIGTERM)
            time.sleep(600)
        if self.mode == "kill pytest":
            os.kill(pytest_pid, signal.SIGKILL)
            os._exit(1)
        return super().generate(prepared)


def install_fakes():
    zeus_fakes.install(zeus_fakes.FakeGPUs([900.0], driver=DRIVER), None)


def pytest_configure(config):
    os.environ["TEST_PYTEST_PID"] = str(os.getpid())
    install_fakes()


def pytest_llem_child_setup():
    return [install_fakes]


def pytest_llem_backends():
    return {"settable": Settable}
"""
)

HEAD = studies.FAST + "backend: settable\nwarmup: {enabled: false}\n"
SET, RESTORE = ["set_power_limit", 0, 300_000], ["set_power_limit", 0, 700_000]


def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, study: str, *, root: bool = True) -> Path:
    """The temp project; returns its fake driver's file."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("LLEM_PLATFORM", "cuda")
    pytester.makepyfile(zeus_fakes=FAKES.read_text())
    pytester.makeconftest(CONFTEST)
    pytester.makefile(".yaml", study_g=study)
    driver = pytester.path / "driver.json"
    FakeDriver(driver, root=root)
    return driver


def driver_state(path: Path) -> dict:
    return dict(json.loads(path.read_text()))


def journals(pytester: pytest.Pytester) -> list[Path]:
    return sorted((pytester.path / ".llem" / JOURNALS).glob("*.json"))


def results(pytester: pytest.Pytester) -> list[dict]:
    tree = ET.parse(pytester.path / "out.xml")
    return [json.loads(p.get("value")) for p in tree.iter("property") if p.get("name") == "llem_result"]


def test_a_swept_limit_is_set_for_each_item_its_energy_follows_it_and_the_default_comes_back(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = project(pytester, monkeypatch, HEAD + "sweep: {gpu.power_limit_w: [300, 500, 700]}\n")
    result = pytester.runpytest_subprocess("--llem-cycles=1", "--junitxml=out.xml")
    result.assert_outcomes(passed=3)
    by_limit = {r["config"]["gpu"]["power_limit_w"]: r for r in results(pytester)}
    for limit, r in by_limit.items():
        m = r["metrics"]
        assert (m["gpu_power_limit_w"], m["gpu_settings_gpus"], m["gpu_locked_clocks_mhz"]) == (float(limit), [0], None)
        assert m["mean_power_w"] == pytest.approx(min(900.0, limit), rel=0.05)  # the GPU drew what the limit allowed
        assert r["environment"]["gpus"][0]["power_limit_w"] == float(limit)
    assert len({r["config_hash"] for r in by_limit.values()}) == 3
    state = driver_state(driver)
    assert state["gpus"]["0"]["limit_w"] == 700.0
    # Each item set its limit and restored the one before (the 700 W item needed no change: Zeus skips equal limits).
    assert state["calls"] == [SET, RESTORE, ["set_power_limit", 0, 500_000], RESTORE]
    assert journals(pytester) == []
    result.stdout.re_match_lines([r"experiment\s+limit W\s+cycles.*", r"settable-300\s+300\s+1\s+.*"])


def test_the_limit_is_restored_after_a_failed_a_killed_and_a_timed_out_item(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The hanging item has a short timeout in a study of its own: the others load a model first, however slowly.
    crashing = HEAD + "gpu: {power_limit_w: 300}\nexecution: {cycle_order: sequential}\nsweep: {random_seed: [4, 2]}\n"
    driver = project(pytester, monkeypatch, crashing)  # raise, SIGKILL
    pytester.makefile(
        ".yaml", study_h=HEAD + "gpu: {power_limit_w: 300}\nexecution: {timeout_seconds: 20}\nrandom_seed: 3\n"
    )
    result = pytester.runpytest_subprocess("--llem-cycles=1", "--llem-isolation=process")
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(["*boom on purpose*", "*killed by SIGKILL*", "*timeout: no result after 20 s*"])
    assert driver_state(driver)["calls"] == [SET, RESTORE] * 3
    assert journals(pytester) == []


def test_ctrl_c_restores_the_limit(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    driver = project(pytester, monkeypatch, HEAD + "gpu: {power_limit_w: 300}\nrandom_seed: 6\n")
    result = pytester.runpytest_subprocess("--llem-cycles=1")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert driver_state(driver)["calls"] == [SET, RESTORE]
    assert journals(pytester) == []


def test_sigterm_to_pytest_restores_the_limit(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    driver = project(pytester, monkeypatch, HEAD + "gpu: {power_limit_w: 300}\nrandom_seed: 8\n")
    result = pytester.runpytest_subprocess("--llem-cycles=1")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert driver_state(driver)["calls"] == [SET, RESTORE]
    assert journals(pytester) == []
    result.stdout.fnmatch_lines(["*SIGTERM: the GPU settings are being restored before pytest stops*"])


def test_the_idle_baseline_is_measured_again_under_each_limit(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fake GPU idles at min(900 W, its limit): a baseline kept from the 300 W item is not the 500 W item's."""
    measured = HEAD.replace("baseline: {enabled: false}", "baseline: {enabled: true, duration_seconds: 5}")
    assert measured != HEAD
    project(pytester, monkeypatch, measured + "sweep: {gpu.power_limit_w: [300, 500]}\n")
    result = pytester.runpytest_subprocess("--llem-cycles=1", "--junitxml=out.xml")
    result.assert_outcomes(passed=2)
    for r in results(pytester):
        limit, m = r["config"]["gpu"]["power_limit_w"], r["metrics"]
        assert m["idle_power_origin"] == "measured before load"
        assert m["idle_power_w"] == pytest.approx(float(limit), rel=0.05)


def test_a_session_killed_by_sigkill_leaves_a_journal_that_doctor_restores(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    driver = project(pytester, monkeypatch, HEAD + "gpu: {power_limit_w: 300, locked_clocks_mhz: [900, 1400]}\n"
                     "random_seed: 7\n")  # fmt: skip
    result = pytester.runpytest_subprocess("--llem-cycles=1")
    assert result.ret == -9
    assert driver_state(driver)["gpus"]["0"] == {"limit_w": 300.0, "clocks": [900, 1400]}
    [journal] = journals(pytester)
    install(FakeGPUs([900.0], driver=driver), None)
    try:
        assert main(["doctor", "--restore", str(pytester.path / ".llem")]) == 0
    finally:
        uninstall()
    assert driver_state(driver)["gpus"]["0"] == {"limit_w": 700.0, "clocks": None}
    assert not journal.exists()
    assert "restored GPU 0: power limit 700 W, clocks unlocked" in capsys.readouterr().out


def test_a_limit_out_of_range_is_a_skip_and_without_the_right_an_item_fails_in_one_line(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = (
        HEAD
        + "experiments:\n  - {id: too-high, gpu: {power_limit_w: 900}}\n  - {id: no-right, gpu: {power_limit_w: 300}}\n"
    )
    driver = project(pytester, monkeypatch, study, root=False)
    result = pytester.runpytest_subprocess("--llem-cycles=1", "-rs")
    result.assert_outcomes(skipped=1, failed=1)
    result.stdout.fnmatch_lines(["*SKIPPED*gpu.power_limit_w: 900 W is outside what GPU 0 allows (100-700 W)*"])
    failure = re.search(r"_+ no-right cycle 1 _+\n(.*?)\n", result.stdout.str())
    assert failure is not None
    assert failure.group(1) == (
        f"no-right cycle 1: {NEEDS_RIGHT}: set GPU 0's power limit to 300 W was refused (Insufficient Permissions)"
    )
    assert driver_state(driver)["calls"] == []


def test_without_a_gpu_a_study_that_sets_one_has_skipped_configs(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project(pytester, monkeypatch, HEAD + "gpu: {power_limit_w: 300}\nexperiments: [{id: a}, {id: b, gpu: null}]\n")
    monkeypatch.setenv("LLEM_PLATFORM", "cpu")
    result = pytester.runpytest_subprocess("--llem-cycles=1", "-rs", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["*b[[]cycle1[]]*", "*invalid-1*"])
    assert "a[cycle1]" not in result.stdout.str()
