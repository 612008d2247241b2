"""Peak resident memory of this process on Linux, resettable so a window's peak is not an earlier item's."""

from __future__ import annotations

import resource
from pathlib import Path

from .base import PeakMemory

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark of resident memory (``echo 5 > clear_refs``); False when not allowed."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mb() -> float:
    """VmHWM (peak resident set since start or the last reset), falling back to getrusage's lifetime peak."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class PeakTracker:
    """A window's peak memory: the CUDA allocator's high-water mark on GPUs, the process's resident set on CPUs."""

    def __init__(self) -> None:
        self._rss_resettable = False

    def reset(self, cuda: bool) -> None:
        if cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()
        else:
            self._rss_resettable = reset_peak_rss()

    def read(self, cuda: bool, note: str = "") -> PeakMemory:
        """The peak since ``reset``; ``note`` says what the figure includes beyond the obvious."""
        if cuda:
            import torch

            return PeakMemory(torch.cuda.max_memory_allocated() / 2**20, "torch.cuda.max_memory_allocated" + note)
        if self._rss_resettable:
            return PeakMemory(peak_rss_mb(), "peak RSS of the process during the window (VmHWM)" + note)
        return PeakMemory(peak_rss_mb(), "peak RSS of the process since it started (VmHWM could not be reset)" + note)
