"""The pytest face of a study: a File yielding one Item per (experiment, cycle) and a skipped Item per invalid config.

Thin by design: loading, expanding and running are library calls; this module only translates them into pytest terms.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from .backends import unavailable_reason
from .config.models import ExecutionConfig, ExperimentConfig, backend_names
from .energy.gpu_settings import GpuSettingsSkipped
from .errors import ConfigError, LlemError, PhaseError, last_frame
from .gating import adaptive_plan, comparison_key, extra_cycle_skip_reason, study_gate
from .keys import measurement_key, session_key, store_key
from .options import EFFECTIVE_EXECUTION_DEFAULTS, cache_dir, execution_options, max_experiments
from .results.schema import ItemResult
from .results.sequential import Plan
from .results.session import SessionResults, StudyOverview
from .results.store import ItemEntry, ItemKey
from .study.grid import (
    ConfigWarning,
    SkippedConfig,
    apply_cycles,
    compute_config_hash,
    number_cycles,
)
from .study.ids import experiment_ids
from .study.load import load_study

STUDY_GLOBS = ("study_*.yaml", "study_*.yml")
RESULT_PROPERTY = "llem_result"
ITEM_PROPERTY = "llem_item"
STUDY_PROPERTY = "llem_study"  # the study's overview, so a process that did not collect (xdist's controller) knows it

RESUMED_PROPERTY = "llem_resumed"  # the item passed in the resumed run: its result is replayed, not measured again


def is_study_file(path: Path) -> bool:
    return any(path.match(glob) for glob in STUDY_GLOBS)


class StudyFile(pytest.File):
    """One ``study_*.yaml``: loads and expands it, then yields its items in cycle order.

    Study-wide facts (the overview, the execution settings) are kept once, here and in the session's results; items
    only point at them, so collecting a study costs the same per item whatever its size."""

    overview: StudyOverview
    execution: ExecutionConfig

    def collect(self) -> Iterator[pytest.Item]:
        command_line, ini = execution_options(self.config)
        study = load_study(
            self.path,
            command_line=command_line,
            ini=ini,
            defaults=EFFECTIVE_EXECUTION_DEFAULTS,
            max_experiments=max_experiments(self.config),
        )
        assert study.study_design_hash is not None
        store = self.config.stash.get(store_key, None)
        conflict = store.resume_conflict(self.nodeid, study.study_design_hash) if store else None
        if conflict:
            raise ConfigError(conflict, file=self.path)
        ids = experiment_ids(study.experiments)
        id_of = {id(exp): eid for exp, eid in zip(study.experiments, ids, strict=True)}
        execution = self.execution = study.execution
        skipped = [SkippedConfig(s["raw_config"], s["reason"], s["errors"]) for s in study.skipped_configs]
        invalid_names = [f"invalid-{k}[{_label(s)}]" for k, s in enumerate(skipped, start=1)]
        self.overview = StudyOverview(
            path=self.nodeid,
            study_design_hash=study.study_design_hash,
            experiment_ids=ids,
            n_cycles=execution.n_cycles,
            cycle_order=str(execution.cycle_order),
            skipped=[(name, s.reason) for name, s in zip(invalid_names, skipped, strict=True)],
        )
        self.config.stash[session_key].add_study(self.overview)
        sequence = apply_cycles(
            study.experiments,
            execution.n_cycles,
            execution.cycle_order,
            study.study_design_hash,
            execution.shuffle_seed,
        )
        numbered = list(number_cycles(sequence))
        last_cycle_at = {id(experiment): position for position, (experiment, _) in enumerate(numbered)}
        comparing = self.config.stash.get(comparison_key, None) is not None
        plan = adaptive_plan(self.config, execution.n_cycles)
        for position, (experiment, cycle) in enumerate(numbered):
            eid = id_of[id(experiment)]
            yield ExperimentItem.from_parent(
                self, name=f"{eid}[cycle{cycle}]", experiment=experiment, experiment_id=eid, cycle=cycle
            )
            if comparing and last_cycle_at[id(experiment)] == position:  # the gate waits for every cycle
                # Adaptive cycles are real items after the planned ones, each run only while its gate is undecided.
                for extra in range(execution.n_cycles + 1, plan.max_cycles + 1 if plan else 0):
                    yield ExperimentItem.from_parent(
                        self, name=f"{eid}[cycle{extra}]", experiment=experiment, experiment_id=eid, cycle=extra,
                        plan=plan,
                    )  # fmt: skip
                yield study_gate(self, self.nodeid, eid, compute_config_hash(experiment), experiment.backend, plan)
        for name, config in zip(invalid_names, skipped, strict=True):
            yield InvalidConfigItem.from_parent(self, name=name, skipped=config)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        error = excinfo.value
        if isinstance(error, ConfigWarning):  # raised when warnings are errors (-W error): still the user's words
            return str(error)
        if isinstance(error, ConfigError) and error.file == self.path:
            return str(ConfigError(error.message, file=self.nodeid, key=error.key))  # short path, no traceback
        if isinstance(error, LlemError):
            return str(error)
        return super().repr_failure(excinfo)


class StudyItem(pytest.Item):
    """An item of a study file: it knows its run-folder entry, and its study's overview through its parent."""

    parent: StudyFile

    @property
    def study(self) -> str:
        return self.parent.nodeid

    @property
    def overview(self) -> StudyOverview:
        return self.parent.overview

    @property
    def study_design_hash(self) -> str:
        return self.parent.overview.study_design_hash

    def entry(self) -> ItemEntry:
        raise NotImplementedError


