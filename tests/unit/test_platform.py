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
