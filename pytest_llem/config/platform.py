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


def visible_gpu_count() -> int | None:
    """How many GPUs this process may use, from ``CUDA_VISIBLE_DEVICES`` (or ``HIP_VISIBLE_DEVICES``) when set, else
    from the NVIDIA driver's device files; None when nothing says. Read at collection, without torch: under pytest-xdist
    each worker has narrowed these variables to its own GPUs before it collects."""
    for variable in ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES"):
        visible = os.environ.get(variable)
        if visible is not None:
            return len([part for part in visible.split(",") if part.strip() not in ("", "-1")])
    return _driver_gpu_count()


@cache
def _driver_gpu_count() -> int | None:
    nvidia = Path("/proc/driver/nvidia/gpus")
    return sum(1 for _ in nvidia.iterdir()) if nvidia.is_dir() else None


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
