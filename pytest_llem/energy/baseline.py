"""Idle power: measured on the same devices before a model is loaded, kept for the session with a time-to-live."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace

from .meter import Meter

# LLenergyMeasure's session TTL: idle power drifts with temperature, so re-measure after an hour.
DEFAULT_TTL_S = 3600.0
IDLE_WINDOW = "idle-baseline"


@dataclass(frozen=True)
class IdlePower:
    """Mean power of the measured devices with nothing running, or None with the reason."""

    watts: float | None
    duration_s: float
    measured_at: float  # on the cache's clock
    reason: str | None = None
    warnings: tuple[str, ...] = ()
    age_s: float = 0.0  # > 0 when reused from the cache

    @property
    def origin(self) -> str:
        if self.watts is None:
            return "unavailable"
        return f"cached, measured {self.age_s:.0f} s earlier" if self.age_s else "measured before load"


def measure_idle_power(meter: Meter, duration_s: float, *, sleep: Callable[[float], None] = time.sleep) -> IdlePower:
    """Sit idle for ``duration_s`` inside a window. A meter that can measure nothing returns at once."""
    if meter.unavailable_reason is not None:
        return IdlePower(None, 0.0, 0.0, reason=meter.unavailable_reason)
    meter.begin(IDLE_WINDOW)
    try:
        sleep(duration_s)
    except BaseException:
        meter.cancel(IDLE_WINDOW)
        raise
    reading = meter.end(IDLE_WINDOW)
    warnings = tuple(f"idle baseline: {w}" for w in reading.warnings)
    if reading.mean_power_w is None:
        return IdlePower(None, reading.duration_s, 0.0, reason=f"idle baseline: {reading.unavailable_reason}")
    return IdlePower(reading.mean_power_w, reading.duration_s, 0.0, warnings=warnings)


class IdleBaselines:
    """Idle power per set of devices and GPU settings in force, reused while younger than ``ttl_s`` so a study does not
    re-measure per item.

    ``gpu_settings``: the settings a ``gpu:`` section put in force for the item about to run (None: the machine's own),
    set by the session before each item. A power limit or locked clocks change idle power a lot: a baseline measured
    under other settings is not this item's."""

    def __init__(
        self,
        ttl_s: float = DEFAULT_TTL_S,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._sleep = sleep
        self.gpu_settings: Hashable = None
        self._cache: dict[tuple[str, float, Hashable], IdlePower] = {}

    def get(self, meter: Meter, duration_s: float) -> IdlePower:
        if meter.unavailable_reason is not None or meter.source is None:
            return measure_idle_power(meter, duration_s, sleep=self._sleep)
        key = (meter.source, duration_s, self.gpu_settings)
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None and now - cached.measured_at < self.ttl_s:
            return replace(cached, age_s=max(now - cached.measured_at, 1e-9))
        measured = replace(measure_idle_power(meter, duration_s, sleep=self._sleep), measured_at=now)
        if measured.watts is not None:
            self._cache[key] = measured
        return measured
