"""The run folder seen from pytest: opened at configure (or resumed), fed by collection and by test reports, closed at
the end of the session. Only the process that receives every report (the controller under xdist) writes it."""

from __future__ import annotations

from pathlib import Path

import pytest

from .errors import LlemError
from .items import RESULT_PROPERTY, RESUMED_PROPERTY, ExperimentItem, InvalidConfigItem, store_key
from .measurement import MeasurementSession
from .results.schema import ItemResult
from .results.session import SessionResults
from .results.store import ItemEntry, RunStore

__all__ = ["close", "item_started", "open_store", "record", "register_items", "store_key"]
DEFAULT_RESULTS_DIR = ".llem"


def runs_dir(config: pytest.Config) -> Path:
    chosen = config.getoption("llem_results_dir") or config.getini("llem_results_dir") or DEFAULT_RESULTS_DIR
    path = Path(chosen).expanduser()
    return (path if path.is_absolute() else config.rootpath / path) / "runs"


def open_store(config: pytest.Config) -> RunStore | None:
    """A new run folder, or the resumed one; None in xdist workers and for --collect-only."""
    if hasattr(config, "workerinput") or config.option.collectonly:
        return None
    resume = config.getoption("llem_resume")
    try:
        if resume is not None:
            return RunStore.resume(runs_dir(config), None if resume == "latest" else resume)
        return RunStore.create(runs_dir(config))
    except LlemError as exc:
        raise pytest.UsageError(f"pytest-llem: {exc}") from None
    except OSError as exc:
        raise pytest.UsageError(f"pytest-llem: cannot create the run folder under {runs_dir(config)}: {exc}") from None


def register_items(store: RunStore | None, items: list[pytest.Item]) -> None:
    if store is None:
        return
    entries = []
    for item in items:
        if isinstance(item, ExperimentItem):
            study = item.parent.nodeid if item.parent else ""
            entries.append(ItemEntry(item.nodeid, study, item.study_design_hash, item.experiment_id, item.cycle))
        elif isinstance(item, InvalidConfigItem):
            study = item.parent.nodeid if item.parent else ""
            reason = item.skipped.reason
            entries.append(
                ItemEntry(item.nodeid, study, item.study_design_hash, item.name, None, "skipped", error=reason)
            )
    store.register(entries)


def item_started(store: RunStore | None, nodeid: str) -> None:
    if store is not None:
        store.started(nodeid)


def record(store: RunStore | None, report: pytest.TestReport) -> None:
    """An item's outcome (and result) into the manifest and results/, from its report."""
    if store is None or nodeid_unknown(store, report.nodeid):
        return
    properties = dict(report.user_properties)
    result = ItemResult.model_validate_json(str(properties[RESULT_PROPERTY])) if RESULT_PROPERTY in properties else None
    if report.when == "call":
        status = "passed" if report.passed else "failed" if report.failed else "skipped"
        error = None if report.passed else _first_lines(report)
        store.finished(report.nodeid, status, error=error, result=result, resumed=RESUMED_PROPERTY in properties)
    elif report.when == "setup" and not report.passed:
        store.finished(report.nodeid, "skipped" if report.skipped else "failed", error=_first_lines(report))
    elif report.when == "teardown" and report.failed:
        store.finished(report.nodeid, "failed", error=_first_lines(report), result=result)


def nodeid_unknown(store: RunStore, nodeid: str) -> bool:
    return nodeid not in store.items


def _first_lines(report: pytest.TestReport, limit: int = 20) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2])
    return "\n".join(report.longreprtext.splitlines()[:limit])


def resumed_status(report: pytest.TestReport) -> tuple[str, str, str] | None:
    """A replayed item counts as passed and says so: ``R`` in the progress line, ``RESUMED`` in verbose mode."""
    if report.when == "call" and report.passed and any(n == RESUMED_PROPERTY for n, _ in report.user_properties):
        return "passed", "R", "RESUMED"
    return None


def close(store: RunStore | None, session: SessionResults, exitstatus: int, measuring: MeasurementSession) -> None:
    if store is None:
        return
    if session.results or session.failed_results:
        store.write_environment(measuring.environment())
    store.write_summary(session.summary_document())
    if exitstatus == pytest.ExitCode.INTERRUPTED:
        store.close("interrupted")
    else:
        pending = any(e.status in ("pending", "running") for e in store.items.values())
        store.close("incomplete" if pending else "complete")
