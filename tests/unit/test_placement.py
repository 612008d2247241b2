"""Which GPUs an item measures by default: those its engine uses, decided from the config before anything loads."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_llem import ExperimentConfig
from pytest_llem.backends.placement import gpu_scope
from pytest_llem.energy.meter import GpuScope


def config(backend: str = "pytorch", **fields: Any) -> ExperimentConfig:
    return ExperimentConfig.model_validate(
        {"model": "org/model", "backend": backend, "precision": "bf16", **fields}, context={"platform": "cuda"}
    )


@pytest.mark.parametrize(
    ("pytorch", "indices", "why"),
    [
        ({}, (0,), "the model is placed on cuda:0"),
        ({"device_map": "cuda:1"}, (1,), "device_map: cuda:1"),
        ({"device_map": "2"}, (2,), "device_map: 2"),
        ({"device_map": "auto"}, None, "device_map: auto spreads the model over every visible GPU"),
        (
            {"device_map": "balanced", "max_memory": {"0": "20GiB", "3": "20GiB", "cpu": "64GiB"}},
            (0, 3),
            "device_map: balanced over the GPUs max_memory names",
        ),
        ({"device_map": "cpu"}, None, "every visible GPU: device_map 'cpu' puts the model on the CPU"),
    ],
)
def test_pytorch_measures_the_gpus_the_model_is_placed_on(
    pytorch: dict[str, Any], indices: tuple[int, ...] | None, why: str
) -> None:
    assert gpu_scope(config(pytorch=pytorch), "cuda") == GpuScope(indices, why)


def test_a_device_map_in_passthrough_kwargs_counts_too() -> None:
    mapped = config(passthrough_kwargs={"device_map": {"model.embed": 1, "model.layers": "cuda:2", "lm_head": "cpu"}})
    assert gpu_scope(mapped, "cuda").indices == (1, 2)


@pytest.mark.parametrize(
    ("engine", "indices"),
    [
        ({}, (0,)),
        ({"tensor_parallel_size": 2}, (0, 1)),
        ({"tensor_parallel_size": 2, "pipeline_parallel_size": 2}, (0, 1, 2, 3)),
    ],
)
def test_vllm_measures_its_first_tp_times_pp_gpus(engine: dict[str, Any], indices: tuple[int, ...]) -> None:
    scope = gpu_scope(config("vllm", vllm={"engine": engine}), "cuda")
    assert scope.indices == indices and not scope.chosen
    if len(indices) > 1:
        assert f"the first {len(indices)} visible GPUs" in scope.why


def test_an_engine_on_the_cpu_leaves_every_visible_gpu_measured() -> None:
    assert gpu_scope(config(), "cpu") == GpuScope(None, "every visible GPU: the engine runs on the CPU")


@pytest.mark.parametrize(("written", "indices"), [("all", None), ([1, 3], (1, 3))])
def test_energy_gpu_indices_chooses_explicitly(written: Any, indices: tuple[int, ...] | None) -> None:
    scope = gpu_scope(config(energy={"gpu_indices": written}), "cuda")
    assert scope.indices == indices and scope.chosen
    assert scope.why == f"energy.gpu_indices: {written}"


def test_energy_gpu_indices_refuses_other_words() -> None:
    with pytest.raises(ValueError, match=r"must be a list of GPU indices \(CUDA numbering\) or all, not .some."):
        config(energy={"gpu_indices": "some"})
