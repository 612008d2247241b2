"""After a killed item, wait for the GPU memory it held before the next item starts.

The driver frees a killed process's GPU memory asynchronously, seconds after it is gone, and vLLM refuses to start
when free memory is below ``gpu_memory_utilization`` × total: the item after a timed-out vLLM item would fail for
its predecessor's sake. Zeus reads no memory, so NVML is asked directly (in the pytest process, which holds no CUDA
context: NVML creates none).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

RELEASE_TIMEOUT_S = 60.0
# Used memory this close to where it was before the killed item counts as given back (the driver's own bookkeeping
# and other processes move it by a few hundred MiB).
TOLERANCE_MB = 1024.0
POLL_S = 0.25

UsedMemory = Callable[[], dict[int, float] | None]


def used_memory_mb() -> dict[int, float] | None:
    """Used memory (MiB) of each GPU this process may use, by the driver's index; None where NVML cannot say."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        return {
            int(pynvml.nvmlDeviceGetIndex(handle)): pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20
            for handle in _visible_handles(pynvml)
        }
    except pynvml.NVMLError:
        return None
    finally:
        pynvml.nvmlShutdown()


def _visible_handles(pynvml: Any) -> list[Any]:
    """NVML handles of the GPUs in CUDA_VISIBLE_DEVICES (by index or UUID; MIG slices have no memory of their own
    here), or of every GPU when it is unset."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    handles = []
    for entry in (e.strip() for e in visible.split(",")):
        try:
            if entry.isdigit():
                handles.append(pynvml.nvmlDeviceGetHandleByIndex(int(entry)))
            elif entry.startswith("GPU-"):
                handles.append(pynvml.nvmlDeviceGetHandleByUUID(entry))
        except pynvml.NVMLError:
            continue  # an entry NVML cannot resolve (a shortened UUID): the others are still watched
    return handles


@dataclass
class MemoryRelease:
    """Notes each item's GPU memory before it starts; after a killed item, the next one first waits (at most
    ``timeout_s``) until every GPU's used memory is back within ``tolerance_mb`` of that note."""

    read: UsedMemory = used_memory_mb
    timeout_s: float = RELEASE_TIMEOUT_S
    tolerance_mb: float = TOLERANCE_MB
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    _before_item: dict[int, float] | None = None
    _after_kill: dict[int, float] | None = field(default=None, repr=False)  # the killed item's "before"
    _readable: bool = True

    def before_item(self) -> str | None:
        """Wait if the previous item was killed, then note this item's starting point; what the wait was, for the
        item's log (None when there was none)."""
        story = self._wait() if self._after_kill is not None else None
        self._after_kill = None
        self._before_item = self._read()
        return story

    def after_item(self, killed: bool) -> None:
        if killed:
            self._after_kill = self._before_item

    def _read(self) -> dict[int, float] | None:
        if not self._readable:
            return None
        used = self.read()
        self._readable = used is not None  # no NVML here: not asked again
        return used

    def _wait(self) -> str | None:
        target = self._after_kill or {}
        started = self.clock()
        used = self._read()
        polls = 0
        held_at_first: dict[int, float] = {}
        while used is not None:
            held = {i: mb for i, mb in used.items() if i in target and mb > target[i] + self.tolerance_mb}
            held_at_first = held_at_first or held
            waited = self.clock() - started
            if not held:
                if polls == 0:
                    return None  # already given back
                changes = ", ".join(
                    f"GPU {i}: {mb:.0f} → {used.get(i, 0.0):.0f} MiB" for i, mb in held_at_first.items()
                )
                return f"waited {waited:.1f} s for the GPU memory of the killed item before this one ({changes} used)"
            if waited >= self.timeout_s:
                still = ", ".join(
                    f"GPU {i}: {mb:.0f} MiB (before it: {target[i]:.0f})" for i, mb in sorted(held.items())
                )
                return (
                    f"the GPU memory of the killed item before this one is not back after {self.timeout_s:g} s "
                    f"({still} used); starting anyway"
                )
            self.sleep(POLL_S)
            polls += 1
            used = self._read()
        return None
