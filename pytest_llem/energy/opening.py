"""Which meter a window gets: ``open_meter`` chooses between Zeus and the ``NullMeter``; a ``MeterPool`` (one per
pytest session) opens each meter once, so that study items and the ``llem_energy`` fixture share one code path and one
set of device handles."""

from __future__ import annotations

from ..errors import EnergyUnavailableError
from .meter import EVERY_GPU, GpuScope, Meter, MeterChoice, NullMeter


class MeterPool:
    """The meters of one session, opened on first use: one per (choice, GPU scope)."""

    def __init__(self) -> None:
        self._meters: dict[tuple[MeterChoice, GpuScope], Meter] = {}

    def get(self, choice: MeterChoice, scope: GpuScope = EVERY_GPU) -> Meter:
        key = (choice, scope)
        if key not in self._meters:
            self._meters[key] = open_meter(choice, scope)
        return self._meters[key]

    def close(self) -> None:
        """Close every meter opened (at the session's end); a later ``get`` opens afresh."""
        meters, self._meters = list(self._meters.values()), {}
        for meter in meters:
            meter.close()


def open_meter(choice: MeterChoice, scope: GpuScope = EVERY_GPU) -> Meter:
    """``none`` → NullMeter; ``auto`` → Zeus with whatever it finds (NullMeter with the reason if nothing);
    ``zeus`` → Zeus, or EnergyUnavailableError when it finds nothing to measure."""
    if choice == "none":
        return NullMeter("energy measurement is turned off (meter: none)")
    try:
        from .zeus import ZeusMeter  # zeus takes ~3 s to import: only once a window is about to be measured
    except ImportError as exc:
        reason = f"zeus is not installed ({exc}); pip install zeus"
        if choice == "zeus":
            raise EnergyUnavailableError(f"meter 'zeus' was asked for, but {reason}") from None
        return NullMeter(reason)
    meter = ZeusMeter.open(scope)
    if meter.unavailable_reason is not None:
        meter.close()
        if choice == "zeus":
            raise EnergyUnavailableError(
                f"meter 'zeus' was asked for, but nothing can be measured here: {meter.unavailable_reason}"
            )
        return NullMeter(meter.unavailable_reason)
    return meter
