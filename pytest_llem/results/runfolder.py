"""A run folder read back from disk, for ``llem report``, ``llem compare`` and ``llem merge``, and the merge of several
run folders (shards of one study run, or runs of different studies) into one.

What the plugin writes while it runs (``RunStore``) is read here without pytest: the manifest says which items exist
and how they ended, ``results/`` holds the measured ones, ``env.json`` the machine.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from ..files import current_umask, write_json
from .environment import Environment
from .schema import ItemResult
from .session import SessionResults, StudyOverview
from .store import (
    ENVIRONMENT,
    FINISHED,
    MANIFEST,
    RESULTS,
    RUNS,
    SUMMARY,
    ItemEntry,
    RunFolderError,
    latest_run,
    manifest_entries,
    read_manifest,
    read_result,
)

# An item's identity inside a merge: skipped configs have no cycle, so their label (experiment_id) tells them apart.
MergeKey = tuple[str, str, str, int | None]


class RunFolder:
    """One run folder as it is on disk; every file is read when first asked for."""

    def __init__(self, folder: Path, manifest: dict[str, Any]) -> None:
        self.folder = folder
        self.manifest = manifest

    @classmethod
    def open(cls, path: Path | str) -> RunFolder:
        """``path`` is a run folder, or a folder of runs (``.llem/runs``) or a results folder (``.llem``), which mean
        their latest run."""
        folder = _locate(Path(path))
        return cls(folder, read_manifest(folder))

    @property
    def run_id(self) -> str:
        return str(self.manifest.get("run_id") or self.folder.name)

    @property
    def status(self) -> str:
        return str(self.manifest.get("status", "unknown"))

    @property
    def shards(self) -> set[tuple[int, int]]:
        """The shards (I, N) this run holds: its own ``--llem-shard``, or those a merge put together."""
        labels = [self.manifest.get("shard"), *self.manifest.get("shards", [])]
        found = set()
        for label in labels:
            index, _, count = str(label or "").partition("/")
            if index.isdigit() and count.isdigit():
                found.add((int(index), int(count)))
        return found

    @property
    def studies(self) -> dict[str, str]:
        """Study nodeid → study_design_hash."""
        return dict(self.manifest.get("studies", {}))

    @cached_property
    def entries(self) -> list[ItemEntry]:
        return manifest_entries(self.folder, self.manifest)

    @cached_property
    def environment(self) -> Environment | None:
        """The machine the run measured on: env.json, or else the first result that recorded one."""
        path = self.folder / ENVIRONMENT
        if path.is_file():
            try:
                return Environment.model_validate_json(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise RunFolderError(f"{path} is not a readable environment: {exc}") from None
        return next((r.environment for r in self.results if r.environment is not None), None)

    @cached_property
    def results(self) -> list[ItemResult]:
        """Every passed item's result, in manifest order, read once; an unreadable one is an error (a merge must not
        lose it)."""
        return [self.result(entry) for entry in self.entries if entry.status == "passed" and entry.result_file]

    def result(self, entry: ItemEntry) -> ItemResult:
        return read_result(self.folder, entry)

    def cycle_order(self, study: str) -> str:
        """How the study's items were laid out, as the manifest records it."""
        return str(self.manifest.get("cycle_order", {}).get(study) or "unknown")

    def session(self) -> SessionResults:
        """The run as the end of a pytest session would have seen it: its studies, passed results and failures."""
        session = SessionResults()
        for study, study_hash in self.studies.items():
            session.add_study(self._overview(study, study_hash))
        for result in self.results:
            session.add_result(result)
        for entry in self.entries:
            if entry.status == "failed" and entry.cycle is not None:
                measured = self.result(entry) if entry.result_file else None
                session.add_failure(entry.study, entry.experiment_id, measured)
        return session

    def _overview(self, study: str, study_hash: str) -> StudyOverview:
        entries = [e for e in self.entries if e.study == study]
        measured = [e for e in entries if e.cycle is not None]
        return StudyOverview(
            path=study,
            study_design_hash=study_hash,
            experiment_ids=list(dict.fromkeys(e.experiment_id for e in measured)),
            n_cycles=max((e.cycle or 0 for e in measured), default=0),
            cycle_order=self.cycle_order(study),
            skipped=[(e.experiment_id, e.error or "") for e in entries if e.cycle is None],
        )


