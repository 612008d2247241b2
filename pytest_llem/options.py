"""The session's settings from the command line, the ini file and other plugins: execution layers, backends,
child set-up, the measurement session, limits. Read once at start; the items and the hooks ask here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .config.loader import resolve_execution
from .energy.gpu_journal import JOURNALS
from .energy.meter import METER_CHOICES
from .errors import ConfigError, LlemError
from .measurement import MeasurementSession
from .results.store import DEFAULT_RESULTS_DIR
from .study.grid import DEFAULT_MAX_EXPERIMENTS, MAX_EXPERIMENTS_KEY

# What the plugin runs when neither the command line, the study nor the ini says: LLenergyMeasure's CLI defaults,
# with the interleaved order its design chose (it shipped shuffled).
EFFECTIVE_EXECUTION_DEFAULTS: dict[str, Any] = {"n_cycles": 3, "cycle_order": "interleaved"}


def execution_options(config: pytest.Config) -> tuple[dict[str, Any], dict[str, Any]]:
    """(command line, ini) layers of the execution settings; unset values are None."""
    no_gaps = 0.0 if config.getoption("llem_no_gaps") else None
    command_line = {
        "n_cycles": config.getoption("llem_cycles"),
        "cycle_order": config.getoption("llem_cycle_order"),
        "shuffle_seed": config.getoption("llem_shuffle_seed"),
        "isolation": config.getoption("llem_isolation"),
        "timeout_seconds": config.getoption("llem_timeout"),
        "config_gap_seconds": no_gaps,
        "cycle_gap_seconds": no_gaps,
    }
    ini = {
        "n_cycles": config.getini("llem_cycles") or None,
        "cycle_order": config.getini("llem_cycle_order") or None,
        "isolation": config.getini("llem_isolation") or None,
        "timeout_seconds": config.getini("llem_timeout") or None,
    }
    return command_line, ini


def check_execution_options(config: pytest.Config) -> None:
    """A bad --llem-* value or llem_* ini key is one usage error at start, not one collection error per study."""
    command_line, ini = execution_options(config)
    try:
        resolve_execution(None, command_line=command_line, ini=ini, defaults=EFFECTIVE_EXECUTION_DEFAULTS)
    except ConfigError as exc:
        raise pytest.UsageError(f"pytest-llem: {exc}") from None
    max_experiments(config)


def register_backends(config: pytest.Config) -> None:
    """Backends other plugins add (``pytest_llem_backends``), known to study validation and to the runner."""
    from . import backends
    from .config import models

    factories: dict[str, str] = {}
    for added in config.hook.pytest_llem_backends():
        for name, factory in (added or {}).items():
            try:
                factories[name] = backends.importable_path(factory)
            except LlemError as exc:
                raise pytest.UsageError(f"pytest-llem: pytest_llem_backends: {name!r}: {exc}") from None
    models.set_extra_backends(tuple(factories))
    backends.set_extra_backends(factories)


def child_setup_paths(config: pytest.Config) -> list[str]:
    from .backends import importable_path

    try:
        return [importable_path(f) for added in config.hook.pytest_llem_child_setup() for f in (added or [])]
    except LlemError as exc:
        raise pytest.UsageError(f"pytest-llem: pytest_llem_child_setup: {exc}") from None


def measurement_session(config: pytest.Config) -> MeasurementSession:
    """The session's meters and measuring options (--llem-meter / llem_meter, --llem-strict / llem_strict)."""
    ini_meter = config.getini("llem_meter") or None
    if ini_meter is not None and ini_meter not in METER_CHOICES:
        raise pytest.UsageError(
            f"pytest-llem: llem_meter (ini): must be one of {', '.join(METER_CHOICES)}, not {ini_meter!r}"
        )
    return MeasurementSession(
        project_dir=config.rootpath,
        command_line_meter=config.getoption("llem_meter"),
        ini_meter=ini_meter,
        strict=bool(config.getoption("llem_strict") or config.getini("llem_strict")),
        child_setup=child_setup_paths(config),
        gpu_journals=results_dir(config) / JOURNALS,
    )


def results_dir(config: pytest.Config) -> Path:
    """The results folder (``.llem`` by default): run folders, baselines, GPU-settings journals."""
    chosen = config.getoption("llem_results_dir") or config.getini("llem_results_dir") or DEFAULT_RESULTS_DIR
    path = Path(chosen).expanduser()
    return path if path.is_absolute() else config.rootpath / path


def max_experiments(config: pytest.Config) -> int:
    """The most experiments one study may expand to (ini ``llem_max_experiments``): a typo in a sweep is refused
    before it is expanded, instead of hanging collection."""
    raw = config.getini(MAX_EXPERIMENTS_KEY)
    return positive_int(raw, f"{MAX_EXPERIMENTS_KEY} (ini)", "a positive integer") if raw else DEFAULT_MAX_EXPERIMENTS


def positive_int(raw: object, source: str, wanted: str) -> int:
    """An option's or ini key's text as a positive integer; anything else is one usage error naming ``source``."""
    try:
        value = int(str(raw).strip())
    except ValueError:
        value = 0
    if value < 1:
        raise pytest.UsageError(f"pytest-llem: {source}: expected {wanted}, not {raw!r}")
    return value


def cache_dir(config: pytest.Config) -> Path | None:
    value = config.getoption("llem_cache_dir") or config.getini("llem_cache_dir")
    return Path(value).expanduser() if value else None
