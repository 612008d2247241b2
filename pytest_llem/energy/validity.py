"""Is a window's reading trustworthy? Pure checks turning suspicious readings into warnings (failures if strict)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .meter import GpuDevice

# NVML refreshes its energy counter about every 100 ms (A100/H100): a shorter window may read 0 J or one stale step.
GPU_COUNTER_PERIOD_S = 0.1
# RAPL's counters move about every millisecond.
RAPL_COUNTER_PERIOD_S = 0.001
# Mean power counts as above the limit only beyond this margin: the limit is enforced on averages, and float noise in
# energy / duration must not flag a GPU running exactly at its limit.
POWER_LIMIT_TOLERANCE = 0.02


@dataclass(frozen=True)
class Verdict:
    warnings: tuple[str, ...]
    broken: tuple[str, ...]  # devices whose reading cannot be used at all (a counter that went backwards)


def check_window(
    duration_s: float,
    gpu_energy_j: Mapping[int, float],
    cpu_energy_j: float | None,
    dram_energy_j: float | None,
    gpus: Sequence[GpuDevice],
) -> Verdict:
    """Warnings for one window: too short for the counters, a counter that read 0 J, mean power above a GPU's power
    limit, a counter that went backwards. ``gpu_energy_j`` is keyed like ``GpuDevice.physical_index``."""
    warnings: list[str] = []
    broken: list[str] = []
    if gpu_energy_j and duration_s < GPU_COUNTER_PERIOD_S:
        warnings.append(
            f"window of {duration_s * 1000:.0f} ms is shorter than the GPU energy counter's update period "
            f"(~{GPU_COUNTER_PERIOD_S * 1000:.0f} ms): its energy is unreliable"
        )
    limits = {gpu.physical_index: gpu.power_limit_w for gpu in gpus}
    devices: list[tuple[str, float | None, float | None]] = [
        (f"GPU {index}", energy, limits.get(index)) for index, energy in sorted(gpu_energy_j.items())
    ]
    devices += [("CPU packages", cpu_energy_j, None), ("DRAM", dram_energy_j, None)]
    for label, energy, limit_w in devices:
        if energy is None:
            continue
        if energy < 0:
            broken.append(label)
            warnings.append(f"{label}: energy counter went backwards ({energy:.3f} J over the window)")
        elif energy == 0:
            warnings.append(f"{label}: has an energy counter but read 0 J over {duration_s:.3f} s")
        elif limit_w is not None and duration_s > 0 and energy / duration_s > limit_w * (1 + POWER_LIMIT_TOLERANCE):
            warnings.append(
                f"{label}: mean power {energy / duration_s:.1f} W is above its power limit of {limit_w:.1f} W"
            )
    return Verdict(tuple(warnings), tuple(broken))
