"""The ``llem_energy`` fixture: measure windows of a plain Python test with the same meter study items use.

    def test_pipeline(llem_energy):
        with llem_energy.measure("generate") as m:
            out = pipeline(prompts)
        m.output_tokens = count(out)
        assert m.energy_per_output_token_j is None or m.energy_per_output_token_j < 0.5

Each window becomes a result (``kind: fixture``) in the session summary, with the schema of study items.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from .energy.meter import Reading
from .errors import MeasurementWarningError
from .items import ITEM_PROPERTY, RESULT_PROPERTY, junit_properties
from .keys import measurement_key
from .measurement import MeasurementSession
from .results.schema import EnergyMetrics, ItemResult, Metrics


class EnergyWindow:
    """One measured window. Inside the block only ``name`` and ``output_tokens`` exist; after it every result field
    (``energy_j``, ``gpu_energy_j``, ``duration_s``, ``mean_power_w``, ``energy_per_output_token_j``, ``tokens_per_s``,
    ``energy_unavailable_reason``, …) does, derived from the meter's reading and the tokens the test set."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.output_tokens: int | None = None
        self.started_at = 0.0
        self.finished_at = 0.0
        self._reading: Reading | None = None

    @property
    def closed(self) -> bool:
        return self._reading is not None

    def _close(self, reading: Reading) -> None:
        self._reading = reading

    def metrics(self) -> Metrics:
        """The window as the result schema shares it with study items (output tokens as the test set them)."""
        if self._reading is None:
            raise RuntimeError(f"energy window {self.name!r} is still open")
        duration = self._reading.duration_s
        unavailable = {"idle_power_w": "idle baselines are measured for study items only", **self._reading.unavailable}
        if self.output_tokens is None:
            unavailable["output_tokens"] = "the test did not set output_tokens on the window"
        return Metrics(
            **EnergyMetrics.of(self._reading, self.output_tokens, None),
            output_tokens=self.output_tokens,
            tokens_per_s=self.output_tokens / duration if self.output_tokens and duration > 0 else None,
            unavailable=unavailable,
        )

    def __getattr__(self, attribute: str) -> Any:  # only reached for names not defined above
        if attribute in Metrics.model_fields and not attribute.startswith("_"):
            if self.__dict__.get("_reading") is None:
                raise AttributeError(f"energy window {self.name!r} is still open: {attribute} exists after the block")
            return getattr(self.metrics(), attribute)
        raise AttributeError(attribute)


class LlemEnergy:
    """Handed to a test as ``llem_energy``: ``measure(name)`` opens a window; measuring the same name again (in a
    loop) records another cycle of that window."""

    def __init__(self, session: MeasurementSession, study: str, test_name: str) -> None:
        self._session = session
        self._study = study
        self._test_name = test_name  # the node id after the file: class and parameters included
        self.windows: list[EnergyWindow] = []
        self._open: set[str] = set()

    @contextmanager
    def measure(self, name: str) -> Iterator[EnergyWindow]:
        if name in self._open:
            raise ValueError(f"llem_energy: window {name!r} is already open; nested windows need distinct names")
        meter = self._session.fixture_meter()
        key = f"{self._study}::{self._test_name}::{name}"
        window = EnergyWindow(name)
        meter.begin(key)
        window.started_at = time.time()
        self._open.add(name)
        try:
            yield window
        except BaseException:
            meter.cancel(key)
            raise
        finally:
            self._open.discard(name)
        reading = meter.end(key)
        window.finished_at = time.time()
        window._close(reading)
        self.windows.append(window)
        try:
            self._session.enforce(reading.warnings, f"llem_energy window {name!r}")
        except MeasurementWarningError as exc:
            pytest.fail(str(exc), pytrace=False)  # the user's words, not a traceback through this module

    def results(self) -> list[ItemResult]:
        environment = self._session.environment()
        return [
            ItemResult(
                kind="fixture",
                study=self._study,
                study_design_hash="",
                experiment_id=f"{self._test_name}::{window.name}",
                config_hash="",
                cycle=cycle,
                backend=None,
                model=None,
                config={},
                metrics=window.metrics(),
                environment=environment,
                started_at=window.started_at,
                finished_at=window.finished_at,
            )
            for window, cycle in zip(self.windows, self._cycles(), strict=True)
        ]

    def _cycles(self) -> list[int]:
        """A name measured again is another cycle of the same window (a loop of repetitions gives a CI and a gate)."""
        seen: dict[str, int] = {}
        window_cycles = []
        for window in self.windows:
            seen[window.name] = seen.get(window.name, 0) + 1
            window_cycles.append(seen[window.name])
        return window_cycles


@pytest.fixture
def llem_energy(request: pytest.FixtureRequest) -> LlemEnergy:
    """Measure windows of this test with the session's meter: ``with llem_energy.measure("name") as m: ...``."""
    study, _, test_name = request.node.nodeid.partition("::")
    return LlemEnergy(request.config.stash[measurement_key], study, test_name)


def record_windows(item: pytest.Item) -> None:
    """After a test's call phase, put its windows into the call report (so they reach the controller under xdist)."""
    recorder = getattr(item, "funcargs", {}).get("llem_energy")
    if not isinstance(recorder, LlemEnergy) or not recorder.windows:
        return
    item.user_properties.append((ITEM_PROPERTY, "{}"))
    for window, result in zip(recorder.windows, recorder.results(), strict=True):
        item.user_properties.append((RESULT_PROPERTY, result.model_dump_json()))
        label = window.name + (f"[cycle{result.cycle}]" if result.cycle > 1 else "")
        item.user_properties += junit_properties(result, prefix=f"{label}.")
