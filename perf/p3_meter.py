"""P3 — meter overhead: the cost of one begin/end pair of pytest-llem's meter vs a bare ``ZeusMonitor`` pair.

(A) ``ZeusMeter.begin`` / ``ZeusMeter.end`` (what study items and the llem_energy fixture call: the Zeus window plus
    the physical-index mapping and the validity checks).
(B) ``ZeusMonitor.begin_window`` / ``end_window`` on the same devices, nothing else.
(C) ``NullMeter`` (no devices: timing only), for reference.

Devices: the real ones when Zeus finds any GPU or readable RAPL, otherwise (or with ``--fake``) four fake GPUs with
energy counters installed at Zeus's device layer (tests/zeus_fakes.py). With fakes the figure is the
Python cost of our layer; with NVML it includes the driver calls, which both sides pay alike.

Blocks of ``--pairs`` pairs are interleaved A, B, C, ... ``--reps`` times; the figure is the median cost per pair.

    python perf/p3_meter.py [--pairs 2000] [--reps 7] [--fake]

Check: A and B measure the same devices (same GPUs, CPU energy on both or neither), else exit 2.
Goal: A ≤ 1 ms per pair. Exit status 0 whether or not the goal is met.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

GOAL_MS = 1.0


def timed_pairs(begin: Any, end: Any, pairs: int) -> float:
    """Seconds per begin/end pair, over ``pairs`` pairs."""
    started = time.perf_counter()
    for _ in range(pairs):
        begin("p3")
        end("p3")
    return (time.perf_counter() - started) / pairs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--fake", action="store_true", help="use fake GPUs even if real devices exist")
    args = parser.parse_args()

    from zeus.monitor import ZeusMonitor

    from pytest_llem.energy.meter import NullMeter
    from pytest_llem.energy.opening import open_meter
    from pytest_llem.energy.zeus import ZeusMeter

    meter = open_meter("auto")
    devices = "real"
    if args.fake or meter.unavailable_reason is not None:
        from tests.zeus_fakes import FakeGPUs, install

        install(FakeGPUs([300.0, 310.0, 320.0, 330.0]), None)
        meter = open_meter("auto")
        devices = "fake (4 GPUs with counters)"
    assert isinstance(meter, ZeusMeter), meter.unavailable_reason
    print(f"devices: {devices}; meter source: {meter.source}")
    bare = ZeusMonitor(gpu_indices=[g.index for g in meter.gpus], cpu_indices=None)
    null = NullMeter("reference")

    def bare_begin(name: str) -> None:
        meter._sync()  # the meter's own synchronisation (current device, only once CUDA is in use)
        bare.begin_window(name, sync_execution=False)

    def bare_end(name: str) -> None:
        meter._sync()
        bare.end_window(name, sync_execution=False)

    meter.begin("check")
    bare.begin_window("check", sync_execution=False)
    ours, theirs = meter.end("check"), bare.end_window("check", sync_execution=False)
    physical = {g.index: g.physical_index for g in meter.gpus}
    if set(ours.gpu_energy_j) != {physical[i] for i in theirs.gpu_energy} or (ours.cpu_energy_j is None) != (
        theirs.cpu_energy is None
    ):
        print(f"CHECK FAILED: A measured {ours}, B measured {theirs}")
        return 2

    sides = {
        "A pytest-llem": (meter.begin, meter.end),
        "B bare Zeus": (bare_begin, bare_end),
        "C NullMeter": (null.begin, null.end),
    }
    costs: dict[str, list[float]] = {name: [] for name in sides}
    warnings.simplefilter("ignore")  # Zeus warns about 0 J windows in B: of course, they are microseconds long
    for begin, end in sides.values():  # untimed warm-up
        timed_pairs(begin, end, min(args.pairs, 200))
    for rep in range(args.reps):
        order = list(sides.items()) if rep % 2 == 0 else list(reversed(sides.items()))
        for name, (begin, end) in order:
            costs[name].append(timed_pairs(begin, end, args.pairs))

    for name, samples in costs.items():
        row = " ".join(f"{s * 1e6:7.1f}" for s in samples)
        print(f"{name:14s} µs/pair: {row}   median {statistics.median(samples) * 1e6:7.1f}")
    a = statistics.median(costs["A pytest-llem"])
    b = statistics.median(costs["B bare Zeus"])
    print(f"ratio A/B: {a / b:.2f}x  (A - B = {(a - b) * 1e6:.1f} µs per pair)")
    verdict = "met" if a * 1e3 <= GOAL_MS else "MISSED"
    print(f"RESULT: {a * 1e3:.3f} ms per begin/end pair (goal <= {GOAL_MS} ms) — {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
