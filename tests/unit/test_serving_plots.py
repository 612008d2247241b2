"""Serving plots: per request rate, steady J/token against p90 TTFT and p90 TPOT, with the Pareto front; nothing
drawn at zero for what was not measured, and no file without a serving experiment."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

import pytest

from pytest_llem.report.figures import front_of
from pytest_llem.report.serving_plots import by_rate, points, write_serving_plots
from pytest_llem.results.schema import ItemResult, LatencyStats, Metrics
from pytest_llem.results.session import SessionResults
from tests.unit.test_plots import PNG_MAGIC, STUDY, result, session_of

STEADY = "steady_energy_per_output_token_j"
draws = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="the plots extra is not installed")


def config(rate: float | str, scenario: str = "serving", **extra: Any) -> dict[str, Any]:
    """Shaped like ``ExperimentConfig.identity()`` of a serving experiment."""
    serving = {"request_rate": rate, "burstiness": 1.0, "slo": {"ttft_ms": None}} if scenario == "serving" else None
    return {"model": "builtin:tiny", "backend": "vllm", "scenario": scenario, "n": 8, "serving": serving, **extra}


def latency(p90: float | None) -> LatencyStats | None:
    return None if p90 is None else LatencyStats(mean=p90 / 2, p50=p90 / 2, p95=p90, n=8, p90=p90)


def metrics(j_per_token: float | None, ttft_p90: float | None, tpot_p90: float | None) -> Metrics:
    return Metrics(
        duration_s=10.0,
        output_tokens=256,
        energy_j=100.0,
        energy_per_output_token_j=100.0 / 256,
        ttft_s=latency(ttft_p90),
        tpot_s=latency(tpot_p90),
        steady_energy_per_output_token_j=j_per_token,
    )


def twice(experiment_id: str, settings: dict[str, Any], m: Metrics) -> list[ItemResult]:
    """Two equal cycles: zero-width CIs (no scipy import for a t interval in a unit test)."""
    return [result(experiment_id, settings, m, cycle=cycle) for cycle in (1, 2)]


def drawn(results: list[ItemResult]) -> dict[tuple[str, str], list[tuple[str, float, float]]]:
    """What each plot shows, by (rate, latency): its points (id, x ms, y J/tok)."""
    session = session_of(results)
    return {
        (rate, latency): [(p.name, p.x, p.y) for p in points(rows, latency)]
        for rate, rows in by_rate(session, STUDY).items()
        for latency in ("ttft_s.p90", "tpot_s.p90")
    }


def fronts(results: list[ItemResult]) -> dict[tuple[str, str], list[str]]:
    """Each plot's Pareto front, in the order its line joins it (by latency)."""
    session = session_of(results)
    return {
        (rate, latency): [p.name for p in front_of(points(rows, latency))]
        for rate, rows in by_rate(session, STUDY).items()
        for latency in ("ttft_s.p90", "tpot_s.p90")
    }


@draws
def test_one_plot_per_rate_and_latency_with_the_pareto_front_of_that_rate(tmp_path: Path) -> None:
    results = [
        # 2 req/s: fast-but-costly and slow-but-cheap are both on the front; "dominated" loses to "cheap" on both.
        *twice("fast", config(2.0), metrics(0.30, ttft_p90=0.050, tpot_p90=0.010)),
        *twice("cheap", config(2.0), metrics(0.10, ttft_p90=0.200, tpot_p90=0.030)),
        *twice("dominated", config(2.0), metrics(0.12, ttft_p90=0.250, tpot_p90=0.040)),
        # inf: one experiment, alone on its front; a different rate is a different plot.
        *twice("flood", config("inf"), metrics(0.05, ttft_p90=1.5, tpot_p90=0.020)),
    ]
    out_dir = tmp_path / "plots" / "nested"

    written = write_serving_plots(session_of(results), STUDY, "serve", out_dir)

    assert [p.name for p in written] == [
        f"serve-rate-2-{STEADY}-vs-ttft_s.p90.png",
        f"serve-rate-2-{STEADY}-vs-tpot_s.p90.png",
        f"serve-rate-inf-{STEADY}-vs-ttft_s.p90.png",
        f"serve-rate-inf-{STEADY}-vs-tpot_s.p90.png",
    ]
    assert set(written) == set(out_dir.iterdir())
    assert all(p.read_bytes().startswith(PNG_MAGIC) for p in written)
    assert fronts(results) == {  # by latency
        ("2", "ttft_s.p90"): ["fast", "cheap"],
        ("2", "tpot_s.p90"): ["fast", "cheap"],
        ("inf", "ttft_s.p90"): ["flood"],
        ("inf", "tpot_s.p90"): ["flood"],
    }
    ttft_points = drawn(results)[("2", "ttft_s.p90")]
    assert ttft_points == [("fast", 50.0, 0.30), ("cheap", 200.0, 0.10), ("dominated", 250.0, 0.12)]  # ms, J/tok


@draws
def test_an_unmeasured_experiment_is_left_out_never_drawn_at_zero(tmp_path: Path) -> None:
    results = [
        *twice("measured", config(4.0), metrics(0.2, ttft_p90=0.1, tpot_p90=0.02)),
        # No steady-state window (too few requests): no energy per token, so on no plot at all.
        *twice("no-window", config(4.0), metrics(None, ttft_p90=0.05, tpot_p90=0.01)),
        # Every request produced one token: no TPOT, so on the TTFT plot only.
        *twice("one-token", config(4.0), metrics(0.3, ttft_p90=0.08, tpot_p90=None)),
        # Nothing measured at this rate: no file for it.
        *twice("unpriced", config(8.0), metrics(None, ttft_p90=0.1, tpot_p90=0.02)),
    ]

    written = write_serving_plots(session_of(results), STUDY, "serve", tmp_path)

    assert [p.name for p in written] == [
        f"serve-rate-4-{STEADY}-vs-ttft_s.p90.png",
        f"serve-rate-4-{STEADY}-vs-tpot_s.p90.png",
    ]
    shown = drawn(results)
    assert [name for name, _, _ in shown[("4", "ttft_s.p90")]] == ["measured", "one-token"]
    assert [name for name, _, _ in shown[("4", "tpot_s.p90")]] == ["measured"]
    assert shown[("8", "ttft_s.p90")] == [] and shown[("8", "tpot_s.p90")] == []
    assert all(x > 0 and y > 0 and not math.isnan(x) for plot in shown.values() for _, x, y in plot)
    # "no-window" would dominate everything at (50 ms, 0 J/tok) if a missing value were drawn as zero.
    assert fronts(results)[("4", "ttft_s.p90")] == ["one-token", "measured"]


@draws
def test_a_single_cycle_has_no_error_bar_and_still_a_plot(tmp_path: Path) -> None:
    results = [result("once", config(1.0), metrics(0.2, ttft_p90=0.1, tpot_p90=0.02))]
    assert len(write_serving_plots(session_of(results), STUDY, "serve", tmp_path)) == 2


def test_no_serving_experiment_writes_nothing(tmp_path: Path) -> None:
    offline = [result("offline", config(1.0, scenario="offline"), metrics(0.2, ttft_p90=0.1, tpot_p90=0.02))]
    out_dir = tmp_path / "plots"
    assert write_serving_plots(session_of(offline), STUDY, "serve", out_dir) == []
    assert write_serving_plots(SessionResults(), STUDY, "serve", out_dir) == []  # no such study either
    assert not out_dir.exists()
