"""The regression gate end to end: --llem-save, then --llem-compare with a planted regression (a fake GPU that draws
more power for one experiment), gate items, reports. Fakes only at Zeus's device layer."""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests import studies

FAKES = Path(__file__).parent.parent / "zeus_fakes.py"

# random_seed names the experiment whose GPU draws PLANTED_WATTS in the run under test (env PLANTED_SEED).
STUDY = (
    studies.FAST.replace("baseline: {enabled: false}", "baseline: {enabled: false}\nwarmup: {enabled: false}")
    + "backend: hungry\nexecution: {isolation: none, config_gap_seconds: 0, cycle_gap_seconds: 0}\n"
    + "sweep:\n  random_seed: [1, 2]\n"
)
# Hungry's windows last at least 0.3 s on purpose (Padded): longer than the GPU counter period on any machine, so
# --llem-strict has no measurement warning to fail on. Its power is set before a window opens and kept until after it
# closes, so a window's mean power is the power planted, not a mix with the 100 W around it.
CONFTEST = (
    studies.PADDED_BACKEND
    + """
import os

import zeus.device.gpu
import zeus_fakes


class Hungry(Padded):
    '''The padded pytorch backend on a fake GPU whose power this experiment's random_seed may raise.'''

    def load(self, config, model):
        planted = os.environ.get("PLANTED_SEED") == str(config.random_seed)
        watts = float(os.environ.get("PLANTED_WATTS", "400")) if planted else 100.0
        zeus.device.gpu._gpus.gpus[0].trace.watts = watts
        super().load(config, model)

    def close(self):
        zeus.device.gpu._gpus.gpus[0].trace.watts = 100.0
        super().close()


def pytest_llem_backends():
    return {"hungry": Hungry}


def pytest_configure(config):
    zeus_fakes.install(zeus_fakes.FakeGPUs([100.0], names=[os.environ.get("GPU_NAME", "Fake GPU")]), None)


def pytest_unconfigure(config):
    zeus_fakes.uninstall()
"""
)


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(zeus_fakes=FAKES.read_text())
    pytester.makeconftest(CONFTEST)
    pytester.makefile(".yaml", study_g=STUDY)
    return pytester


def save_baseline(pytester: pytest.Pytester, cycles: int = 3) -> None:
    pytester.runpytest(f"--llem-cycles={cycles}", "--llem-save=base").assert_outcomes(passed=2 * cycles)


