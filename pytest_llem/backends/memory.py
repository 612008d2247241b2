"""Peak resident memory of processes on Linux (this one, or it and its descendants), resettable so that a window's
peak is not an earlier item's."""

from __future__ import annotations

import resource
from pathlib import Path

from ..energy import cuda as cuda_devices
from .base import PeakMemory


def reset_peak_rss(pid: int | str = "self") -> bool:
    """Reset the kernel's high-water mark of resident memory (``echo 5 > clear_refs``); False when not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mb(pid: int | str = "self") -> float:
    """VmHWM (peak resident set since start or the last reset); for this process, getrusage's lifetime peak where
    /proc cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0 if pid == "self" else 0.0


def descendants(pid: int | str = "self") -> list[int]:
    """Every process below ``pid`` (children, their children, …), from /proc's children lists."""
    found: list[int] = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            direct = [int(c) for c in children.read_text().split()]
        except (OSError, ValueError):
            continue  # a thread or process that ended meanwhile
        for child in direct:
            found += [child, *descendants(child)]
    return found


class PeakTracker:
    """A window's peak memory: the CUDA allocator's high-water mark on every GPU used, the resident set on CPUs — of
    this process, or (``tree``) of this process and every process it started (an engine's own processes)."""

    def __init__(self) -> None:
        self._rss_resettable = False

    def reset(self, cuda: bool, tree: bool = False) -> None:
        if cuda:
            cuda_devices.reset_peak_memory()
        else:
            pids: list[int | str] = ["self", *(descendants() if tree else [])]
            self._rss_resettable = all([reset_peak_rss(pid) for pid in pids])

    def read(self, cuda: bool, note: str = "", tree: bool = False) -> PeakMemory:
        """The peak since ``reset``; ``note`` says what the figure includes beyond the obvious."""
        if cuda:
            per_device = cuda_devices.peak_memory_mb()
            if not per_device:
                return PeakMemory(None, "no CUDA device was used by this process")
            devices = ", ".join(f"cuda:{index}" for index in per_device)
            source = f"torch.cuda.max_memory_allocated, summed over {devices}{note}"
            return PeakMemory(sum(per_device.values()), source, per_device)
        if tree:
            pids: list[int | str] = ["self", *descendants()]
            what = f"sum over the item's {len(pids)} processes of each one's peak RSS (shared pages count in each)"
        else:
            pids, what = ["self"], "peak RSS of the process"
        when = "during the window (VmHWM)" if self._rss_resettable else "since it started (VmHWM could not be reset)"
        return PeakMemory(sum(peak_rss_mb(pid) for pid in pids), f"{what} {when}{note}")
