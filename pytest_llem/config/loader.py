"""Study files as data: YAML parsing, the ``base:`` experiment file, execution settings with their precedence."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..errors import ConfigError
from .messages import describe, key_path
from .models import ExecutionConfig


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
        ("ini", _parse_ini(ini or {}, path)),
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


def _parse_ini(ini: Mapping[str, Any], path: Path | None) -> dict[str, Any]:
    """ini keys are text (``config.getini``): parsed here, the one layer where ``"3"`` may mean 3."""
    given = {key: value for key, value in ini.items() if value is not None}
    if not given:
        return {}
    parsed = _validate_execution(given, "ini", path, strict=False)
    return {key: getattr(parsed, key) for key in given}


def _validate_execution(
    values: Mapping[str, Any], origin: Mapping[str, str] | str, path: Path | None, *, strict: bool | None = None
) -> ExecutionConfig:
    try:
        return ExecutionConfig.model_validate(values, strict=strict)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        field = str(error["loc"][0]) if error["loc"] else ""
        source = origin if isinstance(origin, str) else origin.get(field, "execution")
        option, ini_key = OPTION_NAMES.get(field, (field, field))
        key = {"command line": option, "ini": f"{ini_key} (ini)"}.get(source, key_path(("execution", *error["loc"])))
        raise ConfigError(describe(error, root=ExecutionConfig), file=path, key=key) from None
