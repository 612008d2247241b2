"""pytest hooks of pytest-llem. Each hook only delegates: the work lives in ``items``, ``fixtures`` and the library.

``llem_energy`` is imported here so pytest registers it as this plugin's fixture."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from . import gating, outputs, runs, scheduling, sharding, workers
from .config.models import CycleOrder, backend_names
from .energy.meter import METER_CHOICES
from .fixtures import llem_energy as llem_energy
from .fixtures import record_windows
from .gating import comparison_key
from .items import StudyFile, is_study_file, record_report, tag_report
from .keys import measurement_key, session_key, store_key
from .options import EFFECTIVE_EXECUTION_DEFAULTS, check_execution_options, measurement_session, register_backends
from .report.table import render_session
from .results.gate import DEFAULT_ALPHA, DEFAULT_THRESHOLD
from .results.session import SessionResults
from .study.grid import DEFAULT_MAX_EXPERIMENTS, MAX_EXPERIMENTS_KEY


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("llem", "pytest-llem: LLM inference energy benchmarks")

    def option(flag: str, **settings: Any) -> None:
        """``--llem-x-y`` stored as ``llem_x_y``; unset values are None (False for flags) so layers can tell."""
        default = False if settings.get("action") == "store_true" else None
        group.addoption(flag, dest=flag[2:].replace("-", "_"), default=default, **settings)

    option(
        "--llem-cycles",
        type=int,
        metavar="N",
        help="cycles (repetitions of every experiment); beats the study's execution.n_cycles",
    )
    option(
        "--llem-cycle-order",
        choices=[o.value for o in CycleOrder],
        help=f"how cycles are laid out (default {EFFECTIVE_EXECUTION_DEFAULTS['cycle_order']})",
    )
    option(
        "--llem-shuffle-seed",
        type=int,
        metavar="N",
        help="seed of the shuffled order (default: derived from the study design hash)",
    )
    option(
        "--llem-cache-dir",
        metavar="DIR",
        help="where built-in models are materialised (default $LLEM_CACHE_DIR or ~/.cache/pytest-llem)",
    )
    option(
        "--llem-isolation",
        choices=["process", "none"],
        help="run each item in a fresh child process (default) or in the pytest process; beats execution.isolation",
    )
    option(
        "--llem-timeout",
        type=float,
        metavar="SECONDS",
        help="kill an item's process after this long (isolation: process); beats execution.timeout_seconds",
    )
    option(
        "--llem-no-gaps", action="store_true", help="skip the study's config_gap_seconds and cycle_gap_seconds pauses"
    )
    option(
        "--llem-results-dir",
        metavar="DIR",
        help="where run folders go: DIR/runs/<run-id>/ (default .llem under the rootdir)",
    )
    option(
        "--llem-resume",
        nargs="?",
        const="latest",
        metavar="RUN_ID",
        help="continue a run (the latest, or RUN_ID): items that passed there are not run again",
    )
    option(
        "--llem-save",
        metavar="NAME",
        help="save this run's per-experiment samples as baseline NAME (.llem/baselines/NAME.json)",
    )
    option(
        "--llem-compare",
        metavar="NAME|PATH|latest",
        help="compare with a saved baseline: one gate item per experiment, <experiment>[gate], fails on a regression",
    )
    option(
        "--llem-fail",
        action="append",
        metavar="METRIC:PCT",
        help=(
            "regression threshold of the gate (repeatable), e.g. energy_per_output_token_j:5%% or "
            "tokens_per_s:5%%; a bare PCT gates energy per token where energy was measured, else tokens/s "
            f"(default {DEFAULT_THRESHOLD.pct:g}%%)"
        ),
    )
    option(
        "--llem-alpha",
        metavar="A",
        help=f"significance level of the gate's one-sided tests; its intervals are 1 - 2A (default {DEFAULT_ALPHA:g})",
    )
    option(
        "--llem-max-cycles",
        metavar="N",
        help="adaptive cycles: while an experiment's gate is inconclusive after its planned cycles, run more "
        "(<experiment>[cycle6], ...) up to N and judge again, alpha spent over the looks",
    )
    option(
        "--llem-compare-any-hardware",
        action="store_true",
        help="compare with a baseline measured on other GPUs / driver / power limits / CPU",
    )
    option("--llem-json", metavar="PATH", help="write the session's summary, verdicts and every result as JSON")
    option("--llem-csv", metavar="PATH", help="write one CSV row per experiment and one per item")
    option(
        "--llem-markdown",
        metavar="PATH",
        help="append a markdown summary (also appended to $GITHUB_STEP_SUMMARY when that is set)",
    )
    option(
        "--llem-plots",
        metavar="DIR",
        help=(
            "write PNG plots (each metric against each swept parameter; energy per token against latency, "
            "Pareto front marked); needs pytest-llem[plots]"
        ),
    )
    option(
        "--llem-meter",
        choices=list(METER_CHOICES),
        help=(
            "energy meter: auto (Zeus with whatever devices it finds), zeus (fail items if it finds none) or "
            "none; beats the study's energy.meter"
        ),
    )
    option(
        "--llem-gpus-per-worker",
        type=int,
        metavar="K",
        help="under pytest-xdist, GPUs per worker (default 1): each worker sees only its own K GPUs",
    )
    option(
        "--llem-shard",
        metavar="I/N",
        help="run shard I of N: a deterministic share of the experiments (all cycles and the gate of an experiment "
        "in one shard); merge the shards' run folders with `llem merge`",
    )
    option(
        "--llem-strict",
        action="store_true",
        help="fail an item whose energy measurement raised a validity warning (short window, 0 J, ...)",
    )
    parser.addini("llem_cycles", "default number of cycles when neither the command line nor the study says")
    parser.addini("llem_cycle_order", "default cycle order: sequential, interleaved or shuffled")
    parser.addini("llem_cache_dir", "where built-in models are materialised")
    parser.addini("llem_results_dir", "where run folders go (default .llem under the rootdir)")
    parser.addini("llem_isolation", "default isolation of items: process or none")
    parser.addini("llem_timeout", "default per-item timeout in seconds (isolation: process)")
    parser.addini("llem_fail", "regression thresholds of the gate, one METRIC:PCT per line", type="linelist")
    parser.addini("llem_alpha", f"significance level of the gate (default {DEFAULT_ALPHA:g})")
    parser.addini("llem_max_cycles", "adaptive cycles of the gate: at most this many cycles per experiment")
    parser.addini(
        "llem_meter", "default energy meter when neither the command line nor the study says: auto, zeus, none"
    )
    parser.addini(
        MAX_EXPERIMENTS_KEY,
        f"the most experiments one study may expand to; a larger sweep is a collection error "
        f"(default {DEFAULT_MAX_EXPERIMENTS:,})",
    )
    parser.addini(
        "llem_strict", "fail items with measurement warnings (like --llem-strict)", type="bool", default=False
    )


class _ReportListener:
    """Receives every test report of the session: keeps the results and writes the run folder. Under xdist the
    controller receives the workers' reports, which carry the results, the run-folder entry and the study overview."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        carried = record_report(self.config.stash[session_key], report)
        gating.record_verdicts(self.config.stash[session_key], report)
        runs.record(self.config, report, carried)

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        runs.item_started(self.config, nodeid)

    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        if excinfo.type is KeyboardInterrupt:  # not pytest's own "Interrupted: errors during collection"
            runs.interrupted(self.config.stash[store_key])


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    return workers.auto_workers(config)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    return scheduling.make_scheduler(config, log)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    sharding.worker_finished(node.config, getattr(node, "workeroutput", {}))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: object, ids: list[str]) -> None:
    runs.expect_items(node.config, ids)  # type: ignore[attr-defined]


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from . import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_cmdline_main(config: pytest.Config) -> None:
    workers.narrow_worker(config)  # the earliest a worker knows its GPUs: before any conftest's pytest_configure


