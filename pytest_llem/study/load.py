"""One study file → StudyConfig: read it, resolve its execution settings, expand its grid, hash its design."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config.loader import read_study_file, resolve_execution
from ..config.models import StudyConfig
from ..config.platform import Platform
from .grid import DEFAULT_MAX_EXPERIMENTS, expand_grid
from .hashing import compute_study_design_hash

__all__ = ["DEFAULT_MAX_EXPERIMENTS", "load_study"]


def load_study(
    path: Path,
    *,
    command_line: Mapping[str, Any] | None = None,
    ini: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
    platform: Platform | None = None,
    max_experiments: int = DEFAULT_MAX_EXPERIMENTS,
) -> StudyConfig:
    """Read, validate and expand one study file."""
    raw = read_study_file(path)
    execution = resolve_execution(
        raw.get("execution"), command_line=command_line, ini=ini, defaults=defaults, path=path
    )
    experiments, skipped = expand_grid(raw, path, platform=platform, max_experiments=max_experiments)
    name = raw.get("name")
    # Every part is validated already; validating again would re-judge the experiments without their platform.
    return StudyConfig.model_construct(
        name=str(name) if name is not None else path.stem,
        experiments=experiments,
        execution=execution,
        study_design_hash=compute_study_design_hash(experiments),
        skipped_configs=[s.to_dict() for s in skipped],
    )
