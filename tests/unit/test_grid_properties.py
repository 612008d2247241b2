"""Properties of the grid: product sizes, duplicates, cycle layouts, and "only ConfigError or skips, never a crash"."""

from __future__ import annotations

import itertools
import math
import warnings
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_llem import ConfigError, CycleOrder, ExperimentConfig, SkippedConfig, apply_cycles, expand_grid
from pytest_llem.study.grid import ConfigWarning

SETTINGS = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

# What each backend runs on each platform, written out here rather than read from the package.
RUNS: dict[tuple[str, str], frozenset[str]] = {
    ("pytorch", "cpu"): frozenset({"fp32", "fp16", "bf16"}),
    ("pytorch", "cuda"): frozenset({"fp32", "fp16", "bf16"}),
    ("vllm", "cpu"): frozenset({"fp32", "fp16", "bf16"}),
    ("vllm", "cuda"): frozenset({"fp32", "fp16", "bf16"}),
}

# ------------------------------------------------------------------------------------- (a) sizes and duplicates

# The dimensions swept here, their ExperimentConfig defaults and their value domains (small, so entries can collide).
DEFAULTS: dict[str, Any] = {
    "precision": "bf16",
    "n": 100,
    "max_output_tokens": 128,
    "random_seed": 42,
    "decoder.temperature": 1.0,
}
DOMAINS: dict[str, st.SearchStrategy[Any]] = {
    "precision": st.sampled_from(["fp32", "fp16", "bf16"]),
    "n": st.integers(1, 5),
    "max_output_tokens": st.integers(1, 5),
    "random_seed": st.integers(0, 3),
    "decoder.temperature": st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0]),
}
DIMS = tuple(DOMAINS)
Point = tuple[Any, ...]  # (backend, precision, n, max_output_tokens, random_seed, temperature)