def test_a_planted_power_regression_fails_exactly_its_gate_with_the_figures(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_baseline(project)
    monkeypatch.setenv("PLANTED_SEED", "2")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(project.path / "step_summary.md"))
    result = project.runpytest(
        "--llem-cycles=3",
        "--llem-compare=base",
        "--llem-fail=mean_power_w:10%",
        "--llem-json=out/report.json",
        "--llem-csv=out/report.csv",
        "--junitxml=out/junit.xml",
        "-rA",
    )
    result.assert_outcomes(passed=7, failed=1)
    assert "PASSED study_g.yaml::hungry-1[gate]" in result.stdout.str()
    assert "FAILED study_g.yaml::hungry-2[gate] - experiment hungry-2 regressed" in result.stdout.str()
    result.stdout.re_match_lines(
        [
            r"experiment hungry-2 regressed against baseline 'base':",
            # 4x the power: +300%, give or take what a busy machine's scheduling adds to a 0.3 s window
            r"hungry-2: mean_power_w: regressed \(the interval lies beyond \+10%\): "
            r"\+(29\d|30\d)\.\d% \[\+[\d.]+%, \+[\d.]+%\] \(90% interval\); "
            r"baseline (99|10\d)(\.\d+)? W \(n=3\) -> now (39\d|40\d)(\.\d+)? W \(n=3\); p = [\d.e-]+$",
            r"compared with baseline 'base'.*",
            r"experiment\s+cycles\s.*\s+vs base\s+verdict$",
            r"hungry-1\s+3\s.*\s+[+-]\d\.\d% ±[\d.]+\s+unchanged$",
            r"hungry-2\s+3\s.*\s+\+(29\d|30\d)\.\d% ±[\d.]+\s+regressed$",
        ]
    )
    report = json.loads((project.path / "out" / "report.json").read_text())
    outcomes = {v["experiment_id"]: v["verdicts"][0]["outcome"] for v in report["verdicts"]}
    assert outcomes == {"hungry-1": "unchanged", "hungry-2": "regressed"}
    regressed = next(v for v in report["verdicts"] if v["experiment_id"] == "hungry-2")["verdicts"][0]
    assert regressed["baseline"]["n"] == regressed["current"]["n"] == 3
    assert regressed["p_value"] < 0.05 and regressed["ci_low_pct"] > 10 and regressed["confidence"] == 0.9
    assert len(report["results"]) == 6 and report["baseline"] == "base"
    rows = list(csv.DictReader((project.path / "out" / "report.csv").open()))
    experiments = {r["experiment_id"]: r for r in rows if r["level"] == "experiment"}
    assert experiments["hungry-2"]["verdict"] == "regressed" and experiments["hungry-1"]["verdict"] == "unchanged"
    assert float(experiments["hungry-2"]["mean_power_w"]) == pytest.approx(400, rel=0.05)
    assert len([r for r in rows if r["level"] == "item"]) == 6
    summary = (project.path / "step_summary.md").read_text()
    assert "Compared with baseline `base`: 1 regression(s)." in summary and "- **hungry-2** (study_g.yaml)" in summary
    assert "| hungry-2 | 3 |" in summary
    properties = [
        {p.get("name"): p.get("value") for p in case.iter("property")}
        for case in ET.parse(project.path / "out" / "junit.xml").iter("testcase")
        if "[cycle" in case.get("name", "")
    ]
    for found in properties:
        assert float(found["energy_j"]) > 0 and float(found["tokens_per_s"]) > 0 and float(found["ttft_s"]) > 0

    # The default metric is energy per output token when energy was measured: the same experiment regresses. Energy
    # per token also carries the windows' lengths, which a busy machine stretches: 40x the power outweighs that.
    monkeypatch.setenv("PLANTED_WATTS", "4000")
    default = project.runpytest("--llem-cycles=3", "--llem-compare=base", "--llem-fail=50%")
    default.stdout.fnmatch_lines(["*hungry-2: energy_per_output_token_j: regressed (the interval lies beyond +50%)*"])
    assert "FAILED study_g.yaml::hungry-2[gate]" in default.stdout.str()


