"""The terminal summary: one table per study, one row per experiment, skipped configs below."""

from __future__ import annotations

from dataclasses import dataclass

from ..results.gate import Verdict
from ..results.session import ExperimentSummary, SessionResults, StudyOverview
from .cells import Column, cycles, largest, mean, mean_ci
from .serving import render_serving

COLUMNS: list[Column] = [
    ("experiment", lambda r: r.experiment_id),
    ("cycles", cycles),
    ("tokens/s (95% CI)", lambda r: mean_ci(r.metrics["tokens_per_s"])),
    ("output tok", lambda r: mean(r.metrics["output_tokens"], digits=0)),
    ("TTFT ms", lambda r: mean(r.metrics["ttft_s.mean"], scale=1000)),
    ("ITL ms", lambda r: mean(r.metrics["itl_s.mean"], scale=1000, digits=2)),
    ("peak MB", lambda r: largest(r.metrics["peak_memory_mb"])),
    ("energy J (95% CI)", lambda r: mean_ci(r.metrics["energy_j"], digits=None)),
    ("J/tok", lambda r: mean_ci(r.metrics["energy_per_output_token_j"], digits=None)),
    ("mean W", lambda r: mean_ci(r.metrics["mean_power_w"], digits=None)),
]


DOCTOR_HINT = "energy: run `llem doctor` to see what this machine can measure, and how to get the rest"


def verdict_columns(study: str, session: SessionResults) -> list[Column]:
    """When comparing: the change and the verdict of every gated metric ("-": the gate did not judge this row)."""
    if session.baseline_name is None:
        return []

    def verdicts(row: ExperimentSummary) -> list[Verdict]:
        return session.verdicts.get((study, row.experiment_id), [])

    def change(row: ExperimentSummary) -> str:  # the change and its interval's half width: +24.0% ±18.0
        return " / ".join(v.short_text() for v in verdicts(row)) or "-"

    def outcome(row: ExperimentSummary) -> str:
        return " / ".join(v.outcome for v in verdicts(row)) or "-"

    return [(f"vs {session.baseline_name}", change), ("verdict", outcome)]


# With phases: true, the prefill alone (one pass over the prompts) and the energy of each phase per token.
PHASE_COLUMNS: list[Column] = [
    ("prefill ms", lambda r: mean(r.metrics["prefill_duration_s"], scale=1000)),
    ("prefill J/in-tok", lambda r: mean_ci(r.metrics["prefill_energy_per_input_token_j"], digits=None)),
    ("decode J/tok", lambda r: mean_ci(r.metrics["decode_energy_per_output_token_j"], digits=None)),
]


# A study whose gpu: power_limit_w varies: the limit read back, after the experiment's name.
LIMIT_COLUMN: Column = ("limit W", lambda r: mean(r.metrics["gpu_power_limit_w"], digits=0))


def _limit_varies(rows: list[ExperimentSummary]) -> bool:
    return len({row.metrics["gpu_power_limit_w"].mean for row in rows}) > 1


def columns_for(study: str, session: SessionResults, rows: list[ExperimentSummary] | None = None) -> list[Column]:
    rows = rows or []
    phased = any(row.metrics["prefill_duration_s"].n for row in rows)
    limit = [LIMIT_COLUMN] if _limit_varies(rows) else []
    return COLUMNS[:1] + limit + COLUMNS[1:] + (PHASE_COLUMNS if phased else []) + verdict_columns(study, session)


def workload_line(study: str, session: SessionResults) -> list[str]:
    """What the study's prompts were (as its results say), above its table."""
    described = dict.fromkeys(r.metrics.workload for r in session.results if r.study == study and r.metrics.workload)
    return [f"workload: {'; '.join(described)}"] if described else []


def render_rows(rows: list[ExperimentSummary], columns: list[Column] = COLUMNS) -> list[str]:
    cells = [[name for name, _ in columns]] + [[render(row) for _, render in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]

    def line(values: list[str]) -> str:
        first = values[0].ljust(widths[0])
        return "  ".join([first] + [v.rjust(w) for v, w in zip(values[1:], widths[1:], strict=True)])

    return [line(cells[0]), "  ".join("-" * w for w in widths)] + [line(c) for c in cells[1:]]


@dataclass(frozen=True)
class Table:
    columns: list[Column]
    rows: list[ExperimentSummary]
    below: list[str]  # lines printed under it


def tables_for(study: str, session: SessionResults, rows: list[ExperimentSummary]) -> list[Table]:
    """A study's tables: offline experiments in one, serving experiments in another (their own columns, and the
    cheapest configuration per request rate under it)."""
    offline = [row for row in rows if not row.serving]
    served = [row for row in rows if row.serving]
    tables = [Table(columns_for(study, session, offline), offline, [])] if offline else []
    if served:
        columns, below = render_serving(served, verdict_columns(study, session))
        if _limit_varies(served):  # after the experiment's name, as in the offline table
            columns = [columns[0], LIMIT_COLUMN, *columns[1:]]
        tables.append(Table(columns, served, below))
    return tables


def render_study(overview: StudyOverview, session: SessionResults) -> list[str]:
    lines = [overview.header_line() + f", order {overview.cycle_order}", *workload_line(overview.path, session)]
    rows = session.summarise(overview.path)
    for table in tables_for(overview.path, session, rows):
        lines += [*render_rows(table.rows, table.columns), *table.below]
    if not rows:
        lines.append("(no experiment ran)")
    if overview.skipped:
        lines.append(f"skipped configs ({len(overview.skipped)}):")
        lines += [f"  {label}: {reason}" for label, reason in overview.skipped]
    return lines


def render_fixture_group(study: str, session: SessionResults) -> list[str]:
    rows = session.summarise(study)
    return [session.title(study), *render_rows(rows, columns_for(study, session, rows))]


def render_footer(session: SessionResults) -> list[str]:
    """Which energy source measured the results (or why none could), their warnings and the environment."""
    lines = [f"energy: {source} ({count} results)" for source, count in session.energy_sources().items()]
    if session.measured_no_energy():
        lines.append(DOCTOR_HINT)
    warnings = session.measurement_warnings()
    if warnings:
        lines.append(f"measurement warnings ({len(warnings)}; --llem-strict fails such items):")
        lines += [f"  {r.experiment_id} cycle {r.cycle}: {w}" for r, w in warnings]
    lines += [f"environment: {env.describe()}" for env in session.environments()]
    return lines


def render_session(session: SessionResults) -> list[str]:
    sections = [render_study(overview, session) for overview in session.studies.values()]
    sections += [render_fixture_group(study, session) for study in session.fixture_groups()]
    lines: list[str] = []
    if session.baseline_name is not None:
        lines.append(f"compared with baseline {session.baseline_name!r}: verdicts per gated metric (gate items)")
    for section in sections:
        if lines:
            lines.append("")
        lines += section
    if session.results:
        lines += ["", *render_footer(session)]
    lines += session.notes
    return lines
