"""A study's size is known before it is expanded: a runaway sweep is refused with the size and the keys that make it,
without expanding anything; within the limit, the count it checks is the count it then expands."""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_llem.errors import ConfigError
from pytest_llem.study.grid import DEFAULT_MAX_EXPERIMENTS, MAX_EXPERIMENTS_KEY, expand_grid

BASE: dict[str, Any] = {"model": "builtin:tiny-llama", "precision": "fp32"}
SIX_KEYS = ("n", "random_seed", "max_input_tokens", "max_output_tokens", "decoder.top_k", "pytorch.batch_size")


def test_a_runaway_sweep_is_refused_before_anything_is_expanded() -> None:
    raw = {**BASE, "sweep": {key: list(range(1, 31)) for key in SIX_KEYS}}  # 30^6 = 729,000,000 configs
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError) as caught:
            expand_grid(raw, platform="cpu")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(caught.value)
    assert caught.value.key == "sweep"
    assert "expands to 729,000,000 experiments" in message
    assert all(f"30 ({key})" in message for key in SIX_KEYS)
    assert f"limit of {DEFAULT_MAX_EXPERIMENTS:,} per study" in message and MAX_EXPERIMENTS_KEY in message
    assert peak < 2_000_000  # bytes: the sizes of six lists were read, no config was built


def test_the_limit_counts_each_backends_grid_and_the_entries() -> None:
    raw = {
        **BASE,
        "backend": ["pytorch", "vllm"],
        "sweep": {"n": [1, 2, 3], "pytorch.batch_size": [1, 2]},  # pytorch: 3 x 2, vllm: 3
        "experiments": [{"random_seed": 7}],  # one per backend
    }
    with pytest.raises(ConfigError, match=r"expands to 11 experiments .* plus 2 from experiments:"):
        expand_grid(raw, platform="cpu", max_experiments=10)
    experiments, skipped = expand_grid(raw, platform="cpu", max_experiments=11)
    assert len(experiments) + len(skipped) == 11


def test_entries_alone_are_limited_too() -> None:
    raw = {"experiments": [{**BASE, "random_seed": seed} for seed in range(5)]}
    with pytest.raises(ConfigError) as caught:
        expand_grid(raw, platform="cpu", max_experiments=4)
    assert caught.value.key == "experiments" and "expands to 5 experiments" in str(caught.value)


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=3),
    entries=st.integers(min_value=0, max_value=3),
    slack=st.integers(min_value=-2, max_value=2),
)
def test_the_size_checked_is_the_size_expanded(sizes: list[int], entries: int, slack: int) -> None:
    keys = ("n", "random_seed", "max_output_tokens")
    raw = {
        **BASE,
        "sweep": {key: list(range(1, size + 1)) for key, size in zip(keys, sizes, strict=False)},
        "experiments": [{"max_input_tokens": 100 + k} for k in range(entries)],
    }
    total = entries
    product = 1
    for size in sizes:
        product *= size
    total += product
    limit = max(1, total + slack)
    if total > limit:
        with pytest.raises(ConfigError, match=rf"expands to {total:,} experiments"):
            expand_grid(raw, platform="cpu", max_experiments=limit)
    else:
        experiments, skipped = expand_grid(raw, platform="cpu", max_experiments=limit)
        assert len(experiments) + len(skipped) == total