def pytest_configure(config: pytest.Config) -> None:
    workers.configure_controller(config)
    register_backends(config)
    check_execution_options(config)
    config.stash[session_key] = SessionResults()
    config.stash[measurement_key] = measurement_session(config)
    config.stash[store_key] = runs.open_resumed(config)
    config.stash[runs.expected_key] = set()
    runs.check_save_name(config)
    outputs.check_report_options(config)
    sharding.check_option(config)
    config.stash[comparison_key] = gating.open_comparison(
        config, config.stash[measurement_key], runs.baselines_dir(config)
    )
    config.stash[session_key].baseline_name = gating.baseline_name(config)
    config.pluginmanager.register(_ReportListener(config), "llem-report-listener")
    for backend in backend_names():
        config.addinivalue_line("markers", f"{backend}: a pytest-llem item that runs on the {backend} backend")
    config.addinivalue_line("markers", "serving: a pytest-llem item that loads a server (scenario: serving)")


announced_key = pytest.StashKey[set[str]]()  # studies whose overview this process's reports already carried


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, object, object]:
    report = yield
    tag_report(item, report, item.config.stash.setdefault(announced_key, set()))  # type: ignore[arg-type]
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> object:
    try:
        return (yield)
    finally:
        record_windows(item)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> StudyFile | None:
    if is_study_file(file_path):
        return StudyFile.from_parent(parent, path=file_path)
    return None


@pytest.hookimpl(wrapper=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> Generator[None, object, object]:
    return gating.with_fixture_gates(collector, (yield))


@pytest.hookimpl(tryfirst=True)  # before -k / -m: a unit's shard must not depend on what else is selected
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    sharding.apply(config, items)


def pytest_collection_finish(session: pytest.Session) -> None:
    runs.register_items(session.config, session.items)


def pytest_report_teststatus(report: pytest.TestReport) -> tuple[str, str, str] | None:
    return runs.resumed_status(report)


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    runs.finish(config, config.stash[session_key], config.stash[measurement_key])
    outputs.write_reports(config, config.stash[session_key], config.stash[store_key])
    config.stash[measurement_key].close()
    sharding.finish(session)


def pytest_report_collectionfinish(config: pytest.Config) -> list[str]:
    return [study.header_line() for study in config.stash[session_key].studies.values()] + gating.adaptive_header(
        config
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    lines = render_session(config.stash[session_key])
    if lines and not config.option.collectonly:
        terminalreporter.write_sep("=", "pytest-llem summary")
        for line in lines:
            terminalreporter.write_line(line)