def test_inconclusive_passes_with_a_warning_and_fails_under_strict(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_baseline(project, cycles=1)
    monkeypatch.setenv("PLANTED_SEED", "1")
    gate = ("--llem-cycles=1", "--llem-compare=base", "--llem-fail=mean_power_w:10%")
    lenient = project.runpytest(*gate)
    lenient.assert_outcomes(passed=4)
    assert lenient.stdout.str().count("GateWarning: experiment") == 2  # 1 cycle a side: neither gate can judge
    lenient.stdout.fnmatch_lines(
        ["*GateWarning: experiment hungry-1: inconclusive against baseline 'base':*", "*fewer than 2 cycles on a side*"]
    )
    strict = project.runpytest(*gate, "--llem-strict")
    strict.assert_outcomes(passed=2, failed=2)
    strict.stdout.fnmatch_lines(["*experiment hungry-1: inconclusive against baseline 'base' (--llem-strict):*"])
    as_errors = project.runpytest(*gate, "-W", "error::pytest_llem.gating.GateWarning")
    as_errors.assert_outcomes(passed=2, failed=2)
    as_errors.stdout.fnmatch_lines(["*experiment hungry-1: inconclusive against baseline 'base':*"])
    assert "Traceback" not in as_errors.stdout.str()


def test_an_experiment_the_baseline_lacks_skips_its_gate_and_only_matching_gates_are_selected(
    project: pytest.Pytester,
) -> None:
    save_baseline(project, cycles=2)
    (project.path / "study_g.yaml").write_text(STUDY.replace("random_seed: [1, 2]", "random_seed: [2, 3]"))
    result = project.runpytest("--llem-cycles=2", "--llem-compare=base", "--llem-fail=mean_power_w:10%", "-rs")
    result.assert_outcomes(passed=5, skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED * baseline 'base' has no experiment hungry-3 (same config hash)"])
    selected = project.runpytest("--llem-cycles=2", "--llem-compare=latest", "-k", "hungry-2", "--co", "-q")
    selected.stdout.fnmatch_lines(
        ["study_g.yaml::hungry-2[cycle1]", "study_g.yaml::hungry-2[cycle2]", "study_g.yaml::hungry-2[gate]"]
    )


def test_a_baseline_from_other_hardware_is_refused_unless_asked(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_baseline(project, cycles=1)
    monkeypatch.setenv("GPU_NAME", "Other GPU")
    refused = project.runpytest("--llem-cycles=1", "--llem-compare=base")
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    refused.stderr.fnmatch_lines(
        [
            "*--llem-compare: baseline 'base' was measured on Fake GPU (700 W limit), driver unknown; "
            "this run is on Other GPU (700 W limit), driver unknown; *--llem-compare-any-hardware*"
        ]
    )
    project.runpytest("--llem-cycles=1", "--llem-compare=base", "--llem-compare-any-hardware").assert_outcomes(passed=4)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--llem-compare=nope"], "*--llem-compare: no baseline 'nope' in *"),
        (["--llem-fail=5%"], "*--llem-fail needs --llem-compare=NAME|PATH|latest*"),
        (["--llem-compare=base", "--llem-fail=watts:5%"], "*--llem-fail: 'watts:5%': unknown metric 'watts'; known:*"),
        (["--llem-compare=base", "--llem-fail=tokens_per_s:lots"], "*write METRIC:PCT (e.g.*"),
        (["--llem-compare=base", "--llem-alpha=2"], "*--llem-alpha: the significance level must be between 0 and 0.5*"),
        (
            ["--llem-compare=base", "-n", "2", "--dist", "worksteal"],
            "*--llem-compare under pytest-xdist needs --dist load (the default), loadfile or loadscope, not worksteal*",
        ),
        (["--llem-json=."], "*--llem-json: * is a folder; give a file path*"),
    ],
)
def test_bad_gate_options_are_one_usage_error(pytester: pytest.Pytester, args: list[str], message: str) -> None:
    baselines = pytester.path / ".llem" / "baselines"
    baselines.mkdir(parents=True)
    (baselines / "base.json").write_text(
        json.dumps({"name": "base", "created_at": 0, "run_id": None, "environment": None, "experiments": {}})
    )
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


WINDOW_TEST = """
import os
import time

import pytest
import zeus.device.gpu


@pytest.mark.slow
def test_serve(llem_energy):
    gpu = zeus.device.gpu._gpus.gpus[0]
    for _ in range(3):  # the same window name again: another cycle of it
        gpu.trace.watts = float(os.environ.get("WINDOW_WATTS", "100"))  # for the whole window
        with llem_energy.measure("serve") as window:
            time.sleep(0.15)  # longer than the GPU counter period, whatever the machine
        gpu.trace.watts = 100.0
        window.output_tokens = 10
"""


def test_llem_energy_windows_are_gated_too(project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    (project.path / "study_g.yaml").unlink()
    project.makepyfile(test_windows=WINDOW_TEST)
    project.runpytest("--llem-save=base").assert_outcomes(passed=1)
    baseline = json.loads((project.path / ".llem" / "baselines" / "base.json").read_text())
    assert len(baseline["experiments"]["fixture:test_windows.py::test_serve::serve"]["cycles"]) == 3
    monkeypatch.setenv("WINDOW_WATTS", "250")
    result = project.runpytest("--llem-compare=base", "--llem-fail=mean_power_w:10%", "-v", "-m", "slow")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*collected 2 items",
            "*test_windows.py::test_serve PASSED*",
            "*test_windows.py::test_serve[[]gate[]] FAILED*",
            "*the llem_energy windows of test_serve regressed against baseline 'base':*",
            "*test_serve::serve: mean_power_w: regressed*",
        ]
    )


def test_reports_that_cannot_be_written_are_a_line_not_a_traceback(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(project.path / "step_summary.md"))
    project.makepyfile(test_plain="def test_ok():\n    pass\n")
    project.runpytest("test_plain.py").assert_outcomes(passed=1)
    assert not (project.path / "step_summary.md").exists()  # a session without llem work leaves the job summary alone

    result = project.runpytest("--llem-cycles=1", "--llem-csv=/proc/llem.csv", "--llem-json=out.json")
    result.assert_outcomes(passed=3)  # the plain test and the study's two items
    result.stdout.fnmatch_lines(["pytest-llem: cannot write --llem-csv /proc/llem.csv: *", "pytest-llem: wrote *"])
    assert json.loads((project.path / "out.json").read_text())["results"]
    assert (project.path / "step_summary.md").read_text().startswith("## pytest-llem run ")
