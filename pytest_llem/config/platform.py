"""Which accelerator this process will run on, decided without importing torch (collection must stay light)."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Literal

Platform = Literal["cuda", "cpu"]
PLATFORMS: tuple[Platform, ...] = ("cuda", "cpu")


@cache
def detect_platform() -> Platform:
    """``cuda`` when an NVIDIA or AMD GPU is visible to this process, else ``cpu``.

    Reads the driver's device files instead of asking torch: importing torch costs seconds, and the answer is only
    needed to decide which configurations are runnable at collection time.
    """
    override = os.environ.get("LLEM_PLATFORM")
    if override in PLATFORMS:
        return override
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return "cpu"
    nvidia = Path("/proc/driver/nvidia/gpus")
    if nvidia.is_dir() and any(nvidia.iterdir()):
        return "cuda"
    if Path("/dev/kfd").exists() and any(Path("/dev/dri").glob("renderD*")):
        return "cuda"  # ROCm builds of torch speak the CUDA API
    return "cpu"
