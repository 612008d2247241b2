"""This process's CUDA devices, asked without initialising CUDA: a process that initialised the driver before its
backend loads cannot fork vLLM's engine, and a context made on a GPU the item does not use raises that GPU's power.

torch is looked up, never imported: when nothing imported it, no CUDA work was ever queued here.
"""

from __future__ import annotations

import sys
from typing import Any


def _initialised_torch() -> Any | None:
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return None
    return torch


def devices_in_use() -> list[int]:
    """CUDA indices of the devices this process has a context on (the ones its work ran on); [] before CUDA
    initialises. A torch that cannot tell without creating contexts answers with the current device only."""
    torch = _initialised_torch()
    if torch is None:
        return []
    has_context = getattr(torch._C, "_cuda_hasPrimaryContext", None)
    if has_context is None:
        return [torch.cuda.current_device()]
    return [index for index in range(torch.cuda.device_count()) if has_context(index)]


def synchronize() -> None:
    """Wait for this process's queued work on every device it uses (not only the current one)."""
    torch = _initialised_torch()
    for index in devices_in_use():
        torch.cuda.synchronize(index)  # type: ignore[union-attr]


def reset_peak_memory() -> None:
    """Start every used device's allocator high-water mark afresh."""
    torch = _initialised_torch()
    for index in devices_in_use():
        torch.cuda.reset_peak_memory_stats(index)  # type: ignore[union-attr]


def peak_memory_mb() -> dict[int, float]:
    """Each used device's allocator high-water mark since the last reset, in MiB, by CUDA index."""
    torch = _initialised_torch()
    return {index: torch.cuda.max_memory_allocated(index) / 2**20 for index in devices_in_use()}  # type: ignore[union-attr]
