"""What runs inside an isolated item's child process: set up, run the experiment, send back the outcome.

The child is forked from a forkserver that imported the heavy modules once (never CUDA), so it starts in milliseconds
with torch and transformers already loaded, and anything it does to CUDA, memory or the process dies with it.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from ..config.models import ExperimentConfig
from ..energy.baseline import IdleBaselines
from ..errors import LlemError, PhaseError, last_frame


@dataclass
class ChildJob:
    """Everything the child needs, picklable. Import paths (``module:name``) stand for code the child imports."""

    config: ExperimentConfig
    backend_path: str
    meter_choice: str
    idle_baselines: IdleBaselines
    environ: dict[str, str]
    study_dir: Path | None = None
    cache_dir: Path | None = None
    setup_paths: list[str] = field(default_factory=list)


def _die_with_parent() -> None:
    """Linux: be SIGKILLed when the forkserver exits (it does when pytest dies), so a killed session leaves no item."""
    import ctypes
    import signal

    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def child_main(conn: Connection, job: ChildJob, stderr_path: str) -> None:
    """Entry point of the child. Sends exactly one dict: ``{"ok": True, "metrics": json, "idle": IdleBaselines}`` or
    ``{"ok": False, "message": ..., "where": ..., "traceback": ...}``; a crash sends nothing."""
    os.setsid()  # its own process group: the parent can kill it with everything it started
    _die_with_parent()
    fd = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ.clear()  # the forkserver's environment is from when it started; the item's is now
    os.environ.update(job.environ)
    outcome: dict[str, Any]
    try:
        from ..backends import load
        from ..energy.opening import open_meter
        from .execute import run_experiment

        for path in job.setup_paths:
            load(path)()
        meter = open_meter(job.meter_choice, job.config.energy.gpu_indices)  # type: ignore[arg-type]
        factory = load(job.backend_path)
        metrics = run_experiment(
            job.config,
            study_dir=job.study_dir,
            cache_dir=job.cache_dir,
            backend_factory=lambda _name: factory(),
            meter=meter,
            idle_baselines=job.idle_baselines,
        )
        outcome = {"ok": True, "metrics": metrics.model_dump_json(), "idle": job.idle_baselines}
    except LlemError as exc:
        cause = exc.cause if isinstance(exc, PhaseError) else exc
        explained = isinstance(cause, LlemError)  # the user's own words suffice; anything else gets its traceback
        story = "" if explained else traceback.format_exc()
        outcome = {"ok": False, "message": str(exc), "where": last_frame(cause), "traceback": story}
    except BaseException as exc:  # anything else is still the item's failure, told in one line
        message = f"{type(exc).__name__}: {exc}"
        outcome = {"ok": False, "message": message, "where": last_frame(exc), "traceback": traceback.format_exc()}
    conn.send(outcome)
    conn.close()
