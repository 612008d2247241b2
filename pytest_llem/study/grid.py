"""Grid expansion: a study's raw mapping → validated experiments, skipped configs, a design hash, a cycle order.

Pure library code (no pytest). Ported from LLenergyMeasure v2.0's grid with its known defects fixed:
non-backend dotted keys are nested field paths (not pseudo-backends); scoped keys unflatten at any depth; a scoped key
for a backend the study does not run is an error; ``experiments:`` without ``sweep:`` adds no hidden experiment;
identical experiments collapse into one; a sweep ``backend:`` list gives independent grids just like a top-level one.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from ..config.loader import load_base
from ..config.messages import describe, key_path, unknown_key_message
from ..config.models import CycleOrder, ExperimentConfig
from ..config.platform import Platform, detect_platform
from ..config.strict import INVALID_COMBINATION
from ..errors import ConfigError
from .cycles import apply_cycles, number_cycles
from .hashing import compute_config_hash, compute_study_design_hash
from .sweep import DEFAULT_MAX_EXPERIMENTS, MAX_EXPERIMENTS_KEY, Candidate, deep_merge, generate, has_path

__all__ = [
    "DEFAULT_MAX_EXPERIMENTS",
    "MAX_EXPERIMENTS_KEY",
    "STUDY_ONLY_KEYS",
    "ConfigWarning",
    "CycleOrder",
    "SkippedConfig",
    "apply_cycles",
    "compute_config_hash",
    "compute_study_design_hash",
    "expand_grid",
    "number_cycles",
]

STUDY_ONLY_KEYS = frozenset({"name", "sweep", "experiments", "base", "execution", "version"})
_EXPERIMENT_KEYS = tuple(ExperimentConfig.model_fields)


class ConfigWarning(UserWarning):
    """Something in a study that works but is probably not what was meant (e.g. duplicate experiments)."""


@dataclass
class SkippedConfig:
    """A generated combination that failed validation: kept with its reason, never run."""

    raw_config: dict[str, Any]
    reason: str
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def short_label(self) -> str:
        return f"{self.raw_config.get('backend', 'unknown')}, {self.raw_config.get('precision', '?')}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "raw_config": self.raw_config,
            "reason": self.reason,
            "short_label": self.short_label,
            "errors": self.errors,
        }


# --- validation ---


def _error_key(candidate: Candidate, loc: tuple[str | int, ...], raw_study: Mapping[str, Any], missing: bool) -> str:
    """Where in the study file the offending value was written (or, if missing, should have been)."""
    path = key_path(loc)
    if candidate.entry is not None and (missing or has_path(raw_study["experiments"][candidate.entry], loc)):
        return key_path(("experiments", candidate.entry, *loc))
    for written, dim_path in candidate.sweep_keys:
        n = min(len(dim_path), len(loc))
        if tuple(dim_path[:n]) == tuple(loc[:n]):
            return f"sweep.{written}"
    if has_path(raw_study, loc) or not path:
        return path or "(study)"
    if "base" in raw_study:
        return f"{path} (from base: {raw_study['base']})"
    return path


# The experiment's sections (decoder:, pytorch:, vllm:, …): a sweep repeats each one many times.
_SECTIONS = {
    name: kind
    for name, info in ExperimentConfig.model_fields.items()
    for kind in (info.annotation, *get_args(info.annotation))
    if isinstance(kind, type) and issubclass(kind, BaseModel)
}


class _Sections:
    """Each distinct section of a study validated once: pydantic takes a validated section as it is, so the experiments
    that share it are validated without it. A section that fails alone is left raw, for the experiment's own
    validation to report where it was written."""

    def __init__(self, platform: Platform) -> None:
        self.context = {"platform": platform}
        self.validated: dict[tuple[str, str], BaseModel | None] = {}

    def substitute(self, raw: dict[str, Any]) -> dict[str, Any]:
        out = raw
        for name, kind in _SECTIONS.items():
            value = raw.get(name)
            if not isinstance(value, dict):
                continue
            key = (name, repr(value))  # repr tells 1 from 1.0 and True, as validation would
            if key not in self.validated:
                try:
                    self.validated[key] = kind.model_validate(value, context=self.context)
                except ValidationError:
                    self.validated[key] = None
            section = self.validated[key]
            if section is not None:
                out = dict(out) if out is raw else out
                out[name] = section
        return out


def _validate(
    candidate: Candidate,
    raw_study: Mapping[str, Any],
    study_path: Path | None,
    platform: Platform,
    sections: _Sections,
) -> ExperimentConfig | SkippedConfig:
    try:
        return ExperimentConfig.model_validate(sections.substitute(candidate.raw), context={"platform": platform})
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        broken = [e for e in errors if e["type"] != INVALID_COMBINATION]
        if broken:
            first = broken[0]
            raise ConfigError(
                describe(first),
                file=study_path,
                key=_error_key(candidate, tuple(first["loc"]), raw_study, missing=first["type"] == "missing"),
            ) from None
        reason = "; ".join(f"{key_path(e['loc'])}: {e['msg']}" if e["loc"] else e["msg"] for e in errors)
        details = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors]
        return SkippedConfig(raw_config=candidate.raw, reason=reason, errors=details)


def _collapse_duplicates(experiments: list[ExperimentConfig], study_path: Path | None) -> list[ExperimentConfig]:
    unique: dict[str, ExperimentConfig] = {}
    for exp in experiments:
        digest = compute_config_hash(exp)
        if digest in unique:
            # Attributed to the study file, not to this module: it is the file the user should look at.
            warnings.warn_explicit(
                ConfigWarning(
                    f"{study_path or 'study'}: two experiments are identical ({exp.backend}, {exp.model}, "
                    f"{exp.precision}); running it once"
                ),
                category=ConfigWarning,
                filename=str(study_path or "<study>"),
                lineno=1,
            )
            continue
        unique[digest] = exp
    return list(unique.values())


def _check_top_level(raw: Mapping[str, Any], study_path: Path | None) -> None:
    allowed = sorted(STUDY_ONLY_KEYS) + list(_EXPERIMENT_KEYS)
    for key in raw:
        if key not in STUDY_ONLY_KEYS and key not in _EXPERIMENT_KEYS:
            raise ConfigError(unknown_key_message(str(key), allowed), file=study_path, key=str(key))


def expand_grid(
    raw: dict[str, Any],
    study_path: Path | None = None,
    *,
    platform: Platform | None = None,
    max_experiments: int = DEFAULT_MAX_EXPERIMENTS,
) -> tuple[list[ExperimentConfig], list[SkippedConfig]]:
    """Expand a study mapping into valid experiments (sweep points first, then entries) and skipped configs.

    Raises ConfigError for anything wrong with the file itself, when it would expand to more than
    ``max_experiments`` configs (checked before expanding), and when nothing valid is left to run.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"a study must be a mapping of keys, got {type(raw).__name__}", file=study_path)
    _check_top_level(raw, study_path)
    platform = platform or detect_platform()
    fixed = deep_merge(
        load_base(raw.get("base"), study_path, STUDY_ONLY_KEYS),
        {k: v for k, v in raw.items() if k not in STUDY_ONLY_KEYS},
    )
    candidates = generate(raw, fixed, study_path, max_experiments)

    sections = _Sections(platform)
    outcomes = [_validate(c, raw, study_path, platform, sections) for c in candidates]
    valid = [o for o in outcomes if isinstance(o, ExperimentConfig)]
    skipped = [o for o in outcomes if isinstance(o, SkippedConfig)]
    if not valid:
        reasons = "; ".join(s.reason[:160] for s in skipped[:3])
        raise ConfigError(
            f"nothing to run — all {len(skipped)} generated config(s) are invalid: {reasons}", file=study_path
        )
    return _collapse_duplicates(valid, study_path), skipped
