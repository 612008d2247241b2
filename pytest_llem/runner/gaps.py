"""Pauses between items: ``config_gap_seconds`` between consecutive items, ``cycle_gap_seconds`` where the cycle
changes (the devices cool down and counters settle between measurements)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..config.models import ExecutionConfig


@dataclass
class Pacer:
    """Remembers the item that ran last, and sleeps the gap the next one is owed."""

    sleep: Callable[[float], None] = time.sleep
    _last: tuple[str, str, int] | None = field(default=None, init=False)

    def gap_before(self, study: str, experiment: str, cycle: int, execution: ExecutionConfig) -> tuple[str, float]:
        """(kind, seconds) owed before this item: none for a study's first item; a cycle gap before a repeat of the
        same experiment (sequential order) or where a new round of cycles starts (interleaved, shuffled); otherwise
        the config gap."""
        if self._last is None or self._last[0] != study:
            return "none", 0.0
        _, last_experiment, last_cycle = self._last
        if experiment == last_experiment or cycle > last_cycle:
            return "cycle gap", execution.cycle_gap_seconds or 0.0
        return "config gap", execution.config_gap_seconds or 0.0

    def wait(
        self,
        study: str,
        experiment: str,
        cycle: int,
        execution: ExecutionConfig,
        announce: Callable[[str], None] | None = None,
    ) -> float:
        """Sleep the gap owed (a countdown through ``announce``, once a second) and note this item as the last."""
        kind, seconds = self.gap_before(study, experiment, cycle, execution)
        self._last = (study, experiment, cycle)
        remaining = seconds
        while remaining > 0:
            if announce is not None:
                announce(f"{kind}: {math.ceil(remaining)} s ")
            step = min(1.0, remaining)
            self.sleep(step)
            remaining -= step
        return seconds
