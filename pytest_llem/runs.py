"""The run folder seen from pytest: opened at configure (or resumed), fed by collection and by test reports, closed at
the end of the session. Only the process that receives every report (the controller under xdist) writes it."""

from __future__ import annotations

import json
from collections.abc import Set as AbstractSet
from pathlib import Path

import pytest

from .errors import LlemError
from .items import ITEM_PROPERTY, RESUMED_PROPERTY, StudyItem, is_study_file
from .keys import session_key, store_key
from .measurement import MeasurementSession
from .options import results_dir
from .results import baselines
from .results.runfolder import RunFolder
from .results.schema import ItemResult
from .results.session import SessionResults
from .results.store import BASELINES, FINISHED, RUN_ID, RUNS, ItemEntry, RunStore
from .scheduling import shard_label

__all__ = [
    "check_save_name",
    "close",
    "finish",
    "interrupted",
    "item_started",
    "open_resumed",
    "record",
    "register_items",
    "save_baseline",
    "store_key",
]


expected_key = pytest.StashKey[set[str]]()  # study items xdist workers collected (the controller collects none)


def runs_dir(config: pytest.Config) -> Path:
    return results_dir(config) / RUNS


def baselines_dir(config: pytest.Config) -> Path:
    return runs_dir(config).parent / BASELINES


def _writes_runs(config: pytest.Config) -> bool:
    """Only a session that runs items writes a run folder: not xdist workers, --collect-only, --setup-plan/-only."""
    option = config.option
    return not (
        hasattr(config, "workerinput")
        or option.collectonly
        or getattr(option, "setupplan", False)
        or getattr(option, "setuponly", False)
    )


def open_resumed(config: pytest.Config) -> RunStore | None:
    """The run folder --llem-resume names (before collection: a changed study must be refused while collecting)."""
    resume = config.getoption("llem_resume")
    if resume is None or config.option.collectonly:
        return None  # xdist workers open it too, to replay what passed; only the controller writes it
    if resume != "latest" and not RUN_ID.fullmatch(resume) and Path(resume).exists():
        raise pytest.UsageError(
            f"pytest-llem: --llem-resume read {resume!r} as a run id; write --llem-resume=RUN_ID or put the paths first"
        )
    try:
        store = RunStore.resume(runs_dir(config), None if resume == "latest" else resume)
    except LlemError as exc:
        raise pytest.UsageError(f"pytest-llem: {exc}") from None
    if store.shard != shard_label(config):  # one folder holds one shard's items, or a whole run's
        recorded = f"shard {store.shard}" if store.shard else "no shard"
        raise pytest.UsageError(
            f"pytest-llem: --llem-resume: run {store.run_id} was {recorded}; resume it with "
            + (f"--llem-shard={store.shard}" if store.shard else "no --llem-shard")
        )
    return store


def _reported_entry(report: pytest.TestReport) -> ItemEntry | None:
    """The run-folder entry a study item's report carries, or None for other items."""
    for name, value in report.user_properties:
        if name == ITEM_PROPERTY:
            fields = json.loads(str(value))
            return ItemEntry(**fields) if "nodeid" in fields else None  # llem_energy tests carry an empty one
    return None


def _cycle_orders(config: pytest.Config, entries: list[ItemEntry]) -> dict[str, str]:
    studies = config.stash[session_key].studies
    return {study: studies[study].cycle_order for study in {entry.study for entry in entries}}


def _open_store(config: pytest.Config) -> RunStore:
    """This session's run folder, created on first need (only sessions with study items have one)."""
    store = config.stash[store_key]
    if store is None:
        try:
            store = config.stash[store_key] = RunStore.create(runs_dir(config), shard=shard_label(config))
        except OSError as exc:
            raise pytest.UsageError(f"pytest-llem: cannot create the run folder in {runs_dir(config)}: {exc}") from None
    return store


def record_empty_shard(config: pytest.Config) -> None:
    """A shard with nothing to run still leaves its run folder (no items, complete), so that ``llem merge`` of the
    split's folders knows the shard ran."""
    if _writes_runs(config) and config.stash[store_key] is None:
        _open_store(config).close("complete")


