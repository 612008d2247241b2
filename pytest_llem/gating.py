"""The regression gate seen from pytest: ``--llem-compare`` loads a baseline at start, and one gate item per compared
experiment (``<experiment-id>[gate]``, after that experiment's cycles; ``<test>[gate]`` after a test that measured
``llem_energy`` windows) turns the verdicts into a test outcome. The statistics live in ``results/gate.py``."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .errors import LlemError
from .keys import session_key
from .measurement import MeasurementSession
from .options import positive_int
from .results import baselines
from .results.gate import (
    DEFAULT_ALPHA,
    DEFAULT_THRESHOLD,
    Threshold,
    ThresholdError,
    Verdict,
    parse_alpha,
    verdict_record,
    worst,
)
from .results.schema import ItemResult
from .results.sequential import Plan
from .results.session import SessionResults

GATE_PROPERTY = "llem_gate"


class GateFailure(LlemError):
    """A regression beyond the threshold and beyond noise (or, under --llem-strict, a verdict that could not say)."""


class GateWarning(UserWarning):
    """A change beyond the threshold that the cycles could not tell from noise: the gate passes, and says so."""


@dataclass(frozen=True)
class Comparison:
    baseline: baselines.Baseline
    thresholds: tuple[Threshold, ...]
    alpha: float
    strict: bool
    max_cycles: int | None = None  # --llem-max-cycles: adaptive cycles up to this many per experiment


comparison_key = pytest.StashKey["Comparison | None"]()  # set at configure, read by collection and gates


def thresholds(config: pytest.Config) -> tuple[Threshold, ...]:
    """--llem-fail (repeatable) beats the ini's llem_fail lines; neither: 5% on the default metric."""
    given = config.getoption("llem_fail") or []
    source = "--llem-fail"
    if not given:
        given, source = config.getini("llem_fail") or [], "llem_fail (ini)"
    try:
        return tuple(Threshold.parse(text) for text in given) or (DEFAULT_THRESHOLD,)
    except ThresholdError as exc:
        raise pytest.UsageError(f"pytest-llem: {source}: {exc}") from None


def alpha(config: pytest.Config) -> float:
    raw = config.getoption("llem_alpha")
    source = "--llem-alpha"
    if raw is None:
        raw, source = config.getini("llem_alpha") or DEFAULT_ALPHA, "llem_alpha (ini)"
    try:
        return parse_alpha(raw)
    except ThresholdError as exc:
        raise pytest.UsageError(f"pytest-llem: {source}: {exc}") from None


def max_cycles(config: pytest.Config) -> int | None:
    """--llem-max-cycles beats the ini's llem_max_cycles; None: no adaptive cycles."""
    raw, source = config.getoption("llem_max_cycles"), "--llem-max-cycles"
    if raw is None:
        raw, source = config.getini("llem_max_cycles") or None, "llem_max_cycles (ini)"
    return None if raw is None else positive_int(raw, source, "a positive number of cycles")


def open_comparison(config: pytest.Config, measuring: MeasurementSession, baselines_dir: Path) -> Comparison | None:
    """The baseline --llem-compare names, checked at start: unknown, unreadable or from other hardware is refused
    before anything runs (unless --llem-compare-any-hardware)."""
    reference = config.getoption("llem_compare")
    chosen_thresholds, chosen_alpha, chosen_max = thresholds(config), alpha(config), max_cycles(config)
    if reference is None:
        for flag in ("llem_fail", "llem_max_cycles"):
            if config.getoption(flag):
                raise pytest.UsageError(
                    f"pytest-llem: --{flag.replace('_', '-')} needs --llem-compare=NAME|PATH|latest"
                )
        return None
    try:
        baseline = baselines.load(reference, baselines_dir)
    except LlemError as exc:
        raise pytest.UsageError(f"pytest-llem: --llem-compare: {exc}") from None
    # The hardware check reads the GPUs through Zeus (seconds to import): not for --collect-only, nor on xdist workers
    # (the controller checked).
    if not (config.getoption("llem_compare_any_hardware") or config.option.collectonly or _is_worker(config)):
        difference = baselines.hardware_difference(baseline, measuring.environment())
        if difference:
            raise pytest.UsageError(
                f"pytest-llem: --llem-compare: {difference}; energy from other hardware is not comparable "
                "(--llem-compare-any-hardware compares anyway)"
            )
    _check_distribution(config)
    return Comparison(baseline, chosen_thresholds, chosen_alpha, measuring.strict, chosen_max)


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


