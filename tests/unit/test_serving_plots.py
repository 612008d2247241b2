"""Serving plots: per request rate, steady J/token against p90 TTFT and p90 TPOT, with the Pareto front; nothing
drawn at zero for what was not measured, and no file without a serving experiment."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

import pytest

from pytest_llem.report import serving_plots
from pytest_llem.report.serving_plots import _pareto, write_serving_plots
from pytest_llem.results.schema import ItemResult, LatencyStats, Metrics
from pytest_llem.results.session import SessionResults, StudyOverview

STUDY = "studies/serve.yaml"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
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


def result(experiment_id: str, settings: dict[str, Any], m: Metrics, cycle: int = 1) -> ItemResult:
    return ItemResult(
        study=STUDY,
        study_design_hash="design",
        experiment_id=experiment_id,
        config_hash=f"hash-{experiment_id}",
        cycle=cycle,
        backend=settings.get("backend"),
        model=settings.get("model"),
        config=settings,
        metrics=m,
        started_at=0.0,
        finished_at=1.0,
    )


def session_of(results: list[ItemResult]) -> SessionResults:
    session = SessionResults()
    for r in results:
        session.add_result(r)
    experiment_ids = list(dict.fromkeys(r.experiment_id for r in results))
    cycles = max(r.cycle for r in results)
    session.add_study(StudyOverview(STUDY, "design", experiment_ids, n_cycles=cycles, cycle_order="interleaved"))
    return session


def twice(experiment_id: str, settings: dict[str, Any], m: Metrics) -> list[ItemResult]:
    """Two equal cycles: zero-width CIs (no scipy import for a t interval in a unit test)."""
    return [result(experiment_id, settings, m, cycle) for cycle in (1, 2)]


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What each plot drew: its points (id, x ms, y J/tok) and its Pareto front, by file name."""
    seen: dict[str, Any] = {"points": [], "fronts": []}
    pareto = serving_plots._pareto
    draw_front = serving_plots._draw_front

    def spy_pareto(points: Any) -> list[str]:
        seen["points"].append(list(points))
        return pareto(points)

    def spy_front(axes: Any, front: Any) -> None:
        seen["fronts"].append([name for _, _, name in front])
        draw_front(axes, front)

    monkeypatch.setattr(serving_plots, "_pareto", spy_pareto)
    monkeypatch.setattr(serving_plots, "_draw_front", spy_front)
    return seen


@draws
def test_one_plot_per_rate_and_latency_with_the_pareto_front_of_that_rate(tmp_path: Path, drawn: dict) -> None:
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
    assert drawn["fronts"] == [["fast", "cheap"], ["fast", "cheap"], ["flood"], ["flood"]]  # sorted by latency
    ttft_points = drawn["points"][0]
    assert ttft_points == [("fast", 50.0, 0.30), ("cheap", 200.0, 0.10), ("dominated", 250.0, 0.12)]  # ms, J/tok


@draws
def test_an_unmeasured_experiment_is_left_out_never_drawn_at_zero(tmp_path: Path, drawn: dict) -> None:
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
    ttft, tpot = drawn["points"]
    assert [name for name, _, _ in ttft] == ["measured", "one-token"]
    assert [name for name, _, _ in tpot] == ["measured"]
    assert all(x > 0 and y > 0 and not math.isnan(x) for points in drawn["points"] for _, x, y in points)
    # "no-window" would dominate everything at (50 ms, 0 J/tok) if a missing value were drawn as zero.
    assert drawn["fronts"][0] == ["one-token", "measured"]


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


def test_the_pareto_set_minimises_both_coordinates() -> None:
    points = [("a", 1.0, 5.0), ("b", 2.0, 2.0), ("c", 3.0, 3.0), ("d", 5.0, 1.0), ("e", 2.0, 2.0), ("f", 1.0, 6.0)]
    # c is beaten by b on both; f by a (same latency, more energy); b and e are equal and keep each other.
    assert _pareto(points) == ["a", "b", "d", "e"]
    assert _pareto([]) == []
    assert _pareto([("alone", 9.0, 9.0)]) == ["alone"]
