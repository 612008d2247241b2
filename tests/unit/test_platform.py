"""The platform configs are judged for: detected from driver files, or forced with LLEM_PLATFORM."""

import os
import subprocess
import sys

import pytest


def platform_in_fresh_process(**env: str) -> str:
    code = "from pytest_llem.config.platform import detect_platform; print(detect_platform())"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={**os.environ, **env}
    )
    return result.stdout.strip()


@pytest.mark.parametrize("forced", ["cuda", "cpu"])
def test_llem_platform_forces_the_platform(forced: str) -> None:
    assert platform_in_fresh_process(LLEM_PLATFORM=forced) == forced


def test_hiding_every_gpu_means_cpu() -> None:
    assert platform_in_fresh_process(CUDA_VISIBLE_DEVICES="", LLEM_PLATFORM="") == "cpu"


@pytest.mark.parametrize(("visible", "count"), [("0", 1), ("2,3", 2), ("GPU-1b2c,GPU-3d4e", 2), ("", 0), ("-1", 0)])
def test_the_visible_gpus_are_counted_from_cuda_visible_devices(
    monkeypatch: pytest.MonkeyPatch, visible: str, count: int
) -> None:
    from pytest_llem.config.platform import visible_gpu_count

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert visible_gpu_count() == count


@pytest.mark.parametrize(("tensor", "pipeline", "skipped"), [(1, 1, False), (2, 1, False), (2, 2, True), (4, 1, True)])
def test_vllm_parallelism_beyond_the_visible_gpus_is_a_skipped_config(
    monkeypatch: pytest.MonkeyPatch, tensor: int, pipeline: int, skipped: bool
) -> None:
    """One GPU per xdist worker and tensor_parallel_size 2: skipped at collection naming both numbers, not a load
    failure. Judged for the cuda platform (on CPUs, parallel workers are bound by NUMA nodes instead)."""
    from pytest_llem.study.grid import expand_grid

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    engine = {"tensor_parallel_size": tensor, "pipeline_parallel_size": pipeline}
    raw = {
        "model": "m",
        "backend": "vllm",
        "precision": "bf16",
        "experiments": [{"id": "parallel", "vllm": {"engine": engine}}, {"id": "plain"}],
    }
    experiments, skips = expand_grid(raw, platform="cuda")
    assert [s.reason for s in skips] == (
        [
            f"vllm.engine: tensor_parallel_size {tensor} x pipeline_parallel_size {pipeline} needs "
            f"{tensor * pipeline} GPUs; this process sees 2"
        ]
        if skipped
        else []
    )
    assert len(experiments) == (1 if skipped else 2)
