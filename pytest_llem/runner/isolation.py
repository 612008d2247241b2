"""Run one item's work in a fresh child process with a timeout, and say plainly how it ended.

Children come from a forkserver (one per kind of backend, forkserver.py) that preloads torch, transformers and Zeus
without touching the GPU: each child is a fork of that clean server (never of pytest, which may hold CUDA or OpenMP
state), so it pays no import time. The child leads its own process group; whatever it started is killed with it, so
no orphan outlives its item.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from ..energy.baseline import IdleBaselines
from ..errors import LlemError
from ..results.schema import Metrics
from . import forkserver
from .child import ChildJob, child_main

STDERR_TAIL_LINES = 15


class ChildFailure(LlemError):
    """The child did not bring back a result: it timed out, was killed by a signal, exited, or raised. ``killed``:
    it did not end on its own terms (what it held on a GPU is freed only some time after)."""

    def __init__(self, message: str, *, killed: bool = True) -> None:
        super().__init__(message)
        self.killed = killed


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _kill(process: multiprocessing.process.BaseProcess) -> None:
    """SIGKILL the child's process group (and the child itself, in case it had not yet made its group), then reap."""
    if process.pid is not None:
        _kill_group(process.pid)
    if process.is_alive():
        process.kill()
    process.join(timeout=10)


def run_in_child(job: ChildJob, timeout_s: float | None) -> tuple[Metrics, IdleBaselines]:
    """Run the job in a child; its metrics and the idle baselines it may have refreshed, or a ChildFailure."""
    with tempfile.TemporaryDirectory(prefix="llem-child-") as folder:
        stderr_path = Path(folder) / "stderr.txt"
        receiver, sender = multiprocessing.Pipe(duplex=False)
        # Not a daemon: daemons may not start processes, and Zeus (RAPL), vLLM engines and data loaders do.
        process = forkserver.start(job.config.backend, child_main, (sender, job, str(stderr_path)), "pytest-llem-item")
        sender.close()
        assert process.pid is not None
        outcome = None
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        try:
            while outcome is None:
                wait = 0.5 if deadline is None else min(0.5, max(deadline - time.monotonic(), 0.0))
                if receiver.poll(wait):
                    try:
                        outcome = receiver.recv()
                    except EOFError:  # died without a word: classified from the exit code below
                        break
                elif not process.is_alive() and not receiver.poll(0):
                    break
                elif deadline is not None and time.monotonic() >= deadline:
                    _kill(process)
                    raise ChildFailure(
                        f"timeout: no result after {timeout_s:g} s; the item's process was killed (SIGKILL)"
                    )
            process.join(timeout=30)
        finally:
            _kill(process)  # its own leftovers (engine workers, ...) die with the item
            receiver.close()
            stderr_text = _read(stderr_path)
            sys.stderr.write(stderr_text)  # pytest shows it with the item's report
            stderr_tail = "\n".join(stderr_text.splitlines()[-STDERR_TAIL_LINES:])
    if outcome is not None and outcome["ok"]:
        return Metrics.model_validate_json(outcome["metrics"]), outcome["idle"]
    if outcome is not None:
        sys.stderr.write(outcome.get("traceback", ""))  # the whole story, shown with the item's captured stderr
        where = f"\n  raised at {outcome['where']}" if outcome.get("where") else ""
        raise ChildFailure(f"{outcome['message']}{where}", killed=False)
    code = process.exitcode
    tail = "\n  last lines of its stderr:\n    " + "\n    ".join(stderr_tail.splitlines()) if stderr_tail else ""
    if code is not None and code < 0:
        what = {"SIGSEGV": " (segmentation fault)", "SIGKILL": " (out of memory killer, or killed from outside)"}
        name = _signal_name(-code)
        raise ChildFailure(f"the item's process was killed by {name}{what.get(name, '')}{tail}")
    raise ChildFailure(f"the item's process exited with status {code} before reporting a result{tail}")
