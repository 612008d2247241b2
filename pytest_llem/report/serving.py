"""Serving studies in the summary: one row per experiment with the figures a deployment is chosen by, and, per
request rate, the configuration with the least steady-state energy per token among those meeting the SLO."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..results.session import ExperimentSummary
from ..results.stats import display_digits
from .cells import Column, cycles, mean, mean_ci

STEADY = "steady_energy_per_output_token_j"


def serving_settings(row: ExperimentSummary) -> dict[str, Any]:
    return row.config.get("serving") or {}


def rate_text(row: ExperimentSummary) -> str:
    rate = serving_settings(row).get("request_rate", "inf")
    return "inf" if rate == "inf" else f"{float(rate):g}"


def attainment_goal(row: ExperimentSummary) -> float:
    return float((serving_settings(row).get("slo") or {}).get("attainment", 0.9))


def has_slo(row: ExperimentSummary) -> bool:
    slo = serving_settings(row).get("slo") or {}
    return any(slo.get(key) is not None for key in ("ttft_ms", "tpot_ms", "e2el_ms"))


SERVING_COLUMNS: list[Column] = [
    ("experiment", lambda r: r.experiment_id),
    ("cycles", cycles),
    ("rate", rate_text),
    ("req/s", lambda r: mean(r.metrics["request_throughput_rps"], digits=2)),
    ("out tok/s", lambda r: mean(r.metrics["tokens_per_s"])),
    ("TTFT p50 ms", lambda r: mean(r.metrics["ttft_s.p50"], scale=1000)),
    ("TTFT p90 ms", lambda r: mean(r.metrics["ttft_s.p90"], scale=1000)),
    ("TPOT p50 ms", lambda r: mean(r.metrics["tpot_s.p50"], scale=1000, digits=2)),
    ("steady J/tok (95% CI)", lambda r: mean_ci(r.metrics[STEADY], digits=None)),
    ("J/req", lambda r: mean(r.metrics["energy_per_request_j"], digits=None)),
    ("mean W", lambda r: mean(r.metrics["mean_power_w"], digits=None)),
    ("goodput", lambda r: mean(r.metrics["goodput_rps"], digits=2)),
    ("SLO %", lambda r: mean(r.metrics["slo_attainment"], scale=100, digits=0)),
]


@dataclass(frozen=True)
class RateChoice:
    """At one request rate: the cheapest configuration meeting the SLO, what the others cost beside it, and which
    missed the SLO or could not be priced."""

    rate: str
    best: str | None
    best_j_per_token: float | None
    others: dict[str, float]  # experiment → how much more steady energy per token, as a fraction (0.12 = +12%)
    missing_slo: dict[str, float]  # experiment → its SLO attainment
    unpriced: list[str]  # no steady energy per token (not measured)
    slo: bool  # whether the rows set an SLO at all (if not, every configuration counts)

    def record(self) -> dict[str, Any]:
        return {
            "request_rate": self.rate,
            "best": self.best,
            "best_steady_energy_per_output_token_j": self.best_j_per_token,
            "more_than_best": self.others,
            "missing_slo": self.missing_slo,
            "not_measured": self.unpriced,
            "slo_set": self.slo,
        }

    def lines(self) -> list[str]:
        rate = f"rate {self.rate}" + ("" if self.rate == "inf" else " req/s")
        if self.best is None or self.best_j_per_token is None:
            why = "steady J/tok was not measured" if self.unpriced else "no configuration meets the SLO"
            lines = [f"  {rate}: {why}"]
        else:
            meeting = "meeting the SLO" if self.slo else "(no SLO set)"
            digits = display_digits(self.best_j_per_token)
            lines = [
                f"  {rate}: {self.best} costs the least {meeting}: {self.best_j_per_token:.{digits}f} J/tok steady"
            ]
            lines += [f"    {name}: {more:+.0%}" for name, more in self.others.items()]
        lines += [
            f"    {name}: misses the SLO ({share:.0%} of requests within it)"
            for name, share in self.missing_slo.items()
        ]
        lines += [f"    {name}: steady J/tok not measured" for name in self.unpriced]
        return lines


def choices(rows: list[ExperimentSummary]) -> list[RateChoice]:
    """Per request rate (in the rows' order): the configurations meeting the SLO in at least ``slo.attainment`` of
    requests (on average over cycles), ranked by mean steady J/token."""
    by_rate: dict[str, list[ExperimentSummary]] = {}
    for row in rows:
        by_rate.setdefault(rate_text(row), []).append(row)
    found = []
    for rate, group in by_rate.items():
        slo = any(has_slo(r) for r in group)
        missing = {
            r.experiment_id: attained
            for r in group
            if has_slo(r)
            and (attained := r.metrics["slo_attainment"].mean) is not None
            and attained < attainment_goal(r)
        }
        eligible = [r for r in group if r.experiment_id not in missing]
        priced = [r for r in eligible if r.metrics[STEADY].mean is not None]
        unpriced = [r.experiment_id for r in eligible if r.metrics[STEADY].mean is None]
        priced.sort(key=lambda r: r.metrics[STEADY].mean or math.inf)
        best = priced[0] if priced else None
        cost = best.metrics[STEADY].mean if best else None
        others = {r.experiment_id: (r.metrics[STEADY].mean or 0.0) / cost - 1.0 for r in priced[1:] if cost}
        found.append(RateChoice(rate, best.experiment_id if best else None, cost, others, missing, unpriced, slo))
    return found


def render_serving(rows: list[ExperimentSummary], extra: list[Column]) -> tuple[list[Column], list[str]]:
    """The serving table's columns (with ``extra``, e.g. the gate's) and the lines under it."""
    below = ["cheapest steady energy per token meeting the SLO, per request rate:"]
    for choice in choices(rows):
        below += choice.lines()
    return SERVING_COLUMNS + extra, below
