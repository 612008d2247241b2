"""The run folder survives a SIGKILL of pytest itself, and --llem-resume finishes the run without redoing work."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests.studies import CRASHY_CONFTEST, CRASHY_HEAD

STUDY = CRASHY_HEAD + "execution: {isolation: none}\nsweep:\n  random_seed: [10, 11, 5, 12]\n"


def run_folder(pytester: pytest.Pytester) -> Path:
    (run,) = (pytester.path / ".llem" / "runs").iterdir()
    return run


def statuses(run: Path) -> dict[str, str]:
    manifest = json.loads((run / "manifest.json").read_text())
    return {f"{i['experiment_id']}/{i['cycle']}": i["status"] for i in manifest["items"]}


def test_a_killed_session_resumes_without_redoing_finished_items(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeconftest(CRASHY_CONFTEST)
    pytester.makefile(".yaml", study_k=STUDY)
    monkeypatch.setenv("KILL_PYTEST", "1")
    killed = pytester.runpytest_subprocess("--llem-cycles=1")
    assert killed.ret == -signal.SIGKILL
    run = run_folder(pytester)
    for path in run.rglob("*.json"):
        json.loads(path.read_text())  # every file on disk is complete JSON
    assert json.loads((run / "manifest.json").read_text())["status"] == "running"
    assert statuses(run) == {
        "crashy-10/1": "passed",
        "crashy-11/1": "passed",
        "crashy-5/1": "running",
        "crashy-12/1": "pending",
    }
    finished = {p.name: p.read_text() for p in (run / "results").iterdir()}
    assert len(finished) == 2

    monkeypatch.delenv("KILL_PYTEST")
    resumed = pytester.runpytest("--llem-cycles=1", "--llem-resume", "-v")
    resumed.assert_outcomes(passed=4)
    resumed.stdout.re_match_lines(
        [r".*crashy-10\[cycle1\] RESUMED", r".*crashy-11\[cycle1\] RESUMED", r".*crashy-5\[cycle1\] PASSED"],
        consecutive=False,
    )
    assert run_folder(pytester) == run  # the same folder, now complete
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete" and set(statuses(run).values()) == {"passed"}
    for name, text in finished.items():
        assert (run / "results" / name).read_text() == text  # not measured again
    assert len(list((run / "results").iterdir())) == 4
    summary = json.loads((run / "summary.json").read_text())
    assert summary["study_k.yaml"]["experiments"]["crashy-10"]["cycles_passed"] == 1

    more = pytester.runpytest("--llem-cycles=2", "--llem-resume", "-v")
    more.assert_outcomes(passed=8)
    assert more.stdout.str().count(" RESUMED") == 4  # topping up cycles keeps the hash and runs only the new ones
    assert len(list((run / "results").iterdir())) == 8


def test_resume_refuses_a_study_that_changed_and_needs_a_run(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CRASHY_CONFTEST)
    nothing = pytester.runpytest("--llem-resume")
    assert nothing.ret == pytest.ExitCode.USAGE_ERROR
    nothing.stderr.fnmatch_lines(["*--llem-resume: no run to resume in *"])

    pytester.makefile(".yaml", study_k=STUDY.replace("[10, 11, 5, 12]", "[10]"))
    pytester.runpytest("--llem-cycles=1").assert_outcomes(passed=1)
    pytester.makefile(".yaml", study_k=STUDY.replace("[10, 11, 5, 12]", "[10]").replace("n: 2", "n: 3"))
    changed = pytester.runpytest("--llem-cycles=1", "--llem-resume")
    changed.stdout.fnmatch_lines(
        ["*study_k.yaml: cannot resume run *: the study changed since (design hash * → *); restore it or run without*"]
    )
    assert "Traceback" not in changed.stdout.str()
    run = run_folder(pytester)  # the refused resume left the run as it was
    assert json.loads((run / "manifest.json").read_text())["status"] == "complete"
    assert json.loads((run / "summary.json").read_text())["study_k.yaml"]["experiments"]["crashy"]["cycles_passed"] == 1

    swallowed = pytester.runpytest("--llem-resume", "study_k.yaml")
    assert swallowed.ret == pytest.ExitCode.USAGE_ERROR
    swallowed.stderr.fnmatch_lines(["*--llem-resume read 'study_k.yaml' as a run id; write --llem-resume=RUN_ID*"])


def test_sessions_without_study_items_write_no_run_folder(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain="def test_one():\n    pass\n")
    pytester.runpytest().assert_outcomes(passed=1)
    pytester.runpytest("--markers")
    assert not (pytester.path / ".llem").exists()


def test_a_backend_that_cannot_be_imported_again_is_one_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        "import functools\nfrom pytest_llem.backends.pytorch import PyTorchBackend\n\n"
        "def pytest_llem_backends():\n    return {'bent': functools.partial(PyTorchBackend)}\n"
    )
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*pytest_llem_backends: 'bent': functools.partial(*cannot be imported again*"])


def test_ctrl_c_leaves_an_interrupted_manifest(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeconftest(CRASHY_CONFTEST)
    pytester.makefile(".yaml", study_k=STUDY)
    monkeypatch.setenv("INTERRUPT_PYTEST", "1")
    result = pytester.runpytest("--llem-cycles=1", no_reraise_ctrlc=True)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    run = run_folder(pytester)
    assert json.loads((run / "manifest.json").read_text())["status"] == "interrupted"
    assert statuses(run)["crashy-11/1"] == "passed" and statuses(run)["crashy-12/1"] == "pending"
    assert statuses(run)["crashy-5/1"] == "interrupted"
