"""PNG plots of a serving study (``--llem-plots``): per request rate, steady-state energy per output token against
p90 TTFT, and against p90 TPOT, one point per experiment with its 95% CIs, the Pareto front (less of both) marked.

The figures come from ``SessionResults.summarise``: each is the mean over cycles of a per-load figure (a load's p90
TTFT, its steady J/token). An experiment missing either figure is left out of that plot (never drawn at 0), and a
plot with no experiment left is not written. matplotlib is imported only while drawing (``Figure`` +
``FigureCanvasAgg``, no pyplot); the caller checks that it is installed (``plots.write_plots`` does).

This module imports nothing from ``plots`` (``plots`` calls it), so it keeps its own small Pareto and figure helpers.
"""

from __future__ import annotations

import math
import textwrap
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..results.session import ExperimentSummary, SessionResults
from ..study.ids import safe_name
from .serving import STEADY, rate_text

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# (metric, what the axis says); latencies are drawn in milliseconds.
LATENCIES = (
    ("ttft_s.p90", "p90 time to first token (ms)"),
    ("tpot_s.p90", "p90 time per output token (ms)"),
)
ENERGY_LABEL = "steady-state energy per output token (J/tok)"


def write_serving_plots(session: SessionResults, study: str, stem: str, out_dir: Path) -> list[Path]:
    """For each request rate of ``study``'s serving experiments and each latency of ``LATENCIES``, one scatter of
    steady J/token against that latency, named ``<stem>-rate-<rate>-<energy>-vs-<latency>.png``; the files written,
    in rate order (inf last). ``out_dir`` is created when there is something to write."""
    by_rate: dict[str, list[ExperimentSummary]] = defaultdict(list)
    for row in session.summarise(study):
        if row.serving:
            by_rate[rate_text(row)].append(row)
    written = []
    for rate in sorted(by_rate, key=float):  # "inf" sorts last
        for latency, label in LATENCIES:
            path = out_dir / _file_name(f"{stem}-rate-{rate}-{STEADY}-vs-{latency}")
            if _plot_rate(study, rate, by_rate[rate], latency, label, path):
                written.append(path)
    return written


def _pareto(points: Sequence[tuple[str, float, float]]) -> list[str]:
    """Names of the points no other point dominates (no worse on both coordinates and better on one), minimising
    both, in input order; equal points keep each other."""

    def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
        return a[0] <= b[0] and a[1] <= b[1] and a != b

    return [name for name, x, y in points if not any(dominates((ox, oy), (x, y)) for _, ox, oy in points)]


def _plot_rate(study: str, rate: str, rows: Sequence[ExperimentSummary], latency: str, label: str, path: Path) -> bool:
    shown = [r for r in rows if r.metrics[latency].mean is not None and r.metrics[STEADY].mean is not None]
    if not shown:
        return False
    xs = [_mean(r, latency, 1000.0) for r in shown]
    ys = [_mean(r, STEADY) for r in shown]
    front = set(_pareto([(r.experiment_id, x, y) for r, x, y in zip(shown, xs, ys, strict=True)]))
    figure, axes = _new_figure()
    axes.errorbar(
        xs,
        ys,
        xerr=[_half_width(r, latency, 1000.0) for r in shown],
        yerr=[_half_width(r, STEADY) for r in shown],
        fmt="o",
        color="tab:gray",
        capsize=3,
        label="experiment (mean over cycles ± 95% CI)",
    )
    for row, x, y in zip(shown, xs, ys, strict=True):
        axes.annotate(
            _literal(row.experiment_id), (x, y), xytext=(4, 4), textcoords="offset points", fontsize="x-small"
        )
    _draw_front(
        axes, sorted((x, y, r.experiment_id) for r, x, y in zip(shown, xs, ys, strict=True) if r.experiment_id in front)
    )
    axes.set_xlabel(label)
    axes.set_ylabel(ENERGY_LABEL)
    title = f"{study}: serving at {rate} req/s, steady energy per token vs {label.split(' (')[0]}"
    axes.set_title(_literal(title + "\n(lower left is better)"), fontsize="medium")
    axes.legend(fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return True


def _mean(row: ExperimentSummary, metric: str, scale: float = 1.0) -> float:
    mean = row.metrics[metric].mean
    return mean * scale if mean is not None else math.nan


def _half_width(row: ExperimentSummary, metric: str, scale: float = 1.0) -> float:
    """Half the 95% CI; NaN (no bar) where a single cycle gives no interval."""
    half_width = row.metrics[metric].half_width
    return half_width * scale if half_width is not None else math.nan


def _draw_front(axes: Axes, front: Sequence[tuple[float, float, str]]) -> None:
    names = ", ".join(name for _, _, name in front)
    axes.plot(
        [x for x, _, _ in front],
        [y for _, y, _ in front],
        linestyle="-",
        marker="D",
        markersize=8,
        color="tab:red",
        label=_literal(textwrap.fill(f"Pareto front: {names}", width=60)),
        zorder=3,
    )


def _new_figure() -> tuple[Figure, Axes]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 5), layout="constrained")
    FigureCanvasAgg(figure)  # PNG rendering without pyplot or a global backend
    return figure, figure.subplots()


def _file_name(name: str) -> str:
    return safe_name(name) + ".png"


def _literal(text: str) -> str:
    """User text shown as typed: a pair of ``$`` would otherwise start matplotlib's math mode."""
    return text.replace("$", r"\$")
