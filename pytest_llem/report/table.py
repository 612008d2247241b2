"""The terminal summary: one table per study, one row per experiment, skipped configs below."""

from __future__ import annotations

from collections.abc import Callable

from ..results.session import ExperimentSummary, SessionResults, StudyOverview
from ..results.stats import Summary


def _mean_ci(summary: Summary, scale: float = 1.0, digits: int = 1) -> str:
    if summary.mean is None:
        return "-"
    text = f"{summary.mean * scale:.{digits}f}"
    if summary.half_width is not None:
        text += f" ± {summary.half_width * scale:.{digits}f}"
    return text


def _mean(summary: Summary, scale: float = 1.0, digits: int = 1) -> str:
    return "-" if summary.mean is None else f"{summary.mean * scale:.{digits}f}"


def _max(summary: Summary) -> str:
    return "-" if not summary.samples else f"{max(summary.samples):.0f}"


def _cycles(row: ExperimentSummary) -> str:
    return str(row.cycles_passed) + (f" ({row.cycles_failed} failed)" if row.cycles_failed else "")


COLUMNS: list[tuple[str, Callable[[ExperimentSummary], str]]] = [
    ("experiment", lambda r: r.experiment_id),
    ("cycles", _cycles),
    ("tokens/s (95% CI)", lambda r: _mean_ci(r.metrics["tokens_per_s"])),
    ("output tok", lambda r: _mean(r.metrics["output_tokens"], digits=0)),
    ("TTFT ms", lambda r: _mean(r.metrics["ttft_s.mean"], scale=1000)),
    ("ITL p50 ms", lambda r: _mean(r.metrics["itl_s.p50"], scale=1000, digits=2)),
    ("peak MB", lambda r: _max(r.metrics["peak_memory_mb"])),
]


def render_rows(rows: list[ExperimentSummary]) -> list[str]:
    cells = [[name for name, _ in COLUMNS]] + [[render(row) for _, render in COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]

    def line(values: list[str]) -> str:
        first = values[0].ljust(widths[0])
        return "  ".join([first] + [v.rjust(w) for v, w in zip(values[1:], widths[1:], strict=True)])

    return [line(cells[0]), "  ".join("-" * w for w in widths)] + [line(c) for c in cells[1:]]


def render_study(overview: StudyOverview, session: SessionResults) -> list[str]:
    lines = [overview.header_line() + f", order {overview.cycle_order}"]
    rows = session.summarise(overview.path)
    lines += render_rows(rows) if rows else ["(no experiment ran)"]
    if overview.skipped:
        lines.append(f"skipped configs ({len(overview.skipped)}):")
        lines += [f"  {label}: {reason}" for label, reason in overview.skipped]
    return lines


def render_session(session: SessionResults) -> list[str]:
    lines: list[str] = []
    for overview in session.studies.values():
        if lines:
            lines.append("")
        lines += render_study(overview, session)
    return lines