def nested(values: dict[str, Any]) -> dict[str, Any]:
    """{"decoder.temperature": t, "n": 3} → {"decoder": {"temperature": t}, "n": 3}, as a user writes an entry."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key == "decoder.temperature":
            out["decoder"] = {"temperature": value}
        else:
            out[key] = value
    return out


def point(backend: str, *layers: dict[str, Any]) -> Point:
    merged = dict(DEFAULTS)
    for layer in layers:
        merged.update(layer)
    return (backend, *(merged[d] for d in DIMS))


def actual_point(exp: ExperimentConfig) -> Point:
    return (exp.backend, exp.precision, exp.n, exp.max_output_tokens, exp.random_seed, exp.decoder.temperature)


@st.composite
def grid_studies(draw: st.DrawFn) -> dict[str, Any]:
    platform = draw(st.sampled_from(["cpu", "cuda"]))
    backends = draw(st.lists(st.sampled_from(["pytorch", "vllm"]), min_size=1, max_size=2, unique=True))
    backend_in_sweep = draw(st.booleans())
    swept = draw(st.lists(st.sampled_from(DIMS), unique=True, max_size=len(DIMS)))
    sweep = {d: draw(st.lists(DOMAINS[d], min_size=1, max_size=3, unique=True)) for d in swept}
    fixed = {d: draw(DOMAINS[d]) for d in draw(st.lists(st.sampled_from(DIMS), unique=True, max_size=2))}
    entries = draw(
        st.lists(
            st.fixed_dictionaries(
                {},
                optional={"backend": st.sampled_from(["pytorch", "vllm"]), **DOMAINS},
            ),
            max_size=3,
        )
    )
    return {
        "platform": platform,
        "backends": backends,
        "backend_in_sweep": backend_in_sweep,
        "sweep": sweep,
        "fixed": fixed,
        "entries": entries,
    }


def study_mapping(case: dict[str, Any]) -> dict[str, Any]:
    raw: dict[str, Any] = {"model": "org/model", **nested(case["fixed"])}
    sweep: dict[str, Any] = {}
    if case["backend_in_sweep"]:
        sweep["backend"] = case["backends"]
    else:
        raw["backend"] = case["backends"] if len(case["backends"]) > 1 else case["backends"][0]
    sweep.update(case["sweep"])
    if sweep:
        raw["sweep"] = sweep
    if case["entries"]:
        raw["experiments"] = [nested(e) for e in case["entries"]]
    return raw


@SETTINGS
@given(grid_studies())
def test_experiment_count_is_product_plus_entries_minus_duplicates(case: dict[str, Any]) -> None:
    platform, backends, sweep, fixed = case["platform"], case["backends"], case["sweep"], case["fixed"]

    # The oracle: a naive product per backend (backends outer, last key fastest), then the entries.
    sweep_points: list[Point] = []
    if sweep or case["backend_in_sweep"] or not case["entries"]:
        for backend in backends:
            for combo in itertools.product(*sweep.values()):
                sweep_points.append(point(backend, fixed, dict(zip(sweep, combo, strict=True))))
    entry_points: list[Point] = []
    for entry in case["entries"]:
        values = {k: v for k, v in entry.items() if k != "backend"}
        for backend in [entry["backend"]] if "backend" in entry else backends:
            entry_points.append(point(backend, fixed, values))

    def runs(p: Point) -> bool:
        return p[1] in RUNS[(p[0], platform)]

    valid_sweep = [p for p in sweep_points if runs(p)]
    valid_entries = [p for p in entry_points if runs(p)]
    expected = list(dict.fromkeys(valid_sweep + valid_entries))  # first occurrence wins
    expected_skips = len(sweep_points) + len(entry_points) - len(valid_sweep) - len(valid_entries)

    raw = study_mapping(case)
    if not expected:
        with pytest.raises(ConfigError, match="nothing to run"):
            expand_grid(raw, platform=platform)
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        valid, skipped = expand_grid(raw, platform=platform)

    # The product formula, with precisions the backend cannot run here taken out of its grid.
    def grid_size(backend: str) -> int:
        allowed = RUNS[(backend, platform)]
        if "precision" not in sweep and point(backend, fixed)[1] not in allowed:
            return 0
        return math.prod(
            len([v for v in values if v in allowed]) if dim == "precision" else len(values)
            for dim, values in sweep.items()
        )

    product = sum(grid_size(b) for b in backends) if sweep_points else 0
    duplicates = len(valid_sweep) + len(valid_entries) - len(expected)
    assert len(valid_sweep) == product  # distinct values per dimension: no duplicates inside the sweep
    assert len(valid) == product + len(valid_entries) - duplicates
    assert [actual_point(e) for e in valid] == expected
    assert len(skipped) == expected_skips
    assert all(isinstance(s, SkippedConfig) and "precision" in s.reason for s in skipped)
    duplicate_warnings = [w for w in caught if issubclass(w.category, ConfigWarning)]
    assert len(duplicate_warnings) == duplicates


# ------------------------------------------------------------------------------------------- (b) cycle layouts


@SETTINGS
@given(
    count=st.integers(1, 8),
    n_cycles=st.integers(1, 6),
    order=st.sampled_from(list(CycleOrder)),
    seed=st.none() | st.integers(0, 2**32),
    digest=st.text(alphabet="0123456789abcdef", min_size=16, max_size=16),
)
def test_apply_cycles_keeps_every_experiment_n_cycles_times(
    count: int, n_cycles: int, order: CycleOrder, seed: int | None, digest: str
) -> None:
    exps = [
        ExperimentConfig.model_validate({"model": "m", "n": i + 1}, context={"platform": "cpu"}) for i in range(count)
    ]
    sequence = apply_cycles(exps, n_cycles, order, digest, shuffle_seed=seed)
    assert len(sequence) == count * n_cycles
    assert Counter(id(e) for e in sequence) == {id(e): n_cycles for e in exps}
    if order is CycleOrder.SEQUENTIAL:
        assert sequence == [e for e in exps for _ in range(n_cycles)]
    else:
        for start in range(0, len(sequence), count):
            assert sorted(e.n for e in sequence[start : start + count]) == list(range(1, count + 1))
    if order is CycleOrder.INTERLEAVED:
        assert sequence == exps * n_cycles
    assert apply_cycles(exps, n_cycles, order, digest, shuffle_seed=seed) == sequence


# ------------------------------------------------------------------------------------ (c) never a crash

PLAUSIBLE = [
    "pytorch", "vllm", "fp32", "fp16", "bf16", "org/model", "builtin:tiny-llama", "synthetic", "x.jsonl",
    "deterministic", "sdpa", "flash_attention_2", "static", "nf4", "float16", "auto", "interleaved",
]  # fmt: skip
KEYS = [
    "model", "backend", "precision", "n", "dataset", "decoder", "pytorch", "vllm", "engine", "sampling", "beam_search",
    "batch_size", "temperature", "preset", "max_num_seqs", "load_in_4bit", "load_in_8bit", "torch_compile",
    "torch_compile_mode", "use_cache", "cache_implementation", "attn_implementation", "gpu_memory_utilization",
    "kv_cache_memory_bytes", "passthrough_kwargs", "id", "path", "input_len", "seed", "warmup", "baseline", "energy",
    "gpu_indices", "do_sample", "attention", "n_cycles", "sweep", "experiments", "execution",
]  # fmt: skip
SWEEP_KEYS = [
    "precision", "n", "backend", "model", "pytorch.batch_size", "vllm.engine.max_num_seqs", "decoder.temperature",
    "vllm.engine.attention.backend", "pytorch", "vllm.sampling.n", "x.y", ".", "a..b", "decoder",
    "pytorch.load_in_4bit", "vllm.beam_search.beam_width", "dataset.path", "id",
]  # fmt: skip

scalars = (
    st.none() | st.booleans() | st.integers(-3, 300) | st.floats() | st.text(max_size=6) | st.sampled_from(PLAUSIBLE)
)
keys = st.sampled_from(KEYS) | st.text(max_size=5)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(keys, children, max_size=3),
    max_leaves=10,
)
sweeps = st.dictionaries(
    st.sampled_from(SWEEP_KEYS) | st.text(max_size=6), st.lists(values, max_size=3) | values, max_size=4
)
entries = st.lists(st.dictionaries(keys, values, max_size=4) | values, max_size=3)
# A '~user' base and a binary base file are tested in test_grid.py; here bases stay inside relative, missing paths.
bases = st.sampled_from(["missing.yaml", "", ".", "sub/missing.yaml"]) | st.none() | st.integers() | st.lists(scalars)
known = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from(["org/model", "m"]) | values,
        "backend": st.sampled_from(["pytorch", "vllm", ["pytorch", "vllm"], ["vllm", "pytorch"]]) | values,
        "precision": st.sampled_from(["fp32", "fp16", "bf16"]) | values,
        "n": values,
        "sweep": sweeps | values,
        "experiments": entries | values,
        "base": bases,
        "pytorch": st.dictionaries(keys, values, max_size=3) | values,
        "vllm": values,
        "decoder": values,
        "execution": values,
        "name": values,
        "dataset": values,
        "id": values,
        "passthrough_kwargs": values,
    },
)
extra = st.dictionaries((st.sampled_from(KEYS) | st.text(max_size=5)).filter(lambda k: k != "base"), values, max_size=2)
studies = st.tuples(known, extra).map(lambda pair: {**pair[1], **pair[0]})


@SETTINGS
@given(raw=studies, platform=st.sampled_from(["cpu", "cuda"]))
def test_any_study_gives_experiments_skips_or_config_error(raw: dict[str, Any], platform: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigWarning)
        try:
            valid, skipped = expand_grid(raw, platform=platform)  # type: ignore[arg-type]
        except ConfigError as exc:
            assert str(exc)
            return
    assert valid
    assert all(isinstance(e, ExperimentConfig) for e in valid)
    assert all(isinstance(s, SkippedConfig) and s.reason for s in skipped)
    identities = [e.identity() for e in valid]
    assert all(identities.count(i) == 1 for i in identities)
