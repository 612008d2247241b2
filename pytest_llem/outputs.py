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


FILE_OPTIONS = {"llem_json": "--llem-json", "llem_csv": "--llem-csv", "llem_markdown": "--llem-markdown"}


def check_report_options(config: pytest.Config) -> None:
    """What can be known at start is refused at start, not after an hour of benchmarks: --llem-plots without
    matplotlib, a report file that is a folder, a plots folder that is a file."""
    if config.getoption("llem_plots") and importlib.util.find_spec("matplotlib") is None:
        raise pytest.UsageError("pytest-llem: --llem-plots needs matplotlib: pip install 'pytest-llem[plots]'")
    for option, flag in FILE_OPTIONS.items():
        path = _path(config, option)
        if path is not None and path.is_dir():
            raise pytest.UsageError(f"pytest-llem: {flag}: {path} is a folder; give a file path")
    plots = _path(config, "llem_plots")
    if plots is not None and plots.exists() and not plots.is_dir():
        raise pytest.UsageError(f"pytest-llem: --llem-plots: {plots} is a file; give a folder")


def _path(config: pytest.Config, option: str) -> Path | None:
    value = config.getoption(option)
    return (config.invocation_params.dir / Path(value).expanduser()) if value else None


def write_reports(config: pytest.Config, session: SessionResults, store: RunStore | None) -> None:
    """Each report asked for; one that cannot be written is a line under the summary, and the others are still
    written (the benchmark is done by now: losing everything to one bad path would be worse)."""
    if hasattr(config, "workerinput") or config.option.collectonly:
        return
    from .report import export

    run_id = store.run_id if store is not None else None
    written: list[str] = []
    targets = [
        (
            "--llem-json",
            _path(config, "llem_json"),
            lambda path: write_json(path, export.json_document(session, run_id)),
        ),
        ("--llem-csv", _path(config, "llem_csv"), lambda path: _write_text(path, export.csv_text(session))),
    ]
    has_content = bool(session.studies or session.results or session.failed_results or session.verdicts)
    markdown_paths = [("--llem-markdown", _path(config, "llem_markdown"))]
    if has_content:  # the plugin loads in every pytest run: plain test sessions leave the job summary alone
        markdown_paths.append((f"${STEP_SUMMARY}", _step_summary()))
    for flag, markdown_path in markdown_paths:
        targets.append((flag, markdown_path, lambda path: _append_text(path, export.markdown_text(session, run_id))))
    for flag, path, write in targets:
        if path is None:
            continue
        try:
            write(path)
        except OSError as exc:
            session.notes.append(f"pytest-llem: cannot write {flag} {path}: {exc}")
        else:
            written.append(str(path))
    plots_dir = _path(config, "llem_plots")
    if plots_dir is not None:
        written += _plots(session, plots_dir)
    if written:
        session.notes.append(f"pytest-llem: wrote {', '.join(written)}")


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _append_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:  # appended: a CI job's steps share one summary
        out.write(text)


def _step_summary() -> Path | None:
    value = os.environ.get(STEP_SUMMARY)
    return Path(value) if value else None


def _plots(session: SessionResults, plots_dir: Path) -> list[str]:
    from .report.plots import write_plots

    try:
        paths = write_plots(session, plots_dir)
    except (LlemError, OSError) as exc:
        session.notes.append(f"pytest-llem: no plots: {exc}")
        return []
    return [f"{len(paths)} plots in {plots_dir}"] if paths else []
