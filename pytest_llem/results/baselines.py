"""Named baselines: a run's per-experiment samples (every cycle's metrics) with its environment, saved under
``.llem/baselines/<name>.json`` for later runs to be compared with.

An experiment's identity across runs is its config hash, so renaming a study file keeps its history and changing a
setting starts a new one. ``llem_energy`` windows (no config) are keyed by file, test and window name.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import LlemError
from .environment import Environment
from .gate import Threshold, Verdict, judge
from .schema import ItemResult, Metrics, metric_value
from .sequential import Plan, spending, walk
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


def hardware_difference(baseline: Baseline, current: Environment) -> str | None:
    """Why this baseline's figures are not comparable with this machine's, or None when the hardware matches."""
    if baseline.environment is None:
        return None
    before, now = baseline.environment.hardware, current.hardware
    if before == now:
        return None
    return f"baseline {baseline.name!r} was measured on {before}; this run is on {now}"


@dataclass(frozen=True)
class Judged:
    """One experiment of a run against the baseline; ``verdicts`` None when the baseline has no such experiment.
    ``wants_more``: under adaptive cycles, undecided and a later look may decide (the next cycle should run)."""

    study: str
    experiment_id: str
    identity: str
    verdicts: list[Verdict] | None
    cycles_judged: int = 0
    wants_more: bool = False


def judge_results(
    baseline: Baseline,
    results: Sequence[ItemResult],
    thresholds: Sequence[Threshold],
    alpha: float,
    plan: Plan | None = None,
    available: int | None = None,
) -> list[Judged]:
    """Every experiment among ``results`` (grouped by study and experiment id, in order of appearance) judged against
    the baseline's cycles of the same identity. The gate items and ``llem compare`` share this one rule: the baseline
    side pools every cycle saved for that config, the current side is this experiment's own cycles. With a ``plan``
    (adaptive cycles) the looks are walked over the cycles up to ``available`` (see ``sequential``); without one, all
    cycles are judged at one look at ``alpha``."""
    groups: dict[tuple[str, str], list[ItemResult]] = {}
    for result in results:
        groups.setdefault((result.study, result.experiment_id), []).append(result)
    judged = []
    for (study, experiment_id), cycles in groups.items():
        key = identity(cycles[0])
        previous = baseline.experiments.get(key)
        if previous is None:
            judged.append(Judged(study, experiment_id, key, None))
            continue
        judged.append(_judge_experiment(previous, cycles, thresholds, alpha, plan, available, key))
    return judged


def _judge_experiment(
    previous: BaselineExperiment,
    cycles: list[ItemResult],
    thresholds: Sequence[Threshold],
    alpha: float,
    plan: Plan | None,
    available: int | None,
    key: str,
) -> Judged:
    mismatch = energy_mismatch(previous.cycles, [r.metrics for r in cycles])

    def judge_at(count: int, share: float) -> list[Verdict]:
        now = _samples_of([r for r in cycles if r.cycle <= count])
        return judge(previous.samples, now, thresholds, share, mismatch)

    counts = plan.looks() if plan is not None else (max(r.cycle for r in cycles),)
    shares = spending(alpha, len(previous.cycles), counts)
    done = walk(judge_at, counts, shares, available if available is not None else counts[-1])
    first = cycles[0]
    return Judged(first.study, first.experiment_id, key, done.verdicts, done.cycles_judged, done.wants_more)


def measured_devices(metrics: Metrics) -> str:
    """What a cycle's energy sums over: "2 GPUs + CPU + DRAM", "1 GPU", "nothing"."""
    gpus = len(metrics.gpu_energy_j)
    parts = [f"{gpus} GPU{'s' * (gpus > 1)}"] if gpus else []
    rapl = (("CPU", metrics.cpu_energy_j), ("DRAM", metrics.dram_energy_j))
    parts += [name for name, joules in rapl if joules is not None]
    return " + ".join(parts) or "nothing"


def energy_mismatch(baseline: Sequence[Metrics], current: Sequence[Metrics]) -> str | None:
    """Why the two sides' energies are sums over different devices (a run with several xdist workers loses the CPU
    package; a run on more GPUs adds theirs), or None when they measured the same."""
    before = {measured_devices(m) for m in baseline if m.energy_j is not None}
    now = {measured_devices(m) for m in current if m.energy_j is not None}
    if not before or not now or before == now:
        return None
    return f"the baseline measured {' / '.join(sorted(before))}, this run {' / '.join(sorted(now))}"


def _samples_of(results: Sequence[ItemResult]) -> Callable[[str], list[float]]:
    return lambda metric: [v for r in results if (v := r.value(metric)) is not None]
