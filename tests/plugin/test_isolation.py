"""Items in child processes: crashes, kills, hangs and exceptions cost their item only, classified; no orphans; the
manifest records every item; isolation none and process report the same schema."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.studies import CRASHY_CONFTEST, CRASHY_HEAD, FAST

# Only the item that hangs has a short timeout (it hangs at once, in load): the others may take as long as this
# machine needs (600 s: a safety net, not a limit any of them comes near).
CRASHY_STUDY = CRASHY_HEAD + "execution: {timeout_seconds: 600}\nsweep:\n  random_seed: [0, 1, 2, 4]\n"
HANG_STUDY = CRASHY_HEAD + "execution: {timeout_seconds: 8}\nexperiments:\n  - {id: crashy-3, random_seed: 3}\n"


def manifest(pytester: pytest.Pytester) -> dict:
    (run,) = sorted((pytester.path / ".llem" / "runs").iterdir())
    return json.loads((run / "manifest.json").read_text())


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


def gone(pid: int, within_s: float = 10.0) -> bool:
    """SIGKILL is delivered asynchronously: a killed process may still be on its way out for a moment."""
    deadline = time.monotonic() + within_s
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_each_way_an_item_can_die_fails_that_item_alone_with_the_reason(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CRASHY_CONFTEST)
    pytester.makefile(".yaml", study_crash=CRASHY_STUDY, study_hang=HANG_STUDY)
    result = pytester.runpytest("--llem-cycles=1", "--show-capture=no")  # captured: the RuntimeError's traceback
    result.assert_outcomes(passed=1, failed=4)
    result.stdout.re_match_lines(
        [
            r".*crashy-1 cycle 1: the item's process was killed by SIGSEGV \(segmentation fault\)",
            r".*crashy-2 cycle 1: the item's process was killed by SIGKILL",
            r".*crashy-4 cycle 1: generate failed: RuntimeError: boom on purpose",
            r".*crashy-3 cycle 1: timeout: no result after 8 s; the item's process was killed \(SIGKILL\)",
        ],
        consecutive=False,
    )
    assert "Traceback" not in result.stdout.str()
    child, grandchild = (int(p) for p in (pytester.path / "pids.txt").read_text().split())
    assert gone(child) and gone(grandchild)  # the hung item's process and what it started are gone
    items = {i["experiment_id"]: i for i in manifest(pytester)["items"]}
    assert {k: v["status"] for k, v in items.items()} == {
        "crashy-0": "passed",
        "crashy-1": "failed",
        "crashy-2": "failed",
        "crashy-3": "failed",
        "crashy-4": "failed",
    }
    assert "SIGSEGV" in items["crashy-1"]["error"] and "timeout" in items["crashy-3"]["error"]
    assert items["crashy-0"]["result_file"] and manifest(pytester)["status"] == "complete"


def test_isolation_none_and_process_report_the_same_schema(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", study_same=FAST)
    shapes = {}
    for isolation in ("none", "process"):
        result = pytester.runpytest(
            "--llem-cycles=1", f"--llem-isolation={isolation}", f"--llem-results-dir={isolation}"
        )
        result.assert_outcomes(passed=1)
        (run,) = (pytester.path / isolation / "runs").iterdir()
        (result_file,) = (run / "results").iterdir()
        data = json.loads(result_file.read_text())
        assert data["metrics"]["output_tokens"] == 16
        shapes[isolation] = (sorted(data), sorted(data["metrics"]))
    assert shapes["none"] == shapes["process"]


def test_gaps_are_slept_with_a_countdown_and_no_gaps_removes_them(pytester: pytest.Pytester) -> None:
    pytester.makefile(
        ".yaml",
        study_gaps=FAST + "execution: {config_gap_seconds: 0.4, cycle_gap_seconds: 0.7, isolation: none}\n"
        "sweep:\n  n: [1, 2]\n",
    )
    started = time.monotonic()
    result = pytester.runpytest("--llem-cycles=2", "-v")
    elapsed = time.monotonic() - started
    result.assert_outcomes(passed=4)
    # interleaved: n1 c1, n2 c1 (config gap), n1 c2 (cycle gap), n2 c2 (config gap) = 1.5 s at least
    assert elapsed >= 1.5
    assert result.stdout.str().count("config gap: 1 s") == 2 and result.stdout.str().count("cycle gap: 1 s") == 1
    quick = pytester.runpytest("--llem-cycles=2", "-v", "--llem-no-gaps")
    quick.assert_outcomes(passed=4)
    assert "gap:" not in quick.stdout.str()
