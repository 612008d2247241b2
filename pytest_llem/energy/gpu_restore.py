"""``llem doctor --restore``: put back the GPU settings that sessions on this host left changed (their journals), and
say what was done and what was left (another host's journal, a session still running, a GPU not visible)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .gpu_journal import JOURNALS, OTHER_HOST, RUNNING, changes_in, folder_lock, restored, whose
from .gpu_settings import NEEDS_RIGHT, physical_index_of, restore_changes, zeus_gpus


def restore_journals(results_dir: Path) -> tuple[list[str], bool]:
    """Restore the GPUs of every journal under ``results_dir`` left by a session on this host that is gone; (what was
    done, in lines; whether everything that was left here is back). A results folder that does not exist is not
    "nothing to restore": it may be the wrong one."""
    where = results_dir.absolute()
    if not results_dir.is_dir():
        return [
            f"GPU settings: {where} does not exist, so no journal was looked at; name the results folder the sessions "
            "used: llem doctor --restore RESULTS_DIR"
        ], False
    folder = results_dir / JOURNALS
    journals = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if not journals:
        return [f"GPU settings: nothing to restore (no journal in {folder.absolute()})"], True
    lines: list[str] = []
    complete = True
    gpus: Any = None
    with folder_lock(folder):
        for path in journals:
            try:
                document = json.loads(path.read_text())
                changes = changes_in(document)
            except FileNotFoundError:  # restored meanwhile by a session that found it
                continue
            except (OSError, ValueError, TypeError, KeyError) as exc:
                lines.append(f"{path}: unreadable journal ({exc}); left in place")
                complete = False
                continue
            owner = whose(document)
            if owner == OTHER_HOST:
                lines.append(
                    f"{path}: written on host {document.get('host')}, not this one ({socket.gethostname()}); left in "
                    "place: run llem doctor --restore there"
                )
                continue
            if owner == RUNNING:
                lines.append(f"{path}: its session (pid {document['pid']}) is still running; it restores its own GPUs")
                continue
            if gpus is None:
                with _every_gpu():
                    gpus = zeus_gpus()
            by_physical = {physical_index_of(gpus, i): i for i in range(len(gpus))}
            missing = [c.physical_index for c in changes if c.physical_index not in by_physical]
            if missing:
                lines.append(f"{path}: GPU {', '.join(map(str, missing))} not visible here; left in place")
                complete = False
                continue
            problems = restore_changes(gpus, {by_physical[c.physical_index]: c for c in changes})
            if problems:
                lines.append(f"{path}: could not restore {'; '.join(problems.values())}; left in place ({NEEDS_RIGHT})")
                complete = False
                continue
            path.unlink()
            lines.append(f"{path}: restored " + "; ".join(restored(c) for c in changes))
    return lines, complete


@contextlib.contextmanager
def _every_gpu() -> Iterator[None]:
    """Journals name GPUs by the driver's index: doctor looks at every GPU, whatever CUDA_VISIBLE_DEVICES says."""
    before = os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    try:
        yield
    finally:
        if before is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = before
