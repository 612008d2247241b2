"""A cache folder of built models: build once in a temp folder, rename into place atomically, under a file lock.

Safe when several processes (xdist workers, isolated items) ask for the same model at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)

_MARKER = ".complete"  # written last into a built folder: its presence means the folder is whole


def is_complete(folder: Path) -> bool:
    return (folder / _MARKER).is_file()


def _temp_prefix(target: Path) -> str:
    return f".{target.name}.tmp-"


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[bool]:
    """Hold an exclusive flock on ``path``; yields False where the filesystem refuses locks.

    Without the lock two processes may both build, which wastes time but stays correct thanks to the rename.
    """
    with open(path, "a+b") as handle:  # append mode: a concurrent opener never truncates anything
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        except OSError:  # e.g. some network filesystems
            log.warning("cannot lock %s; building without a lock", path)
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def remove_stale(root: Path, target: Path) -> None:
    """Under the lock nobody else is building, so temp folders left here come from a killed build."""
    for leftover in root.glob(_temp_prefix(target) + "*"):
        shutil.rmtree(leftover, ignore_errors=True)
    if target.exists():  # a folder without its marker was damaged by hand; it cannot be trusted
        shutil.rmtree(target)


def build_into(spec: str, version: int, build: Callable[[Path], None], target: Path) -> None:
    """Build in a temp folder beside ``target``, then rename it into place in one atomic step."""
    started = time.monotonic()
    log.info("building built-in model %s into %s (once per cache folder)", spec, target)
    temp = Path(tempfile.mkdtemp(prefix=_temp_prefix(target), dir=target.parent))
    temp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
    try:
        build(temp)
        marker = {"spec": spec, "version": version, "built_at": time.time()}
        (temp / _MARKER).write_text(json.dumps(marker) + "\n", encoding="utf-8")
        try:
            os.rename(temp, target)
        except OSError:
            if not is_complete(target):  # not "someone else won the race": a real failure
                raise
            log.info("built-in model %s appeared meanwhile; discarding this copy", target)
    finally:
        shutil.rmtree(temp, ignore_errors=True)  # no-op after a successful rename
    log.info("built %s in %.1f s", target, time.monotonic() - started)
