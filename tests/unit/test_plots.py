"""Plots of results: which PNGs a set of results yields, the Pareto front, and the missing-matplotlib error."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_llem.report.figures import pareto_front
from pytest_llem.report.plots import PlotsUnavailable, config_value, swept_settings, write_plots
from pytest_llem.results.schema import ItemResult, LatencyStats, Metrics
from pytest_llem.results.session import SessionResults, StudyOverview

STUDY = "studies/sweep.yaml"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
draws = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="the plots extra is not installed")


def config(precision: str = "fp32", batch_size: int = 1, **extra: Any) -> dict[str, Any]:
    """Shaped like ``ExperimentConfig.identity()``: sections nested, unset settings None."""
    return {
        "model": "builtin:tiny",
        "backend": "pytorch",
        "precision": precision,
        "n": 4,
        "pytorch": {"batch_size": batch_size, "attn_implementation": None},
        "decoder": {"temperature": 1.0, "top_k": 50},
        **extra,
    }


def metrics(energy_j: float | None = 10.0, ttft: list[float] | None = None, **fields: Any) -> Metrics:
    return Metrics(
        duration_s=2.0,
        output_tokens=100,
        energy_j=energy_j,
        energy_per_output_token_j=energy_j / 100 if energy_j is not None else None,
        tokens_per_s=50.0,
        ttft_s=LatencyStats.of(ttft or []),
        **fields,
    )


def result(
    experiment_id: str, settings: dict[str, Any], m: Metrics, *, cycle: int = 1, study: str = STUDY, kind: str = "study"
) -> ItemResult:
    return ItemResult(
        study=study,
        study_design_hash="design",
        experiment_id=experiment_id,
        config_hash=f"hash-{experiment_id}",
        cycle=cycle,
        kind=kind,  # type: ignore[arg-type]
        backend=settings.get("backend"),
        model=settings.get("model"),
        config=settings,
        metrics=m,
        started_at=0.0,
        finished_at=1.0,
    )


def session_of(results: list[ItemResult]) -> SessionResults:
    """A session that collected every study of ``results`` (its experiments in first-seen order) and reported them;
    fixture windows belong to no study."""
    session = SessionResults()
    studies: dict[str, dict[str, None]] = {}
    for r in results:
        session.add_result(r)
        if r.kind == "study":
            studies.setdefault(r.study, {})[r.experiment_id] = None
    for path, experiment_ids in studies.items():
        cycles = max(r.cycle for r in results if r.study == path)
        session.add_study(StudyOverview(path, "design", [*experiment_ids], n_cycles=cycles, cycle_order="interleaved"))
    return session


def names(paths: list[Path]) -> set[str]:
    return {path.name for path in paths}


@draws
def test_a_two_by_two_sweep_gives_each_measured_metric_against_each_swept_setting_plus_a_pareto_plot(
    tmp_path: Path,
) -> None:
    results = [
        # Equal cycles: zero-width CIs, which spare this unit test scipy's 2 s import for the t interval.
        result(f"{precision}-bs{batch}", config(precision, batch), metrics(10.0 * batch), cycle=cycle)
        for precision in ("fp32", "fp16")
        for batch in (1, 4)
        for cycle in (1, 2)
    ]
    out_dir = tmp_path / "plots" / "nested"  # created on demand

    written = write_plots(session_of(results), out_dir)

    measured = ("energy_per_output_token_j", "energy_j", "tokens_per_s")
    expected = {f"sweep-{m}-vs-{s}.png" for m in measured for s in ("precision", "pytorch.batch_size")}
    assert names(written) == expected | {"sweep-pareto.png"}
    assert written == sorted(written) and set(written) == set(out_dir.iterdir())
    assert all(path.read_bytes().startswith(PNG_MAGIC) for path in written)
    # Latencies, power and memory were never measured: no file for them rather than a line of zeros.
    assert not any(m in path.name for path in written for m in ("ttft_s", "mean_power_w", "itl_s", "peak_memory_mb"))


@draws
def test_a_single_experiment_gets_only_its_pareto_plot_and_none_without_energy(tmp_path: Path) -> None:
    alone = [result("only", config(), metrics(ttft=[0.1, 0.2]), cycle=c) for c in (1, 2)]
    assert names(write_plots(session_of(alone), tmp_path / "a")) == {"sweep-pareto.png"}

    unmeasured = [result(f"e{b}", config(batch_size=b), metrics(energy_j=None)) for b in (1, 2)]
    assert names(write_plots(session_of(unmeasured), tmp_path / "b")) == {
        "sweep-tokens_per_s-vs-pytorch.batch_size.png"
    }


@draws
def test_nested_and_categorical_settings_name_their_files_by_dotted_key_per_study(tmp_path: Path) -> None:
    results = [
        result(f"t{t}", {**config(), "decoder": {"temperature": t, "top_k": 50}}, metrics(energy_j=None), study=study)
        for t in (0.5, 1.0)
        for study in ("a/sweep.yaml", "b/sweep.yaml", "other dir/my study.yaml")
    ]
    written = names(write_plots(session_of(results), tmp_path))
    # Two studies share the stem "sweep": their paths tell them apart; unsafe characters become "_".
    assert written == {
        "a_sweep-tokens_per_s-vs-decoder.temperature.png",
        "b_sweep-tokens_per_s-vs-decoder.temperature.png",
        "my_study-tokens_per_s-vs-decoder.temperature.png",
    }


@draws
def test_llem_energy_windows_get_a_bar_chart_per_measured_energy_metric(tmp_path: Path) -> None:
    windows = [
        result(
            "test_gen::prefill", {}, Metrics(duration_s=1.0, energy_j=3.0), study="tests/test_gen.py", kind="fixture"
        ),
        result("test_gen::decode", {}, Metrics(duration_s=1.0), study="tests/test_gen.py", kind="fixture"),
    ]
    written = write_plots(session_of(windows), tmp_path)
    assert names(written) == {"test_gen-windows-energy_j.png"}  # no tokens counted: no J/tok chart
    assert written[0].read_bytes().startswith(PNG_MAGIC)


def test_swept_settings_are_the_nested_keys_that_differ_and_an_absent_section_is_not_one() -> None:
    nested = {"a": 1, "s": {"b": None, "c": {"d": [1, 2]}}, "e": {}}
    assert {path: config_value(nested, path) for path in [("a",), ("s", "b"), ("s", "c", "d"), ("e", "f")]} == {
        ("a",): 1,
        ("s", "b"): None,
        ("s", "c", "d"): "[1, 2]",  # a list as its JSON text: comparable and shown like any value
        ("e", "f"): None,  # absent like unset
    }
    pytorch = result("pt", config(batch_size=2), metrics())
    vllm_settings = {**config(), "backend": "vllm", "vllm": {"engine": None}}
    del vllm_settings["pytorch"]
    vllm = result("vl", vllm_settings, metrics())
    assert [".".join(path) for path in swept_settings([pytorch.config, vllm.config])] == [
        "backend",
        "pytorch.batch_size",
    ]


def test_the_pareto_front_keeps_the_undominated_and_equal_points() -> None:
    points = [("fast", 1.0, 5.0), ("mid", 2.0, 2.0), ("worse", 3.0, 3.0), ("frugal", 5.0, 1.0), ("tie", 2.0, 2.0)]
    assert pareto_front(points) == ["fast", "mid", "frugal", "tie"]
    assert pareto_front([("edge", 2.0, 2.0), ("better_y", 2.0, 1.0)]) == ["better_y"]
    assert pareto_front([]) == []


coordinate = st.floats(min_value=0, max_value=10, allow_nan=False).map(lambda v: round(v, 1))  # ties are common
point_lists = st.lists(st.tuples(coordinate, coordinate), max_size=25).map(
    lambda xy: [(f"p{i}", x, y) for i, (x, y) in enumerate(xy)]
)


def dominates(a: tuple[str, float, float], b: tuple[str, float, float]) -> bool:
    return a[1] <= b[1] and a[2] <= b[2] and (a[1] < b[1] or a[2] < b[2])


@given(point_lists)
def test_no_front_point_is_dominated_and_every_other_point_is_dominated_by_the_front(
    points: list[tuple[str, float, float]],
) -> None:
    front = set(pareto_front(points))
    on_front = [p for p in points if p[0] in front]
    assert bool(front) == bool(points)
    assert not any(dominates(other, p) for p in on_front for other in points)
    assert all(any(dominates(f, p) for f in on_front) for p in points if p[0] not in front)


def test_without_matplotlib_plots_say_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what `import matplotlib` meets when it is not installed
    with pytest.raises(PlotsUnavailable, match=r"pip install 'pytest-llem\[plots\]'"):
        write_plots(session_of([result("e", config(), metrics())]), tmp_path / "plots")
    assert not (tmp_path / "plots").exists()


@draws
def test_a_swept_power_limit_gets_energy_per_token_and_latency_drawn_against_it(tmp_path: Path) -> None:
    results = [
        result(f"pl{limit}", config(gpu={"power_limit_w": limit, "locked_clocks_mhz": None}),
               metrics(3000.0 / limit, ttft=[limit / 1e4], gpu_power_limit_w=float(limit)))
        for limit in (300, 500, 700)
    ]  # fmt: skip
    written = names(write_plots(session_of(results), tmp_path))
    assert {
        "sweep-energy_per_output_token_j-vs-gpu.power_limit_w.png",
        "sweep-ttft_s.mean-vs-gpu.power_limit_w.png",
    } <= written
    assert not any("gpu_power_limit_w" in name for name in written)  # the setting is an axis, not a metric
