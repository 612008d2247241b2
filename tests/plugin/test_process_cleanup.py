"""When the ``pytest`` command returns, no process it started is left: not the forkserver isolated items are forked
from, not multiprocessing's resource tracker, not an item's own process; and a later session in the same process
starts a fresh forkserver with its own preloads."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.studies import FAST

# The temp project's conftest notes every process the run started, with its start time (a pid can be reused): each
# item's process, from inside it, and, at the start of the session's end (before the plugin cleans up), every
# descendant of each pytest process (the controller and, under xdist, the workers).
CONFTEST = """
import os
from pathlib import Path

import pytest

PIDS = Path(__file__).parent / "pids.txt"


def stat(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[1]), fields[19]  # parent, start time


def note(pid, what):
    try:
        parent, started = stat(pid)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\\0", b" ").decode(errors="replace")
    except OSError:  # already gone
        return
    with PIDS.open("a") as handle:
        handle.write(f"{pid}\\t{started}\\t{what}\\t{cmdline[:400]}\\t{parent}\\n")


def note_item_process():
    note(os.getpid(), "item")


def pytest_llem_child_setup():
    return [note_item_process]


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session):
    note(os.getpid(), "pytest")
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                children.setdefault(stat(entry.name)[0], []).append(int(entry.name))
            except OSError:
                continue
    todo = list(children.get(os.getpid(), []))
    while todo:
        pid = todo.pop()
        note(pid, "descendant")
        todo += children.get(pid, [])
"""


def still_there(pid: int, started: str) -> bool:
    """The process noted is alive (a zombie is dead; another process under a reused pid is not it)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[19] == started and fields[0] != "Z"


Noted = tuple[int, str, str, str, int]


def noted(pytester: pytest.Pytester, name: str = "pids.txt") -> list[Noted]:
    """(pid, start time, "item" / "pytest" / "descendant", command line, parent pid) of every process the conftest
    noted."""
    lines = (pytester.path / name).read_text().splitlines()
    return [
        (int(pid), started, what, cmd, int(parent))
        for pid, started, what, cmd, parent in (line.split("\t") for line in lines)
    ]


def servers(processes: list[Noted]) -> list[Noted]:
    """The forkservers among them (the items, forked from one, share its command line)."""
    return [p for p in processes if p[2] == "descendant" and "multiprocessing.forkserver import main" in p[3]]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("workers", [[], ["-n", "1"]], ids=["plain", "xdist"])
def test_no_process_the_plugin_started_outlives_pytest(pytester: pytest.Pytester, workers: list[str]) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makefile(".yaml", study_c=FAST + "warmup: {enabled: false}\n")
    result = pytester.runpytest_subprocess("--llem-cycles=2", "--llem-isolation=process", *workers)
    left = [p for p in noted(pytester) if still_there(p[0], p[1])]  # right after pytest returned
    result.assert_outcomes(passed=2)
    assert [p[2] for p in noted(pytester)].count("item") == 2  # the check saw the items' processes ...
    assert len({p[0] for p in servers(noted(pytester))}) == 1  # ... and the forkserver they were forked from
    assert left == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_later_sessions_in_the_same_process_reuse_the_forkserver_of_their_kind(pytester: pytest.Pytester) -> None:
    """In-process sessions (pytester's, an IDE's): a second pytorch session forks its items from the server of the
    first (it would pay seconds of imports again otherwise); a vLLM session's item comes from a server of its own
    that preloads vLLM, and the pytorch one stays for later pytorch sessions (stopped when the process exits)."""
    pytester.makeconftest(CONFTEST)
    started = []
    for run, backend in enumerate(("pytorch", "pytorch", "vllm")):
        study = FAST + f"warmup: {{enabled: false}}\nbackend: {backend}\n"
        if backend == "vllm":  # its item fails at once: the server's preloads are what this test is about
            study = study.replace("builtin:tiny-llama", str(pytester.path / "no-such-model"))
        (pytester.path / "study_s.yaml").write_text(study)
        result = pytester.runpytest("--llem-cycles=1", "--llem-isolation=process")
        result.assert_outcomes(**{"passed" if backend == "pytorch" else "failed": 1})
        (pytester.path / "pids.txt").rename(pytester.path / f"pids_{run}.txt")
        (item,) = [p for p in noted(pytester, f"pids_{run}.txt") if p[2] == "item"]
        server = next(p for p in servers(noted(pytester, f"pids_{run}.txt")) if p[0] == item[4])
        started.append((server, "pytest_llem.runner.preload_vllm" in server[3]))
    (first, first_vllm), (second, second_vllm), (third, third_vllm) = started
    assert first[0] == second[0] and not first_vllm and not second_vllm
    assert third[0] != first[0] and third_vllm
    assert still_there(first[0], first[1])  # kept for the next pytorch session
