"""Named baselines: a run's per-experiment samples (every cycle's metrics) with its environment, saved under
``.llem/baselines/<name>.json`` for later runs to be compared with.

An experiment's identity across runs is its config hash, so renaming a study file keeps its history and changing a
setting starts a new one. ``llem_energy`` windows (no config) are keyed by file, test and window name.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import LlemError
from .environment import Environment
from .schema import ItemResult, Metrics, metric_value
from .store import write_json

NAME = re.compile(r"^[\w.+-]+$")


class BaselineError(LlemError):
    """A baseline that cannot be saved or found as asked."""


class BaselineExperiment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    study: str
    experiment_id: str
    config: dict[str, object]
    cycles: list[Metrics]  # one per passed cycle, in cycle order

    def samples(self, metric: str) -> list[float]:
        """The metric's value in every cycle that measured it (``ttft_s.mean`` reaches into latencies)."""
        values = [metric_value(metrics, metric) for metrics in self.cycles]
        return [v for v in values if v is not None]


class Baseline(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    created_at: float
    run_id: str | None
    environment: Environment | None
    experiments: dict[str, BaselineExperiment]  # identity → samples


def identity(result: ItemResult) -> str:
    return result.config_hash if result.kind == "study" else f"fixture:{result.study}::{result.experiment_id}"


def check_name(name: str) -> None:
    if not NAME.match(name):
        raise BaselineError(f"--llem-save: {name!r} is not a baseline name (letters, digits, . + - _)")


def build(name: str, results: Iterable[ItemResult], run_id: str | None, environment: Environment | None) -> Baseline:
    check_name(name)
    experiments: dict[str, BaselineExperiment] = {}
    for result in sorted(results, key=lambda r: (r.study, r.experiment_id, r.cycle)):
        key = identity(result)
        if key not in experiments:
            experiments[key] = BaselineExperiment(
                study=result.study, experiment_id=result.experiment_id, config=result.config, cycles=[]
            )
        entry = experiments[key]
        entry.cycles.append(result.metrics)
    return Baseline(name=name, created_at=time.time(), run_id=run_id, environment=environment, experiments=experiments)


def save(baseline: Baseline, baselines_dir: Path) -> Path:
    path = baselines_dir / f"{baseline.name}.json"
    write_json(path, baseline.model_dump(mode="json"))
    return path


def load(reference: str, baselines_dir: Path) -> Baseline:
    """A baseline by name, by path to its file, or ``latest`` (the most recently saved)."""
    if reference == "latest":
        saved = sorted(baselines_dir.glob("*.json"), key=lambda p: p.stat().st_mtime) if baselines_dir.is_dir() else []
        if not saved:
            raise BaselineError(f"no baseline saved in {baselines_dir} yet (save one with --llem-save=NAME)")
        path = saved[-1]
    elif NAME.match(reference) and (baselines_dir / f"{reference}.json").is_file():
        path = baselines_dir / f"{reference}.json"
    else:
        path = Path(reference)
    if not path.is_file():
        known = ", ".join(p.stem for p in sorted(baselines_dir.glob("*.json"))) if baselines_dir.is_dir() else ""
        raise BaselineError(f"no baseline {reference!r} in {baselines_dir}" + (f"; saved: {known}" if known else ""))
    try:
        return Baseline.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, ValidationError) as exc:
        raise BaselineError(f"{path} is not a readable baseline: {exc}") from None


def hardware(environment: Environment) -> str:
    """What makes energy figures comparable: the GPUs (name, power limit) and their driver, or the CPU without GPUs."""
    if environment.gpus:
        gpus = ", ".join(
            f"{g.name or 'unknown GPU'}" + (f" ({g.power_limit_w:g} W limit)" if g.power_limit_w else "")
            for g in environment.gpus
        )
        return f"{gpus}, driver {environment.gpu_driver or 'unknown'}"
    return f"{environment.cpu_model or 'unknown CPU'} (no GPU)"


def hardware_difference(baseline: Baseline, current: Environment) -> str | None:
    """Why this baseline's figures are not comparable with this machine's, or None when the hardware matches."""
    if baseline.environment is None:
        return None
    before, now = hardware(baseline.environment), hardware(current)
    if before == now:
        return None
    return f"baseline {baseline.name!r} was measured on {before}; this run is on {now}"
