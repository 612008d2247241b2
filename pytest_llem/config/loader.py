"""Study files → StudyConfig: YAML parsing, execution settings with their precedence, grid expansion, design hash."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..errors import ConfigError
from .messages import describe, key_path
from .models import ExecutionConfig, StudyConfig
from .platform import Platform


def read_study_file(path: Path) -> dict[str, Any]:
    """The YAML document of a study file as a mapping, or a ConfigError that says where it broke."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the file: {exc}", file=path) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"invalid YAML{where}: {problem}", file=path) from None
    if data is None:
        raise ConfigError("the file is empty; a study needs at least 'model:' or 'experiments:'", file=path)
    if not isinstance(data, dict):
        raise ConfigError(f"a study must be a mapping of keys, got a {type(data).__name__}", file=path)
    return data


# How to name a setting that came from outside the study file: (command line option, ini key).
OPTION_NAMES: dict[str, tuple[str, str]] = {
    "n_cycles": ("--llem-cycles", "llem_cycles"),
    "cycle_order": ("--llem-cycle-order", "llem_cycle_order"),
    "shuffle_seed": ("--llem-shuffle-seed", "llem_shuffle_seed"),
    "isolation": ("--llem-isolation", "llem_isolation"),
    "timeout_seconds": ("--llem-timeout", "llem_timeout"),
    "config_gap_seconds": ("--llem-no-gaps", "config_gap_seconds"),
    "cycle_gap_seconds": ("--llem-no-gaps", "cycle_gap_seconds"),
}


def load_base(base: Any, study_path: Path | None, study_only_keys: frozenset[str]) -> dict[str, Any]:
    """The experiment file a study names in ``base:``, resolved beside the study file, without study-only keys."""
    if base is None:
        return {}
    if not isinstance(base, str | Path):
        raise ConfigError(f"expected a path to an experiment file, got {base!r}", file=study_path, key="base")
    path = Path(base)
    if not path.is_absolute() and study_path is not None:
        path = study_path.parent / path
    if not path.is_file():
        raise ConfigError(f"file not found: {path}", file=study_path, key="base")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read base file {path}: {exc}", file=study_path, key="base") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"base file {path} is not valid YAML: {exc}", file=study_path, key="base") from None
    if not isinstance(data, dict):
        raise ConfigError(f"base file {path} must hold a mapping of keys", file=study_path, key="base")
    # A base is one experiment: study-only keys inside it (and base chains) are ignored.
    return {k: v for k, v in data.items() if k not in study_only_keys}


def resolve_execution(
    raw_execution: Any,
    *,
    command_line: Mapping[str, Any] | None = None,
    ini: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
    path: Path | None = None,
) -> ExecutionConfig:
    """Command line > study ``execution:`` > ini > defaults (else the model's own), as one ExecutionConfig."""
    if raw_execution is not None and not isinstance(raw_execution, Mapping):
        raise ConfigError("expected a mapping (n_cycles, cycle_order, …)", file=path, key="execution")
    if raw_execution:
        _validate_execution(raw_execution, "execution", path)  # wrong even where the command line overrides it
    layers: list[tuple[str, Mapping[str, Any]]] = [
        ("defaults", defaults or {}),
        ("ini", ini or {}),
        ("execution", raw_execution or {}),
        ("command line", command_line or {}),
    ]
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for name, layer in layers:
        for key, value in layer.items():
            if value is not None:
                merged[key] = value
                origin[key] = name
    return _validate_execution(merged, origin, path)


def _validate_execution(
    values: Mapping[str, Any], origin: Mapping[str, str] | str, path: Path | None
) -> ExecutionConfig:
    try:
        return ExecutionConfig.model_validate(values)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        field = str(error["loc"][0]) if error["loc"] else ""
        source = origin if isinstance(origin, str) else origin.get(field, "execution")
        option, ini_key = OPTION_NAMES.get(field, (field, field))
        key = {"command line": option, "ini": f"{ini_key} (ini)"}.get(source, key_path(("execution", *error["loc"])))
        raise ConfigError(describe(error, root=ExecutionConfig), file=path, key=key) from None


def load_study(
    path: Path,
    *,
    command_line: Mapping[str, Any] | None = None,
    ini: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
    platform: Platform | None = None,
) -> StudyConfig:
    """Read, validate and expand one study file."""
    from ..study.grid import compute_study_design_hash, expand_grid  # the grid imports this package's models

    raw = read_study_file(path)
    execution = resolve_execution(
        raw.get("execution"), command_line=command_line, ini=ini, defaults=defaults, path=path
    )
    experiments, skipped = expand_grid(raw, path, platform=platform)
    name = raw.get("name")
    # Every part is validated already; validating again would re-judge the experiments without their platform.
    return StudyConfig.model_construct(
        name=str(name) if name is not None else path.stem,
        experiments=experiments,
        execution=execution,
        study_design_hash=compute_study_design_hash(experiments),
        skipped_configs=[s.to_dict() for s in skipped],
    )
