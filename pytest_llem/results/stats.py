"""Statistics across cycles: mean, sample standard deviation and a Student-t 95% confidence interval."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

CONFIDENCE = 0.95


def display_digits(value: float) -> int:
    """Decimals that show about three significant figures (0.0523 J/tok, 12.3 W, 1234 J)."""
    if value == 0 or not math.isfinite(value):
        return 1
    return max(0, min(4, 2 - math.floor(math.log10(abs(value)))))


@dataclass(frozen=True)
class Summary:
    """Summary of one metric over the cycles of one experiment; missing samples (None) are left out."""

    samples: tuple[float, ...]

    @classmethod
    def of(cls, values: Sequence[float | None]) -> Summary:
        return cls(tuple(v for v in values if v is not None and math.isfinite(v)))

    @property
    def n(self) -> int:
        return len(self.samples)

    @cached_property
    def mean(self) -> float | None:
        return statistics.fmean(self.samples) if self.samples else None

    @cached_property
    def stdev(self) -> float | None:
        return statistics.stdev(self.samples) if self.n >= 2 else None

    @cached_property
    def ci95(self) -> tuple[float, float] | None:
        """Two-sided 95% interval for the mean (t distribution: a handful of cycles is a small sample)."""
        if self.n < 2 or self.mean is None:
            return None
        if self.stdev == 0:
            return (self.mean, self.mean)
        from scipy import stats  # 1 s to import: only when a summary is printed, never at collection

        low, high = stats.t.interval(CONFIDENCE, df=self.n - 1, loc=self.mean, scale=stats.sem(self.samples))
        return (float(low), float(high))

    @property
    def half_width(self) -> float | None:
        return None if self.ci95 is None else (self.ci95[1] - self.ci95[0]) / 2
