"""What every plot shares: the Pareto front (pure), matplotlib figures without pyplot, and the one drawing both
energy-against-latency scatters make (points with their 95% CIs, the front marked)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..study.ids import safe_name

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class Point:
    """One experiment on a scatter: its means and the half widths of their 95% CIs (NaN: no bar)."""

    name: str
    x: float
    y: float
    x_half_width: float
    y_half_width: float


def pareto_front(points: Sequence[tuple[str, float, float]]) -> list[str]:
    """Names of the points no other point dominates, minimising both coordinates, in input order.

    A point dominates another when it is no worse on both and better on one, so equal points keep each other."""
    return [name for name, x, y in points if not any(_dominates((ox, oy), (x, y)) for _, ox, oy in points)]


def _dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] <= b[0] and a[1] <= b[1] and a != b


def front_of(points: Sequence[Point]) -> list[Point]:
    """The points on the Pareto front, by x then y (the order the front's line joins them)."""
    names = set(pareto_front([(p.name, p.x, p.y) for p in points]))
    return sorted((p for p in points if p.name in names), key=lambda p: (p.x, p.y))


def pareto_scatter(points: Sequence[Point], *, title: str, x_label: str, y_label: str, bars: str, path: Path) -> None:
    """The points with their CIs, each named, the Pareto front joined and listed in the legend; saved to ``path``."""
    figure, axes = new_figure()
    axes.errorbar(
        [p.x for p in points],
        [p.y for p in points],
        xerr=[p.x_half_width for p in points],
        yerr=[p.y_half_width for p in points],
        fmt="o",
        color="tab:gray",
        capsize=3,
        label=bars,
    )
    for p in points:
        axes.annotate(literal(p.name), (p.x, p.y), xytext=(4, 4), textcoords="offset points", fontsize="x-small")
    _draw_front(axes, front_of(points))
    axes.set_xlabel(x_label)
    axes.set_ylabel(y_label)
    axes.set_title(literal(title), fontsize="medium")
    axes.legend(fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    save(figure, path)


def _draw_front(axes: Axes, front: Sequence[Point]) -> None:
    names = ", ".join(p.name for p in front)
    axes.plot(
        [p.x for p in front],
        [p.y for p in front],
        linestyle="-",
        marker="D",
        markersize=8,
        color="tab:red",
        label=literal(textwrap.fill(f"Pareto front: {names}", width=60)),
        zorder=3,
    )


def new_figure() -> tuple[Figure, Axes]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 5), layout="constrained")
    FigureCanvasAgg(figure)  # attaches itself: PNG rendering without pyplot or a global backend
    return figure, figure.subplots()


def save(figure: Figure, path: Path) -> None:
    figure.savefig(path, dpi=110)


def file_name(name: str) -> str:
    return safe_name(name) + ".png"


def literal(text: str) -> str:
    """User text (ids, paths) shown as typed: a pair of ``$`` would otherwise start matplotlib's math mode."""
    return text.replace("$", r"\$")
