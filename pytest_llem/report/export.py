"""Reports other tools read: JSON (summary, verdicts, every result), CSV (one row per experiment and one per item) and
a markdown summary for pull requests and ``$GITHUB_STEP_SUMMARY``. Unmeasured figures stay empty / null."""

from __future__ import annotations

import csv
import io
from typing import Any

from ..results.gate import verdict_record, worst
from ..results.schema import SCHEMA_VERSION, ItemResult
from ..results.session import SUMMARY_METRICS, SessionResults
from .serving import choices
from .table import tables_for, workload_line


def json_document(session: SessionResults, run_id: str | None) -> dict[str, Any]:
    verdicts = [
        verdict_record(study, experiment_id, found) for (study, experiment_id), found in session.verdicts.items()
    ]
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "baseline": session.baseline_name,
        "summary": session.summary_document(),
        "serving_choices": {
            study: [choice.record() for choice in choices([r for r in session.summarise(study) if r.serving])]
            for study in session.studies
            if any(r.serving for r in session.summarise(study))
        },
        "verdicts": verdicts,
        "results": [r.model_dump(mode="json") for r in session.results],  # passed items: the statistics' input
        "failed_results": [r.model_dump(mode="json") for r in session.failed_results],  # measured, then failed
        "environments": [env.model_dump(mode="json") for env in session.environments()],
    }


CSV_IDENTITY = ("level", "study", "experiment_id", "cycle", "status", "backend", "model", "config_hash", "cycles")
CSV_GATE = ("verdict", "verdicts", "cycles_needed")  # cycles_needed: per side, for an inconclusive verdict


def _csv_columns() -> list[str]:
    columns = list(CSV_IDENTITY)
    for metric in SUMMARY_METRICS:
        columns += [metric, f"{metric}.ci95_low", f"{metric}.ci95_high"]
    return [*columns, "energy_source", "energy_unavailable_reason", *CSV_GATE]


def _item_row(result: ItemResult, status: str) -> dict[str, Any]:
    row: dict[str, Any] = {
        "level": "item",
        "study": result.study,
        "experiment_id": result.experiment_id,
        "cycle": result.cycle,
        "status": status,
        "backend": result.backend,
        "model": result.model,
        "config_hash": result.config_hash,
        "energy_source": result.metrics.energy_source,
        "energy_unavailable_reason": result.metrics.energy_unavailable_reason,
    }
    row.update({metric: result.value(metric) for metric in SUMMARY_METRICS})
    return row


def csv_text(session: SessionResults) -> str:
    """Experiment rows (mean and 95% CI per metric, the gate's verdict) followed by item rows (one per cycle)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=_csv_columns(), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    first_result = {(r.study, r.experiment_id): r for r in reversed([*session.results, *session.failed_results])}
    for study in session.groups():
        for summary in session.summarise(study):
            verdicts = session.verdicts.get((study, summary.experiment_id), [])
            example = first_result.get((study, summary.experiment_id))
            row: dict[str, Any] = {
                "level": "experiment",
                "study": study,
                "experiment_id": summary.experiment_id,
                "backend": example.backend if example else None,
                "model": example.model if example else None,
                "config_hash": example.config_hash if example else None,
                "cycles": summary.cycles_passed,
                "status": f"{summary.cycles_failed} failed" if summary.cycles_failed else "passed",
                "verdict": worst(verdicts),
                "verdicts": "; ".join(f"{v.metric} {v.outcome} {v.interval_text()}" for v in verdicts),
                "cycles_needed": max((v.cycles_needed or 0 for v in verdicts), default=0) or None,
            }
            for metric, stats in summary.metrics.items():
                row[metric] = stats.mean
                if stats.ci95 is not None:
                    row[f"{metric}.ci95_low"], row[f"{metric}.ci95_high"] = stats.ci95
            writer.writerow(row)
    for result in session.results:
        writer.writerow(_item_row(result, "passed"))
    for result in session.failed_results:
        writer.writerow(_item_row(result, "failed"))
    return out.getvalue()


def markdown_text(session: SessionResults, run_id: str | None) -> str:
    """The terminal summary as GitHub-flavoured markdown tables, regressions listed first."""
    lines = ["## pytest-llem" + (f" run {run_id}" if run_id else "")]
    regressions = [
        f"- **{experiment_id}** ({study}): {v.describe()}"
        for (study, experiment_id), found in session.verdicts.items()
        for v in found
        if v.outcome == "regressed"
    ]
    undecided = [
        f"- {experiment_id} ({study}): {v.describe()}"
        for (study, experiment_id), found in session.verdicts.items()
        for v in found
        if v.outcome == "inconclusive"
    ]
    if session.baseline_name is not None:
        lines.append(f"\nCompared with baseline `{session.baseline_name}`: {len(regressions)} regression(s).")
        lines += regressions
        if undecided:
            lines += ["", f"Inconclusive ({len(undecided)}): more cycles would decide these.", *undecided]
    for study in session.groups():
        rows = session.summarise(study)
        if not rows:
            continue
        lines += ["", f"### {session.title(study)}", ""]
        lines += [item for line in workload_line(study, session) for item in (line, "")]
        for table in tables_for(study, session, rows):
            columns = table.columns
            lines.append("| " + " | ".join(name for name, _ in columns) + " |")
            lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(columns))) + "|")
            lines += [
                "| " + " | ".join(render(row).replace("|", "\\|") for _, render in columns) + " |" for row in table.rows
            ]
            lines += ["", "```", *table.below, "```", ""] if table.below else [""]
    sources = session.energy_sources()
    if sources:
        lines += ["", *[f"- energy: {source} ({count} results)" for source, count in sources.items()]]
    return "\n".join(lines) + "\n"