def _locate(path: Path) -> Path:
    if (path / MANIFEST).is_file():
        return path
    if not path.is_dir():
        raise RunFolderError(f"{path}: no such run folder")
    for runs_dir in (path / RUNS, path):  # a results folder (.llem) or a folder of runs (.llem/runs)
        latest = latest_run(runs_dir)
        if latest is not None:
            return latest
    raise RunFolderError(f"{path} is not a run folder (no {MANIFEST}) and holds no runs")


# -- merge ------------------------------------------------------------------------------------------------------------


@dataclass
class _Chosen:
    """The entry a merge keeps for one item, and the run folder it comes from."""

    entry: ItemEntry
    source: RunFolder


def merge(folders: Sequence[RunFolder], out: Path) -> RunFolder:
    """One run folder at ``out`` (missing or empty) holding every item of ``folders``.

    Refused: a study with two design hashes (two different studies under one name), and an item in two runs unless
    exactly one of them passed it (then that one is kept); skipped configs, which never ran, are kept once.
    The folder is built beside ``out`` and renamed into place, so a refusal midway leaves nothing behind."""
    if not folders:
        raise RunFolderError("nothing to merge")
    _check_distinct(folders)
    _check_shards(folders)
    _check_out(out)
    studies = _merged_studies(folders)
    chosen = _choose_entries(folders)
    out.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    building.chmod(0o777 & ~current_umask())  # mkdtemp makes 0700; a run folder is for the team to read
    try:
        _write_merged(building, out.name, folders, studies, chosen)
        os.replace(building, out)  # over an empty folder too (POSIX)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return RunFolder.open(out)


def _write_merged(
    folder: Path, run_id: str, folders: Sequence[RunFolder], studies: dict[str, str], chosen: list[_Chosen]
) -> None:
    entries = _copy_results(chosen, folder)
    environments = _environments(folders)
    if environments:
        write_json(folder / ENVIRONMENT, next(iter(environments.values())))
    write_json(folder / MANIFEST, _manifest(run_id, folders, studies, entries, environments))
    write_json(folder / SUMMARY, RunFolder.open(folder).session().summary_document())


def _check_distinct(folders: Sequence[RunFolder]) -> None:
    seen: dict[Path, RunFolder] = {}
    for folder in folders:
        resolved = folder.folder.resolve()
        if resolved in seen:
            raise RunFolderError(f"{folder.folder} is given twice")
        seen[resolved] = folder


def _check_shards(folders: Sequence[RunFolder]) -> None:
    splits = {count: f for f in folders for _, count in f.shards}
    if len(splits) > 1:
        (a, first), (b, second) = list(splits.items())[:2]
        raise RunFolderError(
            f"{first.folder} is a shard of {a} but {second.folder} a shard of {b}: shards of different splits "
            "do not add up to one run"
        )


def missing_shards(folders: Sequence[RunFolder]) -> list[str]:
    """The shards (``I/N``) of the split the inputs come from that none of them is."""
    shards = {shard for f in folders for shard in f.shards}
    if not shards:
        return []
    count = next(iter(shards))[1]  # one split: _check_shards refused mixed ones
    present = {index for index, _ in shards}
    return [f"{i}/{count}" for i in range(1, count + 1) if i not in present]


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunFolderError(f"{out} already exists and is not empty: merge into a new folder")


def _merged_studies(folders: Sequence[RunFolder]) -> dict[str, str]:
    studies: dict[str, str] = {}
    source: dict[str, RunFolder] = {}
    for folder in folders:
        for study, study_hash in folder.studies.items():
            known = studies.setdefault(study, study_hash)
            if known != study_hash:
                raise RunFolderError(
                    f"study {study!r} has design hash {known} in {source[study].folder} but {study_hash} in "
                    f"{folder.folder}: they are different studies and cannot be merged"
                )
            source.setdefault(study, folder)
    return studies


