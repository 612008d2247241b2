"""What runs inside an isolated item's child process: set up, run the experiment, send back the outcome.

The child is forked from a forkserver that imported the heavy modules once (never CUDA), so it starts in milliseconds
with torch and transformers already loaded, and anything it does to CUDA, memory or the process dies with it.
"""

from __future__ import annotations

import os
import sys
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
    # CUDA numbers GPUs fastest first by default, NVML (Zeus, the meter) by PCI bus: on a host with mixed GPUs
    # "cuda:0" would not be the GPU the meter reads as 0. Set before anything starts CUDA, unless the user chose.
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    outcome: dict[str, Any]
    meter = None
    try:
        from ..backends import load
        from ..backends.placement import gpu_scope
        from ..energy.opening import open_meter
        from .scenarios import run_item

        factory = load(job.backend_path)  # an import only: which engine decides the environment below
        for name, value in _vllm_import_environ(factory).items():
            os.environ.setdefault(name, value)
        for path in job.setup_paths:
            load(path)()
        meter = open_meter(job.meter_choice, gpu_scope(job.config))  # type: ignore[arg-type]
        metrics = run_item(
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
    if meter is not None:
        try:
            meter.close()  # its background work ends here, not in multiprocessing's exit (which joins, 30 s)
        except Exception as exc:  # the result stands; the item's stderr says what went wrong
            print(f"pytest-llem: closing the meter failed: {type(exc).__name__}: {exc}", file=sys.stderr)
    conn.send(outcome)
    conn.close()


def _vllm_import_environ(factory: Any) -> dict[str, str]:
    """For a vLLM item, the variables importing vLLM set in the forkserver (``preload_vllm``), lost when the
    environment was replaced: vLLM relies on them from the start (PYTORCH_NVML_BASED_CUDA_CHECK=1 keeps torch's CUDA
    checks from initialising CUDA before it forks its engine). Nothing for other items, or a server without vLLM."""
    preload = sys.modules.get("pytest_llem.runner.preload_vllm")
    if preload is None:
        return {}
    from ..backends.vllm import VLLMBackend

    is_vllm = isinstance(factory, type) and issubclass(factory, VLLMBackend)
    return dict(preload.IMPORT_ENVIRON) if is_vllm else {}