# xdist modes that keep an experiment's cycles and its gate on one worker, so a gate runs where its cycles ran
# ("load", xdist's default, is replaced by scheduling.ExperimentScheduling).
GATE_SAFE_DISTRIBUTIONS = ("load", "loadfile", "loadscope", "no")


def _check_distribution(config: pytest.Config) -> None:
    workers = config.getoption("numprocesses", None)
    distribution = config.getoption("dist", "no")
    if workers and distribution not in GATE_SAFE_DISTRIBUTIONS and not _is_worker(config):
        raise pytest.UsageError(
            f"pytest-llem: --llem-compare under pytest-xdist needs --dist load (the default), loadfile or "
            f"loadscope, not {distribution}: a gate item must run in the worker that ran its experiment's cycles"
        )


@dataclass(frozen=True)
class Selection:
    """Which passed results a gate judges: a study experiment's cycles (by config hash), or a test's windows."""

    study: str
    config_hash: str | None = None
    window_prefix: str | None = None  # "<test>::" of a test's llem_energy windows

    def __call__(self, result: ItemResult) -> bool:
        if result.study != self.study:
            return False
        if self.window_prefix is not None:
            return result.kind == "fixture" and result.experiment_id.startswith(self.window_prefix)
        return result.kind == "study" and result.config_hash == self.config_hash


def baseline_name(config: pytest.Config) -> str | None:
    comparison = config.stash.get(comparison_key, None)
    return comparison.baseline.name if comparison is not None else None


class GateItem(pytest.Item):
    """The verdicts of one experiment (or of one test's ``llem_energy`` windows) against the baseline."""

    def __init__(
        self,
        *,
        study: str,
        select: Selection,
        describe: str,
        backend: str | None,
        plan: Plan | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.study = study
        self.select = select  # which of this session's passed results this gate judges
        self.describe = describe
        self.plan = plan  # adaptive cycles of a study experiment, when --llem-max-cycles asks for more
        if backend is not None:  # `-k vllm` keeps the gates of the vLLM experiments
            self.extra_keyword_matches.add(backend)
            self.add_marker(backend)

    def runtest(self) -> None:
        comparison = self.config.stash[comparison_key]
        assert comparison is not None  # gate items exist only when comparing
        results = [r for r in self.config.stash[session_key].results if self.select(r)]
        if not results:
            pytest.skip(f"no cycle of {self.describe} passed in this run: nothing to compare")
        judged = {}
        found_all = baselines.judge_results(
            comparison.baseline, results, comparison.thresholds, comparison.alpha, self.plan
        )
        for found in found_all:
            if found.verdicts is None:
                continue
            judged[found.experiment_id] = found.verdicts
            record = verdict_record(found.study, found.experiment_id, found.verdicts)
            self.user_properties.append((GATE_PROPERTY, json.dumps(record)))
            self.user_properties += junit_verdict_properties(found.verdicts)
        if not judged:
            pytest.skip(f"baseline {comparison.baseline.name!r} has no {self.describe} (same config hash)")
        measured = [v for verdicts in judged.values() for v in verdicts if v.outcome != "not measured"]
        text = "\n".join(
            f"{experiment_id}: {v.describe()}" for experiment_id, verdicts in judged.items() for v in verdicts
        )
        if not measured:
            pytest.skip(f"nothing to judge for {self.describe}: {text}")
        outcome = worst(measured)
        versus = f"against baseline {comparison.baseline.name!r}"
        if outcome == "regressed":
            raise GateFailure(f"{self.describe} regressed {versus}:\n{text}")
        if outcome == "inconclusive":
            if comparison.strict:
                raise GateFailure(f"{self.describe}: inconclusive {versus} (--llem-strict):\n{text}")
            warnings.warn(GateWarning(f"{self.describe}: inconclusive {versus}:\n{text}"), stacklevel=1)
        self.add_report_section("call", "llem gate", text)  # the verdicts of a passing gate, shown by -rP

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, LlemError | GateWarning):  # GateWarning: raised when warnings are errors
            return str(excinfo.value)
        return super().repr_failure(excinfo, style)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"gate of {self.describe}"


def junit_verdict_properties(verdicts: list[Verdict]) -> list[tuple[str, str]]:
    """Each verdict's outcome, change and interval as ``--junitxml`` properties (``null`` where there is none)."""
    properties = []
    for v in verdicts:
        figures = {"outcome": v.outcome, "change_pct": v.change_pct, "ci_low_pct": v.ci_low_pct,
                   "ci_high_pct": v.ci_high_pct, "cycles_needed": v.cycles_needed}  # fmt: skip
        properties += [(f"{v.metric}.{key}", "null" if value is None else str(value)) for key, value in figures.items()]
    return properties