def _label(skipped: SkippedConfig) -> str:
    return skipped.short_label.replace(", ", "-")


@cache
def _backend_marks(backend: str) -> tuple[pytest.MarkDecorator, ...]:
    """The backend's marker, plus a skip when its library is missing: decided once per backend, not per item."""
    marks = [getattr(pytest.mark, backend)]
    reason = unavailable_reason(backend)
    if reason is not None:
        marks.append(pytest.mark.skip(reason=reason))
    return tuple(marks)


class ExperimentItem(StudyItem):
    """One cycle of one experiment: runs real inference and reports its measurements."""

    def __init__(
        self,
        *,
        experiment: ExperimentConfig,
        experiment_id: str,
        cycle: int,
        plan: Plan | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.experiment = experiment
        self.experiment_id = experiment_id
        self.cycle = cycle
        self.plan = plan  # set on an adaptive cycle (beyond the planned ones): it runs only while its gate is undecided
        self.extra_keyword_matches.add(experiment.backend)  # `-k vllm` selects exactly the vLLM items
        for mark in _backend_marks(experiment.backend):
            self.add_marker(mark)
        if experiment.scenario == "serving":  # `-m serving` / `-m "not serving"`
            self.add_marker(pytest.mark.serving)
            self.extra_keyword_matches.add("serving")

    @property
    def execution(self) -> ExecutionConfig:
        return self.parent.execution

    def entry(self) -> ItemEntry:
        return ItemEntry(self.nodeid, self.study, self.study_design_hash, self.experiment_id, self.cycle)

    def runtest(self) -> None:
        if self.plan is not None:
            reason = extra_cycle_skip_reason(
                self.config, self.study, compute_config_hash(self.experiment), self.plan, self.cycle
            )
            if reason is not None:
                pytest.skip(reason)
        store = self.config.stash.get(store_key, None)
        key: ItemKey = (self.study, self.study_design_hash, self.experiment_id, self.cycle)
        previous = store.previous_result(key) if store else None
        if store is not None and previous is not None:  # passed in the resumed run: replay, do not measure again
            self.user_properties += [
                (RESULT_PROPERTY, previous.model_dump_json()),
                (RESUMED_PROPERTY, store.run_id),
                *junit_properties(previous),
            ]
            return
        measuring = self.config.stash[measurement_key]
        measuring.pacer.wait(self.study, self.experiment_id, self.cycle, self.execution, self._announce)
        started = time.time()
        try:
            metrics = measuring.run(
                self.experiment, self.execution, study_dir=self.path.parent, cache_dir=cache_dir(self.config)
            )
        except GpuSettingsSkipped as exc:  # a limit this GPU does not allow, no GPU to set: not this machine's to run
            pytest.skip(str(exc))
        result = ItemResult(
            study=self.study,
            study_design_hash=self.study_design_hash,
            experiment_id=self.experiment_id,
            config_hash=compute_config_hash(self.experiment),
            cycle=self.cycle,
            backend=self.experiment.backend,
            model=self.experiment.model,
            config=self.experiment.identity(),
            metrics=metrics,
            environment=measuring.environment_of(metrics),
            started_at=started,
            finished_at=time.time(),
        )
        # Results travel with the test report, so they reach the controller the same way under xdist.
        self.user_properties.append((RESULT_PROPERTY, result.model_dump_json()))
        self.user_properties += junit_properties(result)
        measuring.enforce(metrics.measurement_warnings, f"{self.experiment_id} cycle {self.cycle}")

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        error = excinfo.value
        if isinstance(error, PhaseError):
            where = last_frame(error.cause)
            return (
                f"{self.experiment_id} cycle {self.cycle} ({self.experiment.backend}, {self.experiment.model}): "
                f"{error}" + (f"\n  raised at {where}" if where else "")
            )
        if isinstance(error, LlemError):
            return f"{self.experiment_id} cycle {self.cycle}: {error}"
        return super().repr_failure(excinfo, style)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"{self.experiment_id} cycle {self.cycle}"

    def _announce(self, text: str) -> None:
        """The gap countdown, in verbose mode only."""
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None and self.config.option.verbose > 0:
            reporter.write(text, yellow=True)


class InvalidConfigItem(StudyItem):
    """A generated combination that failed validation: reported once, as a skip with its reason."""

    def __init__(self, *, skipped: SkippedConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.skipped = skipped
        backend = skipped.raw_config.get("backend")
        if isinstance(backend, str) and backend in backend_names():
            self.extra_keyword_matches.add(backend)
            self.add_marker(backend)
        self.add_marker(pytest.mark.skip(reason=f"invalid config: {skipped.reason}"))

    def entry(self) -> ItemEntry:
        return ItemEntry(
            self.nodeid, self.study, self.study_design_hash, self.name, None, "skipped", error=self.skipped.reason
        )

    def runtest(self) -> None:  # never reached: the skip marker stops it in setup
        raise AssertionError("an invalid config cannot run")

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"invalid config {self.skipped.short_label}"


JUNIT_METRICS = {"energy_j": "energy_j", "energy_per_output_token_j": "energy_per_output_token_j",
                 "tokens_per_s": "tokens_per_s", "ttft_s": "ttft_s.mean"}  # fmt: skip
JUNIT_SERVING_METRICS = {"steady_energy_per_output_token_j": "steady_energy_per_output_token_j",
                         "goodput_rps": "goodput_rps", "ttft_s.p90": "ttft_s.p90"}  # fmt: skip


def junit_properties(result: ItemResult, prefix: str = "") -> list[tuple[str, str]]:
    """The headline figures as ``--junitxml`` properties; ``null`` where not measured (never 0)."""
    named = JUNIT_METRICS | (JUNIT_SERVING_METRICS if result.config.get("scenario") == "serving" else {})
    values = {name: result.value(metric) for name, metric in named.items()}
    return [(prefix + name, "null" if value is None else repr(value)) for name, value in values.items()]


def tag_report(item: pytest.Item, report: pytest.TestReport, announced: set[str]) -> None:
    """Every report of a study item names its run-folder entry, and an xdist worker's first report of each study also
    carries the study's overview (once per study and worker, not per item): the controller, which writes the run
    folder and the table, collects nothing. ``announced``: the studies this process has described already."""
    if not isinstance(item, StudyItem):
        return
    report.user_properties.append((ITEM_PROPERTY, json.dumps(vars(item.entry()))))
    if hasattr(item.config, "workerinput") and item.study not in announced:
        announced.add(item.study)
        report.user_properties.append((STUDY_PROPERTY, json.dumps(dataclasses.asdict(item.overview))))


def record_report(results: SessionResults, report: pytest.TestReport) -> list[ItemResult]:
    """Take an item's results (or failure) out of its report; the same path serves reports from xdist workers.

    A study item carries one result, a test using ``llem_energy`` one per window; an item's first failed report (setup,
    call or teardown) counts a failure for each result it carries (or, for a study item that failed before measuring,
    for its experiment). Returns what the report carried, read once for every consumer."""
    for name, value in report.user_properties:
        if name == STUDY_PROPERTY:
            overview = json.loads(str(value))
            if overview["path"] not in results.studies:  # xdist's controller learns the study from its items
                overview["skipped"] = [tuple(pair) for pair in overview["skipped"]]
                results.add_study(StudyOverview(**overview))
    if not any(name == ITEM_PROPERTY for name, _ in report.user_properties):
        return []
    carried = [
        ItemResult.model_validate_json(str(value)) for name, value in report.user_properties if name == RESULT_PROPERTY
    ]
    if report.when == "call" and report.passed:
        for result in carried:
            results.add_result(result)
    elif report.failed and report.nodeid not in results.failed_items:  # one failure per item, whichever phase
        results.failed_items.add(report.nodeid)
        for result in carried:
            results.add_failure(result.study, result.experiment_id, measured=result)
        if not carried:
            item = json.loads(str(dict(report.user_properties)[ITEM_PROPERTY]))
            if "experiment_id" in item:
                results.add_failure(item["study"], item["experiment_id"])
    return carried
