"""PNG plots of a serving study (``--llem-plots``): per request rate, steady-state energy per output token against
p90 TTFT, and against p90 TPOT, one point per experiment with its 95% CIs, the Pareto front (less of both) marked.

The figures come from ``SessionResults.summarise``: each is the mean over cycles of a per-load figure (a load's p90
TTFT, its steady J/token). An experiment missing either figure is left out of that plot (never drawn at 0), and a
plot with no experiment left is not written. The caller checks that matplotlib is installed (``plots.write_plots``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from ..results.session import ExperimentSummary, SessionResults
from .figures import Point, file_name, pareto_scatter
from .serving import STEADY, rate_text

# (metric, what the axis says); latencies are drawn in milliseconds.
LATENCIES = (
    ("ttft_s.p90", "p90 time to first token (ms)"),
    ("tpot_s.p90", "p90 time per output token (ms)"),
)
ENERGY_LABEL = "steady-state energy per output token (J/tok)"


def by_rate(session: SessionResults, study: str) -> dict[str, list[ExperimentSummary]]:
    """The study's serving experiments by request rate, in rate order (inf last)."""
    grouped: dict[str, list[ExperimentSummary]] = defaultdict(list)
    for row in session.summarise(study):
        if row.serving:
            grouped[rate_text(row)].append(row)
    return {rate: grouped[rate] for rate in sorted(grouped, key=float)}  # "inf" sorts last


def points(rows: list[ExperimentSummary], latency: str) -> list[Point]:
    """The experiments with both a mean ``latency`` (ms) and a mean steady J/token, as scatter points."""
    shown = [r for r in rows if r.metrics[latency].mean is not None and r.metrics[STEADY].mean is not None]
    return [
        Point(r.experiment_id, _mean(r, latency, 1000.0), _mean(r, STEADY), _half(r, latency, 1000.0), _half(r, STEADY))
        for r in shown
    ]


def write_serving_plots(session: SessionResults, study: str, stem: str, out_dir: Path) -> list[Path]:
    """For each request rate of ``study``'s serving experiments and each latency of ``LATENCIES``, one scatter of
    steady J/token against that latency, named ``<stem>-rate-<rate>-<energy>-vs-<latency>.png``; the files written,
    in rate order. ``out_dir`` is created when there is something to write."""
    written = []
    for rate, rows in by_rate(session, study).items():
        for latency, label in LATENCIES:
            shown = points(rows, latency)
            if not shown:
                continue
            path = out_dir / file_name(f"{stem}-rate-{rate}-{STEADY}-vs-{latency}")
            title = f"{study}: serving at {rate} req/s, steady energy per token vs {label.split(' (')[0]}"
            pareto_scatter(
                shown,
                title=title + "\n(lower left is better)",
                x_label=label,
                y_label=ENERGY_LABEL,
                bars="experiment (mean over cycles ± 95% CI)",
                path=path,
            )
            written.append(path)
    return written


def _mean(row: ExperimentSummary, metric: str, scale: float = 1.0) -> float:
    mean = row.metrics[metric].mean
    return mean * scale if mean is not None else math.nan


def _half(row: ExperimentSummary, metric: str, scale: float = 1.0) -> float:
    """Half the 95% CI; NaN (no bar) where a single cycle gives no interval."""
    half_width = row.metrics[metric].half_width
    return half_width * scale if half_width is not None else math.nan
