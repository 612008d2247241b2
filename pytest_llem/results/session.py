"""What one pytest session learned: the studies it collected and the results its items reported."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from .environment import Environment
from .gate import Verdict
from .schema import ItemResult
from .stats import Summary

# Metrics summarised per experiment in the table and (later) in summary files.
SUMMARY_METRICS = (
    "tokens_per_s",
    "output_tokens",
    "duration_s",
    "ttft_s.mean",
    "itl_s.mean",  # every engine knows the mean interval; vLLM does not report the intervals themselves
    "peak_memory_mb",
    "energy_j",
    "energy_per_output_token_j",
    "mean_power_w",
    "prefill_duration_s",  # phases: true
    "prefill_energy_per_input_token_j",
    "decode_energy_per_output_token_j",
    "gpu_power_limit_w",  # gpu: power_limit_w, as read back
    # scenario: serving
    "request_throughput_rps",
    "ttft_s.p50",
    "ttft_s.p90",
    "tpot_s.p50",
    "tpot_s.p90",
    "e2el_s.p90",
    "steady_energy_per_output_token_j",
    "energy_per_request_j",
    "goodput_rps",
    "slo_attainment",
)


@dataclass
class StudyOverview:
    """A collected study: enough to print its header line and to lay out its table."""

    path: str
    study_design_hash: str
    experiment_ids: list[str]
    n_cycles: int
    cycle_order: str
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (label, reason)

    def header_line(self) -> str:
        n = len(self.experiment_ids)
        return (
            f"{self.path} [{self.study_design_hash}]: {n} configs x {self.n_cycles} cycles = "
            f"{n * self.n_cycles} items ({len(self.skipped)} skipped)"
        )


@dataclass
class ExperimentSummary:
    experiment_id: str
    cycles_passed: int
    cycles_failed: int
    metrics: dict[str, Summary]
    config: dict[str, Any] = field(default_factory=dict)  # the experiment's settings (``identity()``), if one passed

    @property
    def serving(self) -> bool:
        return self.config.get("scenario") == "serving"


@dataclass
class SessionResults:
    studies: dict[str, StudyOverview] = field(default_factory=dict)
    results: list[ItemResult] = field(default_factory=list)  # passed items: the statistics use these only
    failures: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    failed_results: list[ItemResult] = field(default_factory=list)  # measured, then failed (an assert, --llem-strict)
    failed_items: set[str] = field(default_factory=set)  # node ids already counted as failed
    verdicts: dict[tuple[str, str], list[Verdict]] = field(default_factory=dict)  # (study, experiment id) → gate's
    baseline_name: str | None = None  # the baseline compared with, when comparing
    notes: list[str] = field(default_factory=list)  # end-of-session lines for the summary (where a baseline went)

    def add_study(self, overview: StudyOverview) -> None:
        self.studies[overview.path] = overview

    def add_result(self, result: ItemResult) -> None:
        self.results.append(result)

    def add_verdicts(self, study: str, experiment_id: str, verdicts: list[Verdict]) -> None:
        self.verdicts[(study, experiment_id)] = verdicts

    def add_failure(self, study: str, experiment_id: str, measured: ItemResult | None = None) -> None:
        self.failures[(study, experiment_id)] += 1
        if measured is not None:
            self.failed_results.append(measured)

    def summarise(self, study: str) -> list[ExperimentSummary]:
        """One summary per experiment that ran (passed or failed), in the study's experiment order."""
        by_experiment: dict[str, list[ItemResult]] = defaultdict(list)
        for result in self.results:
            if result.study == study:
                by_experiment[result.experiment_id].append(result)
        overview = self.studies.get(study)
        if overview:
            order = overview.experiment_ids
        else:  # fixture windows: in the order they reported, failed ones included
            failed_here = [eid for (s, eid) in self.failures if s == study]
            order = list(dict.fromkeys([*by_experiment, *failed_here]))
        rows = []
        for experiment_id in order:
            done = by_experiment.get(experiment_id, [])
            failed = self.failures.get((study, experiment_id), 0)
            if not done and not failed:
                continue
            metrics = {m: Summary.of([r.value(m) for r in done]) for m in SUMMARY_METRICS}
            config = done[0].config if done else {}
            rows.append(ExperimentSummary(experiment_id, len(done), failed, metrics, config))
        return rows

    def summary_document(self) -> dict[str, Any]:
        """summary.json: per study and experiment, the cycles and, per metric, n, mean, stdev and the 95% CI."""
        document: dict[str, Any] = {}
        for study in self.groups():
            overview = self.studies.get(study)
            experiments = {}
            for row in self.summarise(study):
                experiments[row.experiment_id] = {
                    "cycles_passed": row.cycles_passed,
                    "cycles_failed": row.cycles_failed,
                    "metrics": {
                        name: {"n": s.n, "mean": s.mean, "stdev": s.stdev, "ci95": list(s.ci95) if s.ci95 else None}
                        for name, s in row.metrics.items()
                    },
                }
            document[study] = {
                "study_design_hash": overview.study_design_hash if overview else None,
                "experiments": experiments,
            }
        return document

    def groups(self) -> list[str]:
        """Everything that gets a table, in order: the studies, then the test files with ``llem_energy`` windows."""
        return [*self.studies, *self.fixture_groups()]

    def title(self, group: str) -> str:
        overview = self.studies.get(group)
        return overview.header_line() if overview else f"{group}: llem_energy windows"

    def fixture_groups(self) -> list[str]:
        """Test files whose ``llem_energy`` windows were recorded, in the order they first reported."""
        groups: dict[str, None] = {}
        for result in [*self.results, *self.failed_results]:
            if result.kind == "fixture" and result.study not in self.studies:
                groups[result.study] = None
        return list(groups)

    def energy_sources(self) -> dict[str, int]:
        """How many results each energy source measured; unmeasured ones under "not measured: <reason>". Sources that
        differ only in their GPUs are one source naming them all: under pytest-xdist each worker measures its own."""
        counts: dict[tuple[str, str], int] = defaultdict(int)
        gpus: dict[tuple[str, str], dict[int, str]] = defaultdict(dict)  # per source, every GPU it names
        for result in [*self.results, *self.failed_results]:
            m = result.metrics
            source = m.energy_source if m.energy_j is not None else None
            if source is None:
                counts[(f"not measured: {m.energy_unavailable_reason}", "")] += 1
                continue
            named = _named_gpus(result, source)
            listed = ", ".join(named.values())
            if named and listed in source:
                before, after = source.split(listed, 1)
                counts[(before, after)] += 1
                gpus[(before, after)].update(named)
            else:  # not the usual wording: left as it is
                counts[(source, "")] += 1
        return {
            before + ", ".join(name for _, name in sorted(gpus[(before, after)].items())) + after: count
            for (before, after), count in counts.items()
        }

    def measured_no_energy(self) -> bool:
        """Results exist and not one measured energy (the footer then points at ``llem doctor``)."""
        results = [*self.results, *self.failed_results]
        return bool(results) and all(result.metrics.energy_j is None for result in results)

    def measurement_warnings(self) -> list[tuple[ItemResult, str]]:
        """Every warning, of passed and failed items alike."""
        return [(r, w) for r in [*self.results, *self.failed_results] for w in r.metrics.measurement_warnings]

    def environments(self) -> list[Environment]:
        unique: dict[str, Environment] = {}
        for result in self.results:
            if result.environment is not None:
                unique.setdefault(
                    result.environment.fingerprint + (result.environment.git_commit or ""), result.environment
                )
        return list(unique.values())


def _named_gpus(result: ItemResult, source: str) -> dict[int, str]:
    """The GPUs of the result's environment that its energy source names, as it names them (``GPU 2 (NVIDIA H100)``,
    the Zeus meter's wording), in the environment's order; empty when its environment does not say."""
    environment = result.environment
    if environment is None:
        return {}
    named = {g.index: f"GPU {g.index} ({g.name or 'unnamed'})" for g in environment.gpus}
    return {index: text for index, text in named.items() if text in source}