def study_gate(
    parent: pytest.Collector, study: str, experiment_id: str, config_hash: str, backend: str, plan: Plan | None
) -> GateItem:
    return GateItem.from_parent(
        parent,
        name=f"{experiment_id}[gate]",
        study=study,
        select=Selection(study, config_hash=config_hash),
        describe=f"experiment {experiment_id}",
        backend=backend,
        plan=plan,
    )


def adaptive_plan(config: pytest.Config, planned: int) -> Plan | None:
    """The experiment's adaptive cycles when comparing with --llem-max-cycles above its planned cycles, else None."""
    comparison = config.stash.get(comparison_key, None)
    if comparison is None or comparison.max_cycles is None or comparison.max_cycles <= planned:
        return None
    return Plan(planned, comparison.max_cycles)


def adaptive_header(config: pytest.Config) -> list[str]:
    """The collection header's word on adaptive cycles, when asked for."""
    comparison = config.stash.get(comparison_key, None)
    if comparison is None or comparison.max_cycles is None:
        return []
    return [
        f"adaptive cycles: up to {comparison.max_cycles} per experiment while its gate is inconclusive "
        "(the extra cycle items skip once it is decided)"
    ]


def extra_cycle_skip_reason(config: pytest.Config, study: str, config_hash: str, plan: Plan, cycle: int) -> str | None:
    """Why an adaptive cycle (beyond the planned ones) is not needed, or None when it must run: the gate walks its
    looks over the cycles before this one, exactly as the gate item will, and runs it only while undecided."""
    comparison = config.stash[comparison_key]
    assert comparison is not None  # adaptive cycles exist only when comparing
    select = Selection(study, config_hash=config_hash)
    results = [r for r in config.stash[session_key].results if select(r) and r.cycle < cycle]
    if not results:
        return "adaptive cycle not needed: no earlier cycle passed, so the gate has nothing to decide on"
    found = baselines.judge_results(
        comparison.baseline, results, comparison.thresholds, comparison.alpha, plan, available=cycle - 1
    )[0]
    if found.verdicts is None:
        return f"adaptive cycle not needed: baseline {comparison.baseline.name!r} has no such experiment"
    if found.wants_more:
        return None
    outcomes = ", ".join(f"{v.metric} {v.outcome}" for v in found.verdicts)
    return f"adaptive cycle not needed: the gate's verdict is final after {found.cycles_judged} cycles ({outcomes})"


def with_fixture_gates(collector: pytest.Collector, collected: object) -> object:
    """What pytest made of a test function, plus a gate after each of its items that uses ``llem_energy`` (windows are
    only named when the test runs). Made at collection, so -k / -m select it and the counts include it; it carries
    the test's own marks, so ``-m gpu`` keeps the gate of a ``@pytest.mark.gpu`` test."""
    if collector.config.stash.get(comparison_key, None) is None or collected is None:
        return collected
    items = collected if isinstance(collected, list) else [collected]
    gated: list[object] = []
    for item in items:
        gated.append(item)
        if isinstance(item, pytest.Function) and "llem_energy" in item.fixturenames:
            gated.append(_fixture_gate(collector, item))
    return gated


UNINHERITED_MARKS = ("parametrize", "usefixtures", "xfail", "filterwarnings")


def _fixture_gate(collector: pytest.Collector, test: pytest.Function) -> GateItem:
    study, _, test_name = test.nodeid.partition("::")
    gate = GateItem.from_parent(
        collector,
        name=f"{test.name}[gate]",
        study=study,
        select=Selection(study, window_prefix=f"{test_name}::"),
        describe=f"the llem_energy windows of {test_name}",
        backend=None,
    )
    for mark in test.own_markers:
        if mark.name not in UNINHERITED_MARKS:
            gate.add_marker(pytest.MarkDecorator(mark))
    gate.extra_keyword_matches.update(test.extra_keyword_matches)
    return gate


def record_verdicts(session: SessionResults, report: pytest.TestReport) -> None:
    """A gate's verdicts out of its report (so they reach the controller under xdist), for the table and reports."""
    for name, value in report.user_properties:
        if name == GATE_PROPERTY:
            record = json.loads(str(value))
            verdicts = [Verdict.from_dict(v) for v in record["verdicts"]]
            session.add_verdicts(record["study"], record["experiment_id"], verdicts)
