"""What every item does before its engine or server occupies the devices, whatever its scenario: the meter, the
model, the prompts, the idle baseline; and the phase names its failures carry."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..backends.placement import gpu_scope
from ..config.models import ExperimentConfig
from ..energy.baseline import IdleBaselines, IdlePower
from ..energy.meter import Meter
from ..energy.opening import open_meter
from ..errors import PhaseError
from ..workload.build import Workload, build_workload, load_tokenizer
from ..workload.models import ResolvedModel, resolve_model


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Name the phase in any failure, so the item reads "load failed: …" rather than a bare traceback."""
    try:
        yield
    except PhaseError:
        raise
    except Exception as exc:
        raise PhaseError(name, exc) from exc


def item_meter(config: ExperimentConfig, meter: Meter | None) -> Meter:
    """``meter``, or the one ``config.energy`` asks for on the GPUs its engine uses."""
    return meter if meter is not None else open_meter(config.energy.meter or "auto", gpu_scope(config))


@dataclass(frozen=True)
class Prepared:
    model: ResolvedModel
    tokenizer: Any
    workload: Workload
    idle: IdlePower | None  # None when the baseline is off


def prepare(
    config: ExperimentConfig,
    meter: Meter,
    *,
    study_dir: Path | None,
    cache_dir: Path | None,
    idle_baselines: IdleBaselines | None,
) -> Prepared:
    """Resolve the model, build the prompts, and measure idle power (a session's cached baseline, else a fresh one)
    while nothing of the item occupies the devices yet."""
    revision = config.pytorch.revision if config.pytorch else None
    with phase("model"):
        model = resolve_model(config.model, cache_dir=cache_dir, revision=revision)
    with phase("prompts"):
        tokenizer = load_tokenizer(config, model)
        workload = build_workload(config, tokenizer, base_dir=study_dir, cache_dir=cache_dir)
    idle: IdlePower | None = None
    if config.baseline.enabled:
        with phase("idle baseline"):
            idle = (idle_baselines or IdleBaselines()).get(meter, config.baseline.duration_seconds)
    return Prepared(model, tokenizer, workload, idle)


def idle_unavailable(config: ExperimentConfig, idle: IdlePower | None) -> str | None:
    """Why the item has no idle power, or None when it has one."""
    if not config.baseline.enabled:
        return "baseline.enabled is false"
    if idle is not None and idle.watts is None and idle.reason:
        return idle.reason
    return None
