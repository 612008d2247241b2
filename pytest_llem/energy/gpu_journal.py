"""The journal of GPU settings changed by a session (``<results dir>/gpu-settings/<host>-<pid>.json``): written before
anything changes, each GPU keeping the earliest value recorded for it (the machine's own, even after a restore was
refused), its entry gone once restored. Journals of sessions that are gone are restored by the next item on those GPUs
or by ``llem doctor --restore``; whose a journal is decides which."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import LlemError
from ..files import write_json

JOURNALS = "gpu-settings"


class GpuSettingsError(LlemError):
    """The settings could not be applied or restored (no right, zeusd said no, an unreadable journal, …): the item
    fails."""


@dataclass
class Change:
    """One GPU, as the journal keeps it: what to put back. ``power_limit_mw``: the limit before (None: not changed);
    ``clocks_locked``: its clocks were (or were about to be) locked, so they are reset."""

    physical_index: int
    power_limit_mw: int | None = None
    clocks_locked: bool = False


class Journal:
    """This process's journal file (one per process: under pytest-xdist each worker changes only its own GPUs), in a
    folder shared with other sessions' journals."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.path = folder / f"{socket.gethostname()}-{os.getpid()}.json" if folder is not None else None

    def record(self, changes: Sequence[Change]) -> dict[int, Change]:
        """Journal ``changes`` with what is already journaled here, keeping for each GPU the earliest value recorded
        (a restore that was refused left a GPU changed: what it had before is what goes back). Returns the entries by
        physical index."""
        merged = {c.physical_index: c for c in self.entries()}
        for change in changes:
            earlier = merged.get(change.physical_index)
            if earlier is None:
                merged[change.physical_index] = Change(**asdict(change))
            else:
                merged[change.physical_index] = Change(
                    change.physical_index,
                    earlier.power_limit_mw if earlier.power_limit_mw is not None else change.power_limit_mw,
                    earlier.clocks_locked or change.clocks_locked,
                )
        self._write(list(merged.values()))
        return merged

    def forget(self, physical: Iterable[int]) -> None:
        """These GPUs are back as they were: their entries go, and the file when none is left."""
        gone = set(physical)
        if self.path is None or not gone or not self.path.exists():
            return
        left = [c for c in self.entries() if c.physical_index not in gone]
        if left:
            self._write(left)
        else:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def entries(self) -> list[Change]:
        """What this process's journal holds."""
        if self.path is None or not self.path.exists():
            return []
        try:
            return changes_in(json.loads(self.path.read_text()))
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise GpuSettingsError(
                f"the journal {self.path} is unreadable ({exc}); see what it held, then remove it"
            ) from None

    def _write(self, changes: Sequence[Change]) -> None:
        if self.path is None:
            return
        document = {"host": socket.gethostname(), "pid": os.getpid(), "written_at": time.time(),
                    "gpus": [asdict(c) for c in changes]}  # fmt: skip
        write_json(self.path, document)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """While journals left by other sessions are restored (here or by doctor): one process at a time."""
        if self.folder is None:
            yield
            return
        with folder_lock(self.folder):
            yield

    def left_behind(self) -> Iterator[tuple[Path, dict[str, Any], list[Change]]]:
        """The journals (path, document, entries) of this host's sessions that are gone; unreadable ones are doctor's
        to report."""
        if self.folder is None or not self.folder.is_dir():
            return
        for path in sorted(self.folder.glob("*.json")):
            if path == self.path:
                continue
            try:
                document = json.loads(path.read_text())
                changes = changes_in(document)
            except (OSError, ValueError, TypeError, KeyError):
                continue
            if whose(document) == GONE:
                yield path, document, changes


def changes_in(document: dict[str, Any]) -> list[Change]:
    return [Change(**entry) for entry in document["gpus"]]


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    import fcntl  # POSIX; imported here so that importing this module stays free

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def rewrite(path: Path, document: dict[str, Any], left: Sequence[Change]) -> None:
    """A journal of another session, less the entries restored (it goes when none is left)."""
    if left:
        write_json(path, {**document, "gpus": [asdict(c) for c in left]})
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def restored(change: Change) -> str:
    """What putting ``change`` back did, in words."""
    what = []
    if change.power_limit_mw is not None:
        what.append(f"power limit {change.power_limit_mw / 1000:g} W")
    if change.clocks_locked:
        what.append("clocks unlocked")
    return f"GPU {change.physical_index}: " + ", ".join(what or ["nothing changed"])


RUNNING, GONE, OTHER_HOST = "running", "gone", "other host"


def whose(document: dict[str, Any]) -> str:
    """Whose a journal is: another host's (its GPUs are not here), a session on this host that still runs (its
    settings are its own to restore), or one that is gone."""
    if document.get("host") != socket.gethostname():
        return OTHER_HOST
    pid = int(document.get("pid") or 0)
    if pid <= 0 or pid == os.getpid():
        return GONE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return GONE
    except PermissionError:
        return RUNNING
    return RUNNING