def register_items(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The collected study items into the run folder. Under xdist the controller collects nothing: ``record``
    registers each item from its first report instead."""
    if not _writes_runs(config):
        return
    entries = [item.entry() for item in items if isinstance(item, StudyItem)]
    if entries:
        _open_store(config).register(entries, _cycle_orders(config, entries))


def expect_items(config: pytest.Config, nodeids: list[str]) -> None:
    """Under xdist, the study items a worker collected: an item that never reports (-x, a lost worker) must leave the
    run ``incomplete``, as a pending entry does without xdist."""
    config.stash[expected_key].update(n for n in nodeids if is_study_file(Path(n.split("::")[0])))


def item_started(config: pytest.Config, nodeid: str) -> None:
    store = config.stash[store_key]
    if store is not None and _writes_runs(config):
        store.started(nodeid)


def interrupted(store: RunStore | None) -> None:
    """Ctrl-C: the session will end as ``interrupted`` (a collection error ends pytest the same way, but is not)."""
    if store is not None:
        store.interrupted = True


def record(config: pytest.Config, report: pytest.TestReport, carried: list[ItemResult]) -> None:
    """An item's outcome (and the result its report carried) into the manifest and results/."""
    if not _writes_runs(config):
        return
    store = config.stash[store_key]
    if store is None or report.nodeid not in store.items:
        entry = _reported_entry(report)
        if entry is None:
            return
        store = _open_store(config)  # first seen here: an xdist worker collected and started it
        store.register([entry], _cycle_orders(config, [entry]))
        store.started(entry.nodeid)
    properties = dict(report.user_properties)
    result = carried[0] if carried else None
    if report.when == "call":
        status = "passed" if report.passed else "failed" if report.failed else "skipped"
        error = None if report.passed else _first_lines(report)
        store.finished(report.nodeid, status, error=error, result=result, resumed=RESUMED_PROPERTY in properties)
    elif report.when == "setup" and not report.passed:
        store.finished(report.nodeid, "skipped" if report.skipped else "failed", error=_first_lines(report))
    elif report.when == "teardown" and report.failed:
        store.finished(report.nodeid, "failed", error=_first_lines(report), result=result)
    elif report.when not in ("setup", "call", "teardown") and report.failed:  # xdist: the worker crashed in it
        store.finished(report.nodeid, "failed", error=_first_lines(report))


def _first_lines(report: pytest.TestReport, limit: int = 20) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2])
    return "\n".join(report.longreprtext.splitlines()[:limit])


def resumed_status(report: pytest.TestReport) -> tuple[str, str, str] | None:
    """A replayed item counts as passed and says so: ``R`` in the progress line, ``RESUMED`` in verbose mode."""
    if report.when == "call" and report.passed and any(n == RESUMED_PROPERTY for n, _ in report.user_properties):
        return "passed", "R", "RESUMED"
    return None


def check_save_name(config: pytest.Config) -> None:
    name = config.getoption("llem_save")
    if name is not None:
        try:
            baselines.check_name(name)
        except LlemError as exc:
            raise pytest.UsageError(f"pytest-llem: {exc}") from None


def save_baseline(
    config: pytest.Config, run: RunFolder | None, session: SessionResults, measuring: MeasurementSession
) -> str | None:
    """--llem-save=NAME: this run's passed results (the whole run folder's, when resumed) as a named baseline."""
    name = config.getoption("llem_save")
    if name is None or hasattr(config, "workerinput"):
        return None
    results = list(run.results) if run is not None else []
    results += [r for r in session.results if r.kind == "fixture"]  # fixture windows are not in the run folder
    if not results:
        return f"pytest-llem: nothing passed, so no baseline {name!r} was saved"
    baseline = baselines.build(name, results, run.run_id if run else None, measuring.environment())
    path = baselines.save(baseline, baselines_dir(config))
    return f"pytest-llem: baseline {name!r} saved to {path} ({len(baseline.experiments)} experiments)"


def finish(config: pytest.Config, session: SessionResults, measuring: MeasurementSession) -> None:
    """End of session: close the run folder, save the baseline asked for, and say where it went."""
    if not _writes_runs(config):
        return
    expected: set[str] = config.stash.get(expected_key, set())
    run = close(config.stash[store_key], session, measuring, expected)
    saved = save_baseline(config, run, session, measuring)
    if saved:
        session.notes.append(saved)


def close(
    store: RunStore | None,
    session: SessionResults,
    measuring: MeasurementSession,
    expected: AbstractSet[str] = frozenset(),
) -> RunFolder | None:
    """Final status and summary; returns the run as written (its results read once, for the summary and a baseline).
    A session that ran nothing (a resume refused while collecting) leaves the run as it was; the summary covers every
    passed result and every study in the folder, this session's and the resumed run's."""
    if store is None:
        return None
    if store.interrupted:
        store.close("interrupted")
    if not store.touched:
        return None
    if session.results or session.failed_results:
        store.write_environment(measuring.environment())
    try:
        run = RunFolder.open(store.folder)
        store.write_summary(run.session().summary_document())
    except LlemError as exc:
        session.notes.append(f"pytest-llem: no summary.json for run {store.run_id}: {exc}")
        run = None
    if not store.interrupted:
        pending = any(e.status not in FINISHED for e in store.items.values()) or bool(expected - set(store.items))
        store.close("incomplete" if pending else "complete")
    return run
