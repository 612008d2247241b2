"""compute_study_design_hash, apply_cycles and number_cycles (spec §2.5, §2.8 items 27–38)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_llem import CycleOrder, ExperimentConfig, apply_cycles, compute_study_design_hash
from pytest_llem.study.grid import compute_config_hash, number_cycles
from pytest_llem.study.load import load_study

HEX16 = re.compile(r"[0-9a-f]{16}")


def make(**fields: Any) -> ExperimentConfig:
    return ExperimentConfig.model_validate({"model": "org/model", **fields}, context={"platform": "cpu"})


def experiments(count: int) -> list[ExperimentConfig]:
    return [make(n=i + 1) for i in range(count)]


def names(sequence: list[ExperimentConfig]) -> list[int]:
    return [e.n for e in sequence]


# ------------------------------------------------------------------------------------------------------------- hashing


def test_hash_is_16_lowercase_hex() -> None:
    digest = compute_study_design_hash(experiments(2))
    assert HEX16.fullmatch(digest), digest


def test_same_experiments_same_hash() -> None:
    assert compute_study_design_hash(experiments(3)) == compute_study_design_hash(experiments(3))


def test_hash_differs_when_an_experiment_differs() -> None:
    assert compute_study_design_hash([make(n=10)]) != compute_study_design_hash([make(n=20)])
    assert compute_study_design_hash([make(n=10), make(n=20)]) != compute_study_design_hash([make(n=10), make(n=21)])
    assert compute_study_design_hash([make()]) != compute_study_design_hash([make(decoder={"top_k": 3})])


def test_hash_differs_when_an_experiment_is_added() -> None:
    assert compute_study_design_hash(experiments(2)) != compute_study_design_hash(experiments(3))


def test_hash_is_stable_across_calls() -> None:
    exps = experiments(4)
    digests = {compute_study_design_hash(exps) for _ in range(5)}
    assert len(digests) == 1


def test_id_is_not_part_of_the_hash() -> None:
    assert compute_study_design_hash([make(id="one", n=5)]) == compute_study_design_hash([make(id="two", n=5)])
    assert compute_study_design_hash([make(id="one", n=5)]) == compute_study_design_hash([make(n=5)])
    assert compute_config_hash(make(id="one")) == compute_config_hash(make())


def test_config_hash_is_16_hex_and_tells_experiments_apart() -> None:
    assert HEX16.fullmatch(compute_config_hash(make()))
    assert compute_config_hash(make(n=1)) != compute_config_hash(make(n=2))


def _write_study(path: Path, execution: dict[str, Any] | None) -> Path:
    data: dict[str, Any] = {"name": "same", "model": "org/model", "sweep": {"n": [1, 2], "precision": ["fp32", "bf16"]}}
    if execution is not None:
        data["execution"] = execution
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def test_hash_ignores_execution(tmp_path: Path) -> None:
    one = load_study(_write_study(tmp_path / "one.yaml", {"n_cycles": 1}), platform="cpu")
    five = load_study(
        _write_study(tmp_path / "five.yaml", {"n_cycles": 5, "cycle_order": "shuffled", "shuffle_seed": 3}),
        platform="cpu",
    )
    none = load_study(_write_study(tmp_path / "none.yaml", None), platform="cpu")
    assert one.execution.n_cycles == 1 and five.execution.n_cycles == 5
    assert one.study_design_hash is not None
    assert one.study_design_hash == five.study_design_hash == none.study_design_hash
    assert one.study_design_hash == compute_study_design_hash(one.experiments)


# ------------------------------------------------------------------------------------------------------------- cycles


def test_sequential_order() -> None:
    a, b = experiments(2)
    assert apply_cycles([a, b], 3, CycleOrder.SEQUENTIAL, "0" * 16) == [a, a, a, b, b, b]
    assert apply_cycles([a, b], 3, "sequential", "0" * 16) == [a, a, a, b, b, b]


def test_interleaved_order() -> None:
    a, b = experiments(2)
    assert apply_cycles([a, b], 3, CycleOrder.INTERLEAVED, "0" * 16) == [a, b, a, b, a, b]
    assert apply_cycles([a, b], 3, "interleaved", "0" * 16) == [a, b, a, b, a, b]


def test_shuffled_is_deterministic_for_a_seed() -> None:
    exps = experiments(6)
    digest = compute_study_design_hash(exps)
    first = apply_cycles(exps, 4, CycleOrder.SHUFFLED, digest, shuffle_seed=42)
    second = apply_cycles(exps, 4, CycleOrder.SHUFFLED, digest, shuffle_seed=42)
    assert names(first) == names(second)
    # The seed decides, not the hash.
    assert names(apply_cycles(exps, 4, "shuffled", "f" * 16, shuffle_seed=42)) == names(first)


def test_shuffled_without_seed_follows_the_hash() -> None:
    exps = experiments(6)
    digest = compute_study_design_hash(exps)
    first = apply_cycles(exps, 3, CycleOrder.SHUFFLED, digest)
    second = apply_cycles(experiments(6), 3, CycleOrder.SHUFFLED, compute_study_design_hash(experiments(6)))
    assert names(first) == names(second)
    derived = apply_cycles(exps, 3, CycleOrder.SHUFFLED, digest, shuffle_seed=int(digest, 16) & 0xFFFFFFFF)
    assert names(first) == names(derived)


def test_shuffled_differs_between_seeds() -> None:
    exps = experiments(5)
    digest = compute_study_design_hash(exps)
    one = apply_cycles(exps, 2, CycleOrder.SHUFFLED, digest, shuffle_seed=1)
    other = apply_cycles(exps, 2, CycleOrder.SHUFFLED, digest, shuffle_seed=999)
    assert names(one) != names(other)


def test_shuffled_actually_shuffles() -> None:
    exps = experiments(8)
    sequence = apply_cycles(exps, 3, CycleOrder.SHUFFLED, compute_study_design_hash(exps), shuffle_seed=7)
    cycles = [names(sequence[i : i + 8]) for i in range(0, 24, 8)]
    assert any(cycle != names(exps) for cycle in cycles)


@pytest.mark.parametrize("order", list(CycleOrder))
def test_every_cycle_is_a_permutation(order: CycleOrder) -> None:
    exps = experiments(5)
    sequence = apply_cycles(exps, 4, order, compute_study_design_hash(exps), shuffle_seed=11)
    assert len(sequence) == 20
    assert Counter(names(sequence)) == {n: 4 for n in names(exps)}
    if order is not CycleOrder.SEQUENTIAL:
        for start in range(0, 20, 5):
            assert sorted(names(sequence[start : start + 5])) == names(exps)


@pytest.mark.parametrize("order", list(CycleOrder))
def test_one_cycle_returns_the_list_unchanged(order: CycleOrder) -> None:
    exps = experiments(5)
    sequence = apply_cycles(exps, 1, order, compute_study_design_hash(exps), shuffle_seed=3)
    assert sequence == exps
    assert all(x is y for x, y in zip(sequence, exps, strict=True))
    assert sequence is not exps


def test_apply_cycles_does_not_modify_its_input() -> None:
    exps = experiments(4)
    before = list(exps)
    apply_cycles(exps, 3, CycleOrder.SHUFFLED, compute_study_design_hash(exps))
    assert exps == before


@pytest.mark.parametrize("order", list(CycleOrder))
def test_number_cycles_counts_each_experiments_occurrences(order: CycleOrder) -> None:
    exps = experiments(3)
    sequence = apply_cycles(exps, 4, order, compute_study_design_hash(exps), shuffle_seed=5)
    numbered = number_cycles(sequence)
    assert [e for e, _ in numbered] == sequence
    for exp in exps:
        assert [k for e, k in numbered if e is exp] == [1, 2, 3, 4]


def test_number_cycles_interleaved_layout() -> None:
    a, b = experiments(2)
    numbered = number_cycles(apply_cycles([a, b], 3, CycleOrder.INTERLEAVED, "0" * 16))
    assert [(e.n, k) for e, k in numbered] == [(1, 1), (2, 1), (1, 2), (2, 2), (1, 3), (2, 3)]


# ------------------------------------------------------------------------------------------------- canonical identity

_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.floats(-2, 2, allow_nan=False), st.text(max_size=3)
)


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 5),
    temperature=st.one_of(st.integers(0, 2), st.floats(0, 2)),
    batch=st.one_of(st.none(), st.integers(1, 4)),
    backend=st.sampled_from(["pytorch", "vllm"]),
    extra=st.dictionaries(st.text("ab", min_size=1, max_size=2), _VALUES, max_size=2),
    gpus=st.one_of(st.none(), st.lists(st.integers(0, 3), max_size=2)),
    limit=st.one_of(st.none(), st.integers(100, 700)),
)
def test_identity_json_is_the_sorted_dump_byte_for_byte(
    n: int,
    temperature: float,
    batch: int | None,
    backend: str,
    extra: dict[str, Any],
    gpus: list[int] | None,
    limit: int | None,
) -> None:
    """The identity is assembled from cached per-section pieces; it must stay exactly the JSON that config hashes (and
    so saved baselines) were always computed over. A section added later (``gpu:``) is left out while unset, so the
    experiments that do not use it keep the hashes they had before it existed."""
    section: dict[str, Any] = (
        {"pytorch": {"batch_size": batch}} if backend == "pytorch" else {"vllm": {"engine": extra}}
    )
    experiment = ExperimentConfig.model_validate(
        {
            "model": "m",
            "backend": backend,
            "precision": "fp32",
            "n": n,
            "decoder": {"temperature": temperature},
            "energy": {"gpu_indices": gpus},
            "passthrough_kwargs": {f"x{k}": v for k, v in extra.items()} or None,
            **({"gpu": {"power_limit_w": limit}} if limit is not None else {}),
            **section,
        },
        context={"platform": "cuda"},
    )
    left_out = {"id", "scenario", "serving"} | ({"gpu"} if limit is None else set())
    reference = json.dumps(experiment.model_dump(mode="json", exclude=left_out), sort_keys=True)
    assert experiment.identity_json == reference
    assert experiment.identity() == experiment.model_dump(mode="json", exclude=left_out)
