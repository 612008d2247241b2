"""What a session measures with and how it runs an item: meters, idle baselines, meter choice, strictness,
isolation, the GPU settings a study asks for, the environment.

One ``MeasurementSession`` per pytest session (kept in the config's stash) serves study items and the ``llem_energy``
fixture alike, so both go through the same meters. Nothing heavy is imported until an item runs.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .backends.placement import gpu_scope
from .config.models import ExecutionConfig, ExperimentConfig
from .energy.baseline import IdleBaselines
from .energy.gpu_settings import Wanted, applied, restore_left_behind
from .energy.meter import EVERY_GPU, GpuDevice, Meter, resolve_choice
from .energy.opening import MeterPool
from .errors import MeasurementWarningError
from .results.environment import Environment, capture_environment
from .results.schema import Metrics
from .runner.gaps import Pacer
from .runner.gpu_memory import MemoryRelease


@dataclass
class MeasurementSession:
    project_dir: Path
    command_line_meter: str | None = None
    ini_meter: str | None = None
    strict: bool = False
    meters: MeterPool = field(default_factory=MeterPool)
    idle_baselines: IdleBaselines = field(default_factory=IdleBaselines)
    child_setup: list[str] = field(default_factory=list)  # import paths run first in every isolated child
    pacer: Pacer = field(default_factory=Pacer)
    memory_release: MemoryRelease = field(default_factory=MemoryRelease)  # after a killed item, its GPU memory
    gpu_journals: Path | None = None  # where GPU settings are journaled before they change (llem doctor --restore)
    _environment: Environment | None = None

    def fixture_meter(self) -> Meter:
        """The ``llem_energy`` fixture's meter: the session's choice, every visible GPU (a plain test may use any)."""
        return self.meters.get(resolve_choice(self.command_line_meter, None, self.ini_meter), EVERY_GPU)

    def run(
        self, config: ExperimentConfig, execution: ExecutionConfig, *, study_dir: Path, cache_dir: Path | None
    ) -> Metrics:
        """Run one item's work, in a fresh child process (``isolation: process``) or here. A ``gpu:`` section's
        settings are applied here, on the item's GPUs, before its work (idle baseline included) and restored after it
        however it ends: this process outlives the child."""
        wanted = Wanted(config.gpu.power_limit_w, config.gpu.locked_clocks_mhz) if config.gpu else Wanted()
        scope = gpu_scope(config)
        # The idle baseline is measured under the settings: one measured under others is not reused.
        self.idle_baselines.gpu_settings = (wanted, scope.indices) if wanted.anything else None
        if not wanted.anything:
            restore_left_behind(scope, self.gpu_journals)  # not under the settings of a session that is gone
            return self._run(config, execution, study_dir=study_dir, cache_dir=cache_dir)
        with applied(wanted, scope, self.gpu_journals) as settings:
            metrics = self._run(config, execution, study_dir=study_dir, cache_dir=cache_dir)
            in_force = settings.in_force()
        return metrics.model_copy(
            update={**in_force.metrics(), "unavailable": metrics.unavailable | in_force.unavailable}
        )

    def _run(
        self, config: ExperimentConfig, execution: ExecutionConfig, *, study_dir: Path, cache_dir: Path | None
    ) -> Metrics:
        from .runner.scenarios import run_item

        choice = resolve_choice(self.command_line_meter, config.energy.meter, self.ini_meter)
        if execution.isolation == "none":
            if execution.timeout_seconds is not None:
                warnings.warn(
                    f"timeout_seconds={execution.timeout_seconds:g} is ignored with isolation: none (it needs process)",
                    stacklevel=2,
                )
            meter = self.meters.get(choice, gpu_scope(config))
            return run_item(
                config, study_dir=study_dir, cache_dir=cache_dir, meter=meter, idle_baselines=self.idle_baselines
            )
        from .backends import factory_path
        from .runner.child import ChildJob
        from .runner.isolation import ChildFailure, run_in_child

        job = ChildJob(
            config=config,
            backend_path=factory_path(config.backend),
            meter_choice=choice,
            idle_baselines=self.idle_baselines,
            environ=dict(os.environ),
            study_dir=study_dir,
            cache_dir=cache_dir,
            setup_paths=list(self.child_setup),
        )
        waited = self.memory_release.before_item()
        if waited:
            print(f"pytest-llem: {waited}", file=sys.stderr)  # in this item's captured log
        try:
            metrics, self.idle_baselines = run_in_child(job, execution.timeout_seconds)
        except ChildFailure as failure:
            self.memory_release.after_item(killed=failure.killed)
            raise
        self.memory_release.after_item(killed=False)
        return metrics

    def close(self) -> None:
        """End of the session: the meters opened in this process (the fixture's, isolation none) stop their RAPL
        wrap counting."""
        self.meters.close()

    def environment(self) -> Environment:
        """The fingerprint of this process's machine and project, captured once per session."""
        if self._environment is None:
            gpus: list[GpuDevice]
            reason: str | None
            try:
                from .energy.zeus import visible_gpus  # Zeus lists the GPUs; imported only when work starts
            except ImportError as exc:
                gpus, reason = [], f"zeus is not installed ({exc})"
            else:
                gpus, reason = visible_gpus()
            self._environment = capture_environment(self.project_dir, gpus, reason)
        return self._environment

    def environment_of(self, metrics: Metrics) -> Environment:
        """The environment an item ran in: the session's, with the GPU settings its ``gpu:`` section put in force."""
        environment = self.environment()
        if not metrics.gpu_settings_gpus:
            return environment
        return environment.with_gpu_settings(
            metrics.gpu_settings_gpus, metrics.gpu_power_limit_w, metrics.gpu_locked_clocks_mhz
        )

    def enforce(self, warnings: Sequence[str], what: str) -> None:
        """Under ``--llem-strict`` a measurement with warnings fails its item (its result is still recorded)."""
        if self.strict and warnings:
            listed = "\n".join(f"  - {w}" for w in warnings)
            raise MeasurementWarningError(f"{what}: measurement warnings (--llem-strict):\n{listed}")
