"""Report files a session was asked for (--llem-json, --llem-csv, --llem-markdown and $GITHUB_STEP_SUMMARY,
--llem-plots), written once at the end by the process that saw every report (the controller under xdist)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from .errors import LlemError
from .results.session import SessionResults
from .results.store import RunStore, write_json

STEP_SUMMARY = "GITHUB_STEP_SUMMARY"


def check_plots_available(config: pytest.Config) -> None:
    """--llem-plots without matplotlib is refused at start, not after an hour of benchmarks."""
    if config.getoption("llem_plots") and importlib.util.find_spec("matplotlib") is None:
        raise pytest.UsageError("pytest-llem: --llem-plots needs matplotlib: pip install 'pytest-llem[plots]'")


def _path(config: pytest.Config, option: str) -> Path | None:
    value = config.getoption(option)
    return (config.invocation_params.dir / Path(value).expanduser()) if value else None


def write_reports(config: pytest.Config, session: SessionResults, store: RunStore | None) -> None:
    option = config.option
    if hasattr(config, "workerinput") or option.collectonly:
        return
    from .report import export

    run_id = store.run_id if store is not None else None
    written: list[str] = []
    json_path = _path(config, "llem_json")
    if json_path is not None:
        write_json(json_path, export.json_document(session, run_id))
        written.append(str(json_path))
    csv_path = _path(config, "llem_csv")
    if csv_path is not None:
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        csv_path.write_text(export.csv_text(session), encoding="utf-8")
        written.append(str(csv_path))
    markdown_targets = [p for p in (_path(config, "llem_markdown"), _step_summary()) if p is not None]
    if markdown_targets:
        text = export.markdown_text(session, run_id)
        for target in markdown_targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("a", encoding="utf-8") as out:  # appended: a CI job's steps share one summary
                out.write(text)
            written.append(str(target))
    plots_dir = _path(config, "llem_plots")
    if plots_dir is not None:
        written += _plots(session, plots_dir)
    if written:
        session.notes.append(f"pytest-llem: wrote {', '.join(written)}")


def _step_summary() -> Path | None:
    value = os.environ.get(STEP_SUMMARY)
    return Path(value) if value else None


def _plots(session: SessionResults, plots_dir: Path) -> list[str]:
    from .report.plots import write_plots

    try:
        paths = write_plots([*session.results], plots_dir)
    except LlemError as exc:
        session.notes.append(f"pytest-llem: no plots: {exc}")
        return []
    return [f"{len(paths)} plots in {plots_dir}"] if paths else []
