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


@cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (``/proc/cpuinfo``), empty where unreadable."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


@cache
def numa_nodes() -> int:
    """NUMA nodes of this machine (vLLM's CPU workers bind one node each); 1 where unreadable."""
    nodes = Path("/sys/devices/system/node")
    found = list(nodes.glob("node[0-9]*")) if nodes.is_dir() else []
    return max(len(found), 1)
