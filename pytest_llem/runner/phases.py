"""Energy per phase (``phases: true``): the prefill measured alone, and the generate window split into prefill and
decode.

A prefill pass (every batch, one output token each) is short: it is repeated inside one window until the window lasts
at least ``MIN_WINDOW_S`` (the GPU counters move every ~100 ms), and the figures are per pass. Decode is the rest of
the generate window; where that rest is inside the counters' resolution it is null with the reason, not a number.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..backends.base import Backend
from ..energy.meter import Meter, Reading
from ..energy.validity import GPU_COUNTER_PERIOD_S, RAPL_COUNTER_PERIOD_S

MIN_WINDOW_S = 1.0
PREFILL_WINDOW = "prefill"


@dataclass(frozen=True)
class PrefillReading:
    reading: Reading  # of all the passes
    passes: int


def measure_prefill(
    backend: Backend,
    prepared: Any,
    meter: Meter,
    *,
    min_window_s: float = MIN_WINDOW_S,
    clock: Callable[[], float] = time.perf_counter,
) -> PrefillReading:
    """Prefill passes over ``prepared`` in one window, until it has lasted ``min_window_s``."""
    backend.synchronize()
    meter.begin(PREFILL_WINDOW)
    passes = 0
    started = clock()
    try:
        while passes == 0 or clock() - started < min_window_s:
            backend.prefill(prepared)
            backend.synchronize()
            passes += 1
    except BaseException:
        meter.cancel(PREFILL_WINDOW)
        raise
    return PrefillReading(meter.end(PREFILL_WINDOW), passes)


def split_phases(
    generate: Reading, prefill: PrefillReading, input_tokens: int, output_tokens: int, first_tokens: int
) -> tuple[dict[str, Any], dict[str, str]]:
    """The phase fields of ``Metrics``, and why any of them is null. ``first_tokens``: one per sequence, made by the
    prefill (a decode step makes each of the others)."""
    unavailable: dict[str, str] = {}
    passes = prefill.passes
    decode_tokens = output_tokens - first_tokens
    prefill_s = prefill.reading.duration_s / passes
    decode_s: float | None = generate.duration_s - prefill_s
    if decode_s is not None and decode_s <= 0:
        unavailable["decode_duration_s"] = "a prefill pass alone took as long as the whole generate window"
        decode_s = None
    prefill_j = prefill.reading.energy_j / passes if prefill.reading.energy_j is not None else None
    decode_j = None
    if generate.energy_j is None or prefill_j is None:
        reason = generate.unavailable_reason or prefill.reading.unavailable_reason or "energy was not measured"
        unavailable.update(dict.fromkeys(("prefill_energy_j", "decode_energy_j"), reason))
    else:
        decode_j = generate.energy_j - prefill_j
        noise = _resolution_j(generate) + _resolution_j(prefill.reading) / passes
        if decode_j <= noise:  # each window's reading may be stale by up to one counter update at either end
            unavailable["decode_energy_j"] = (
                f"decode energy ({decode_j:.3g} J: the window's {generate.energy_j:.3g} J less a prefill's "
                f"{prefill_j:.3g} J) is within the counters' resolution (±{noise:.2g} J)"
            )
            decode_j = None
    fields = {
        "prefill_passes": passes,
        "prefill_duration_s": prefill_s,
        "decode_duration_s": decode_s,
        "prefill_energy_j": prefill_j,
        "decode_energy_j": decode_j,
        "prefill_energy_per_input_token_j": prefill_j / input_tokens
        if prefill_j is not None and input_tokens
        else None,
        "decode_energy_per_output_token_j": (
            decode_j / decode_tokens if decode_j is not None and decode_tokens > 0 else None
        ),
    }
    if decode_j is not None and decode_tokens <= 0:
        unavailable["decode_energy_per_output_token_j"] = "no decode step: every sequence ended at its first token"
    for name in ("prefill_energy_per_input_token_j", "decode_energy_per_output_token_j"):
        source = "prefill_energy_j" if name.startswith("prefill") else "decode_energy_j"
        if fields[name] is None and source in unavailable:
            unavailable[name] = unavailable[source]
    return fields, unavailable


def _resolution_j(reading: Reading) -> float:
    """How far a window's energy may be off from the counters' update period alone: one period of its mean power."""
    period = GPU_COUNTER_PERIOD_S if reading.gpu_energy_j else RAPL_COUNTER_PERIOD_S
    return (reading.mean_power_w or 0.0) * period
