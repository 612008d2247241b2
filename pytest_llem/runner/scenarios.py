"""One item's work by scenario: offline batches (execute.py) or a served load (serve.py)."""

from __future__ import annotations

from pathlib import Path

from ..backends import get_backend
from ..config.models import ExperimentConfig
from ..energy.baseline import IdleBaselines
from ..energy.meter import Meter
from ..results.schema import Metrics
from .execute import BackendFactory, run_experiment


def run_item(
    config: ExperimentConfig,
    *,
    study_dir: Path | None = None,
    cache_dir: Path | None = None,
    backend_factory: BackendFactory = get_backend,
    meter: Meter | None = None,
    idle_baselines: IdleBaselines | None = None,
) -> Metrics:
    """Run ``config`` once as its scenario says. A serving item starts a server instead of a backend."""
    if config.scenario == "serving":
        from .serve import run_serving  # aiohttp (the serving extra) only where a serving item runs

        return run_serving(
            config,
            study_dir=study_dir,
            cache_dir=cache_dir,
            meter=meter,
            idle_baselines=idle_baselines,
        )
    return run_experiment(
        config,
        study_dir=study_dir,
        cache_dir=cache_dir,
        backend_factory=backend_factory,
        meter=meter,
        idle_baselines=idle_baselines,
    )
