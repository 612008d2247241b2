"""The run folder: ``.llem/runs/<run-id>/`` with manifest.json, env.json, results/ and summary.json.

Every file is written whole to a temporary name and renamed into place, so a reader (or a resumed session after a kill)
only ever sees complete JSON. The manifest is rewritten on every state change of an item.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import LlemError
from ..files import write_json
from ..study.ids import safe_name
from .environment import Environment
from .schema import ItemResult

# The layout: <results dir, default .llem>/runs/<run-id>/{manifest.json, results/, env.json, summary.json} and
# <results dir>/baselines/<name>.json.
DEFAULT_RESULTS_DIR = ".llem"
RUNS = "runs"
BASELINES = "baselines"
MANIFEST = "manifest.json"
RESULTS = "results"
ENVIRONMENT = "env.json"
SUMMARY = "summary.json"
FINISHED = ("passed", "failed", "skipped")  # any other state (pending, running, interrupted) has yet to run
# (study, study_design_hash, experiment_id, cycle): an item's identity across runs. The study is in it because two
# study files may hold the same experiments (the hash leaves execution settings out).
ItemKey = tuple[str, str, str, int]
RUN_ID = re.compile(r"\d{8}T\d{6}-[0-9a-f]{6}")


class RunFolderError(LlemError):
    """A run folder cannot be used as asked (no run to resume, an unreadable manifest)."""


def read_manifest(folder: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunFolderError(f"cannot read {folder / MANIFEST}: {exc}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("items", []), list):
        raise RunFolderError(f"{folder / MANIFEST} is not a run manifest")
    return manifest


def manifest_entries(folder: Path, manifest: dict[str, Any]) -> list[ItemEntry]:
    try:
        return [ItemEntry(**raw) for raw in manifest.get("items", [])]
    except TypeError as exc:
        raise RunFolderError(f"{folder / MANIFEST} has an item this version cannot read: {exc}") from None


def read_result(folder: Path, entry: ItemEntry) -> ItemResult:
    """The result file of an entry; one that is missing or unreadable is an error the caller decides about."""
    assert entry.result_file is not None
    path = folder / entry.result_file
    try:
        return ItemResult.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RunFolderError(f"cannot read the result of {entry.nodeid} ({path}): {first_line}") from None


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)


def latest_run(runs_dir: Path) -> Path | None:
    runs = sorted(p for p in runs_dir.glob("*") if (p / MANIFEST).is_file()) if runs_dir.is_dir() else []
    return runs[-1] if runs else None


def _file_name(key: ItemKey) -> str:
    study, study_hash, experiment_id, cycle = key
    return safe_name(f"{Path(study).stem}-{study_hash}-{experiment_id}-cycle{cycle}") + ".json"


@dataclass
class ItemEntry:
    nodeid: str
    study: str
    study_design_hash: str
    experiment_id: str
    cycle: int | None  # None for a skipped (invalid) config
    status: str = "pending"  # pending → running → passed | failed | skipped
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    result_file: str | None = None
    resumed: bool = False

    @property
    def key(self) -> ItemKey | None:
        return None if self.cycle is None else (self.study, self.study_design_hash, self.experiment_id, self.cycle)


class RunStore:
    """One run folder, owned by one process (the controller under xdist)."""

    def __init__(self, folder: Path, *, resumed: bool = False) -> None:
        self.folder = folder
        self.run_id = folder.name
        self.resumed = resumed
        self.items: dict[str, ItemEntry] = {}
        self.studies: dict[str, str] = {}  # study → study_design_hash
        self.cycle_orders: dict[str, str] = {}  # study → how its items were laid out
        self.shard: str | None = None  # "I/N" of --llem-shard, so that `llem merge` can tell a shard is missing
        self.status = "running"
        self.touched = False  # an item started or finished in this session
        self.interrupted = False
        self.started_at = time.time()
        self.finished_at: float | None = None
        self._previous: dict[ItemKey, ItemEntry] = {}

    @classmethod
    def create(cls, runs_dir: Path, shard: str | None = None) -> RunStore:
        store = cls(runs_dir / new_run_id())
        store.shard = shard
        (store.folder / RESULTS).mkdir(parents=True)
        store.save_manifest()
        return store

    @classmethod
    def resume(cls, runs_dir: Path, run_id: str | None) -> RunStore:
        """Continue a run: its passed items are reused, everything else runs again in the same folder."""
        folder = latest_run(runs_dir) if run_id is None else runs_dir / run_id
        if folder is None or not (folder / MANIFEST).is_file():
            known = ", ".join(p.name for p in sorted(runs_dir.glob("*"))) if runs_dir.is_dir() else ""
            wanted = "no run to resume" if run_id is None else f"no run {run_id!r}"
            raise RunFolderError(f"--llem-resume: {wanted} in {runs_dir}" + (f"; runs: {known}" if known else ""))
        try:
            manifest = read_manifest(folder)
            entries = manifest_entries(folder, manifest)
        except RunFolderError as exc:
            raise RunFolderError(f"--llem-resume: {exc}") from None
        store = cls(folder, resumed=True)
        store.started_at = manifest.get("started_at", store.started_at)
        store.studies = dict(manifest.get("studies", {}))
        store.cycle_orders = dict(manifest.get("cycle_order", {}))
        store.shard = manifest.get("shard")
        for entry in entries:
            store.items[entry.nodeid] = entry
            if entry.status == "passed" and entry.key and entry.result_file:
                store._previous[entry.key] = entry
        (folder / RESULTS).mkdir(exist_ok=True)
        return store

    # -- what the session tells the store ----------------------------------------------------------------------------

    def resume_conflict(self, study: str, study_design_hash: str) -> str | None:
        """Why this study cannot be resumed (its design changed since the run), or None."""
        recorded = self.studies.get(study)
        if self.resumed and recorded is not None and recorded != study_design_hash:
            return (
                f"cannot resume run {self.run_id}: the study changed since (design hash {recorded} → "
                f"{study_design_hash}); restore it or run without --llem-resume"
            )
        return None

    def previous_result(self, key: ItemKey) -> ItemResult | None:
        """The result an item got when it passed in the resumed run, or None if it must run."""
        entry = self._previous.get(key)
        if entry is None or entry.result_file is None:
            return None
        try:
            return read_result(self.folder, entry)
        except RunFolderError:
            return None  # a result that cannot be read is run again

    def register(self, entries: Iterable[ItemEntry], cycle_orders: Mapping[str, str]) -> None:
        """The items collected now; an item known from the resumed run keeps its record until it runs again."""
        self.cycle_orders.update(cycle_orders)
        for entry in entries:
            self.studies[entry.study] = entry.study_design_hash
            known = self.items.get(entry.nodeid)
            if known is None or known.key != entry.key:
                self.items[entry.nodeid] = entry
            elif known.status != "passed":
                known.status, known.error = entry.status, entry.error
        self.save_manifest()

    def started(self, nodeid: str) -> None:
        entry = self.items.get(nodeid)
        if entry is not None:
            entry.status, entry.started_at, entry.error = "running", time.time(), None
            self.touched = True
            self.save_manifest()

    def finished(
        self, nodeid: str, status: str, *, error: str | None = None, result: ItemResult | None = None, resumed=False
    ) -> None:
        entry = self.items.get(nodeid)
        if entry is None:
            return
        if result is not None and entry.key is not None:
            entry.result_file = f"{RESULTS}/{_file_name(entry.key)}"
            write_json(self.folder / entry.result_file, result.model_dump(mode="json"))
        entry.status, entry.error, entry.finished_at, entry.resumed = status, error, time.time(), resumed
        self.touched = True
        self.save_manifest()

    def write_environment(self, environment: Environment) -> None:
        write_json(self.folder / ENVIRONMENT, environment.model_dump(mode="json"))

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        write_json(self.folder / SUMMARY, summary)

    def close(self, status: str) -> None:
        """``complete`` (every item done), ``incomplete`` (some still pending) or ``interrupted`` (then the item that
        was running says so too)."""
        if status == "interrupted":
            for entry in self.items.values():
                if entry.status == "running":
                    entry.status, entry.finished_at = "interrupted", time.time()
        self.status, self.finished_at = status, time.time()
        self.save_manifest()

    def save_manifest(self) -> None:
        manifest = {
            "run_id": self.run_id,
            "status": self.status,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "studies": self.studies,
            "cycle_order": self.cycle_orders,
            **({"shard": self.shard} if self.shard else {}),
            "items": [vars(entry) for entry in self.items.values()],
        }
        write_json(self.folder / MANIFEST, manifest)