def _merge_key(entry: ItemEntry) -> MergeKey:
    return (entry.study, entry.study_design_hash, entry.experiment_id, entry.cycle)


def _choose_entries(folders: Sequence[RunFolder]) -> list[_Chosen]:
    """Every item once, in the order it first appears."""
    candidates: dict[MergeKey, list[_Chosen]] = {}
    for folder in folders:
        for entry in folder.entries:
            candidates.setdefault(_merge_key(entry), []).append(_Chosen(entry, folder))
    return [_choose(found) for found in candidates.values()]


def _choose(found: list[_Chosen]) -> _Chosen:
    if len(found) == 1 or found[0].entry.cycle is None:
        return found[0]
    passed = [c for c in found if c.entry.status == "passed"]
    if len(passed) == 1:
        return passed[0]
    where = ", ".join(f"{c.source.folder} ({c.entry.status})" for c in found)
    raise RunFolderError(
        f"{found[0].entry.nodeid} [{found[0].entry.study_design_hash}] is in {where}: an item may be in several runs "
        "only when exactly one of them passed it"
    )


def _copy_results(chosen: list[_Chosen], out: Path) -> list[ItemEntry]:
    """The kept entries, their result files (passed and measured-then-failed alike) copied under ``out``."""
    (out / RESULTS).mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    entries = []
    for choice in chosen:
        entry = ItemEntry(**vars(choice.entry))
        if entry.result_file:
            name = _unused(Path(entry.result_file).name, used)
            entry.result_file = f"{RESULTS}/{name}"
            write_json(out / entry.result_file, choice.source.result(choice.entry).model_dump(mode="json"))
        entries.append(entry)
    return entries


def _unused(name: str, used: set[str]) -> str:
    """File names come from the study's stem, so two study files of one name in different folders may clash."""
    candidate, n = name, 1
    while candidate in used:
        n += 1
        candidate = f"{Path(name).stem}-{n}.json"
    used.add(candidate)
    return candidate


def _environments(folders: Sequence[RunFolder]) -> dict[str, dict[str, Any]]:
    """env.json of each run that has one, by run id, as written."""
    found = {}
    for folder in folders:
        environment = folder.environment if (folder.folder / ENVIRONMENT).is_file() else None
        if environment is not None:
            found[folder.run_id] = environment.model_dump(mode="json")
    return found


def _manifest(
    run_id: str,
    folders: Sequence[RunFolder],
    studies: dict[str, str],
    entries: list[ItemEntry],
    environments: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    started = [f.manifest["started_at"] for f in folders if f.manifest.get("started_at") is not None]
    finished = [f.manifest["finished_at"] for f in folders if f.manifest.get("finished_at") is not None]
    missing = missing_shards(folders)
    manifest: dict[str, Any] = {
        "run_id": run_id,
        # a missing shard's items were never registered: the run is incomplete although every item it lists finished
        "status": "complete" if all(e.status in FINISHED for e in entries) and not missing else "incomplete",
        "started_at": min(started, default=None),
        "finished_at": max(finished, default=None),
        "studies": studies,
        "items": [vars(entry) for entry in entries],
        "merged_from": [f.run_id for f in folders],
        # The layout cannot be read back from concatenated shards, so it is taken from the inputs now.
        "cycle_order": {study: _agreed_cycle_order(folders, study) for study in studies},
    }
    shards = sorted({shard for f in folders for shard in f.shards})
    if shards:
        manifest["shards"] = [f"{index}/{count}" for index, count in shards]
    if missing:
        manifest["missing_shards"] = missing
    fingerprints = {Environment.model_validate(env).fingerprint for env in environments.values()}
    if len(fingerprints) > 1:  # env.json keeps the first; the others must not vanish
        manifest["environments"] = environments
    return manifest


def _agreed_cycle_order(folders: Sequence[RunFolder], study: str) -> str:
    orders = {f.cycle_order(study) for f in folders if study in f.studies} - {"unknown"}
    return orders.pop() if len(orders) == 1 else "mixed" if orders else "unknown"
