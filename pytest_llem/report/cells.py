"""How a table cell shows a summary across cycles: its mean, with the 95% CI's half width, or "-" for nothing
measured; shared by the offline and serving tables."""

from __future__ import annotations

from collections.abc import Callable

from ..results.session import ExperimentSummary
from ..results.stats import Summary, display_digits

Column = tuple[str, Callable[[ExperimentSummary], str]]


def mean_ci(summary: Summary, scale: float = 1.0, digits: int | None = 1) -> str:
    """``digits`` None: about three significant figures."""
    if summary.mean is None:
        return "-"
    if digits is None:
        digits = display_digits(summary.mean * scale)
    text = f"{summary.mean * scale:.{digits}f}"
    if summary.half_width is not None:
        text += f" ± {summary.half_width * scale:.{digits}f}"
    return text


def mean(summary: Summary, scale: float = 1.0, digits: int | None = 1) -> str:
    """``digits`` None: about three significant figures."""
    if summary.mean is None:
        return "-"
    if digits is None:
        digits = display_digits(summary.mean * scale)
    return f"{summary.mean * scale:.{digits}f}"


def largest(summary: Summary) -> str:
    return "-" if not summary.samples else f"{max(summary.samples):.0f}"


def cycles(row: ExperimentSummary) -> str:
    return str(row.cycles_passed) + (f" ({row.cycles_failed} failed)" if row.cycles_failed else "")
