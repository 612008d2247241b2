"""Experiment ids: ``<backend>-<values that vary>``, an entry's own ``id:``, unique within a study."""

from __future__ import annotations

from typing import Any

from pytest_llem import ExperimentConfig, expand_grid
from pytest_llem.study.ids import experiment_ids


def make(**fields: Any) -> ExperimentConfig:
    return ExperimentConfig.model_validate({"model": "org/model", **fields}, context={"platform": "cuda"})


def ids_for(raw: dict[str, Any], platform: str = "cuda") -> list[str]:
    valid, _ = expand_grid(raw, platform=platform)  # type: ignore[arg-type]
    return experiment_ids(valid)


def test_ids_are_backend_then_varying_values() -> None:
    ids = ids_for({"model": "org/model", "sweep": {"precision": ["fp16", "bf16"], "pytorch.batch_size": [1, 8]}})
    assert ids == ["pytorch-fp16-1", "pytorch-fp16-8", "pytorch-bf16-1", "pytorch-bf16-8"]
    assert "pytorch-bf16-8" in ids


def test_values_that_do_not_vary_are_left_out() -> None:
    ids = ids_for({"model": "org/model", "n": 5, "precision": "fp32", "sweep": {"max_output_tokens": [16, 32]}})
    assert ids == ["pytorch-16", "pytorch-32"]


def test_single_experiment_id_is_its_backend() -> None:
    assert experiment_ids([make()]) == ["pytorch"]
    assert experiment_ids([make(backend="vllm", precision="fp16")]) == ["vllm"]
    assert ids_for({"model": "org/model", "n": 3}) == ["pytorch"]


def test_entry_own_id_is_used() -> None:
    ids = ids_for({"model": "org/model", "experiments": [{"n": 1, "id": "small"}, {"n": 2}]})
    assert ids[0] == "small"
    assert ids[1] == "pytorch-2"


def test_ids_are_unique_when_experiments_render_the_same() -> None:
    ids = experiment_ids([make(model="org-a/name"), make(model="org-b/name")])
    assert len(set(ids)) == 2
    assert all(i.startswith("pytorch-name") for i in ids)


def test_ids_are_unique_when_entries_share_an_id() -> None:
    ids = experiment_ids([make(id="same", n=1), make(id="same", n=2)])
    assert len(set(ids)) == 2


def test_ids_are_unique_when_a_renamed_id_meets_an_existing_one() -> None:
    # Renaming the two 'x' ids must not produce a name that a third experiment already has.
    ids = experiment_ids([make(id="x", n=1), make(id="x", n=2), make(id="x-0", n=3)])
    assert len(set(ids)) == 3, ids
    assert "x-0" in ids  # the id written by the user is kept


def test_model_shows_only_its_last_segment() -> None:
    ids = experiment_ids([make(model="org/name"), make(model="builtin:tiny-llama")])
    assert ids == ["pytorch-name", "pytorch-tiny-llama"]


def test_ids_are_safe_for_pytest_node_ids() -> None:
    ids = experiment_ids([make(dataset="data/a b.jsonl"), make(dataset="data/c[1].jsonl")])
    assert len(set(ids)) == 2
    for id_ in ids:
        assert not set(id_) & set(" []/:\\"), id_


def test_vllm_ids_contain_vllm_and_pytorch_ids_do_not() -> None:
    raw = {
        "model": "org/model",
        "backend": ["pytorch", "vllm"],
        "sweep": {"precision": ["fp16", "bf16"], "pytorch.batch_size": [1, 8], "vllm.engine.max_num_seqs": [64, 256]},
    }
    valid, _ = expand_grid(raw, platform="cuda")
    ids = experiment_ids(valid)
    assert len(set(ids)) == len(valid) == 8
    for exp, id_ in zip(valid, ids, strict=True):
        if exp.backend == "vllm":
            assert "vllm" in id_
            assert id_.startswith("vllm-")
        else:
            assert "vllm" not in id_
            assert id_.startswith("pytorch-")
    assert "pytorch-bf16-8" in ids
    assert "vllm-bf16-256" in ids
