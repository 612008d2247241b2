"""pytest hooks of pytest-llem. Each hook only delegates: the work lives in ``items`` and the library modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from .config.models import BACKENDS, CycleOrder
from .items import StudyFile, check_execution_options, is_study_file, record_report, session_key
from .report.table import render_session
from .results.session import SessionResults


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("llem", "pytest-llem: LLM inference energy benchmarks")
    group.addoption(
        "--llem-cycles",
        dest="llem_cycles",
        type=int,
        default=None,
        metavar="N",
        help="cycles (repetitions of every experiment); beats the study's execution.n_cycles",
    )
    group.addoption(
        "--llem-cycle-order",
        dest="llem_cycle_order",
        default=None,
        choices=[o.value for o in CycleOrder],
        help="how cycles are laid out (default interleaved)",
    )
    group.addoption(
        "--llem-shuffle-seed",
        dest="llem_shuffle_seed",
        type=int,
        default=None,
        metavar="N",
        help="seed of the shuffled order (default: derived from the study design hash)",
    )
    group.addoption(
        "--llem-cache-dir",
        dest="llem_cache_dir",
        default=None,
        metavar="DIR",
        help="where built-in models are materialised (default $LLEM_CACHE_DIR or ~/.cache/pytest-llem)",
    )
    parser.addini("llem_cycles", "default number of cycles when neither the command line nor the study says")
    parser.addini("llem_cycle_order", "default cycle order: sequential, interleaved or shuffled")
    parser.addini("llem_cache_dir", "where built-in models are materialised")


class _ReportListener:
    """Receives every test report of the session and keeps the results (xdist workers' reports carry them too,
    but the study overviews are only known where collection ran: gathering them on the controller is still to do)."""

    def __init__(self, results: SessionResults) -> None:
        self.results = results

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        record_report(self.results, report)


def pytest_configure(config: pytest.Config) -> None:
    check_execution_options(config)
    config.stash[session_key] = SessionResults()
    config.pluginmanager.register(_ReportListener(config.stash[session_key]), "llem-report-listener")
    for backend in BACKENDS:
        config.addinivalue_line("markers", f"{backend}: a pytest-llem item that runs on the {backend} backend")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> StudyFile | None:
    if is_study_file(file_path):
        return StudyFile.from_parent(parent, path=file_path)
    return None


def pytest_report_collectionfinish(config: pytest.Config) -> list[str]:
    return [study.header_line() for study in config.stash[session_key].studies.values()]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    lines = render_session(config.stash[session_key])
    if lines and not config.option.collectonly:
        terminalreporter.write_sep("=", "pytest-llem summary")
        for line in lines:
            terminalreporter.write_line(line)
