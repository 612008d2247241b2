"""Grid expansion: a study's raw mapping → validated experiments, skipped configs, a design hash, a cycle order.

Pure library code (no pytest). Ported from LLenergyMeasure v2.0's grid with its known defects fixed:
non-backend dotted keys are nested field paths (not pseudo-backends); scoped keys unflatten at any depth; a scoped key
for a backend the study does not run is an error; ``experiments:`` without ``sweep:`` adds no hidden experiment;
identical experiments collapse into one; a sweep ``backend:`` list gives independent grids just like a top-level one.
"""

from __future__ import annotations

import copy
import itertools
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from ..config.loader import load_base
from ..config.messages import describe, key_path, unknown_key_message
from ..config.models import BACKENDS, INVALID_COMBINATION, CycleOrder, ExperimentConfig, backend_names
from ..config.platform import Platform, detect_platform
from ..errors import ConfigError
from .cycles import apply_cycles, number_cycles
from .hashing import compute_config_hash, compute_study_design_hash

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

# A sweep's size is a product: one typo (a long list, one key too many) can ask for millions of experiments. Above this
# many per study, the study is refused before anything is expanded.
DEFAULT_MAX_EXPERIMENTS = 100_000
MAX_EXPERIMENTS_KEY = "llem_max_experiments"  # the ini key that raises the limit

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


@dataclass(frozen=True)
class _Candidate:
    """One generated raw config and where its values came from, so an error can name the key in the file."""

    raw: dict[str, Any]
    sweep_keys: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (key as written, path it set)
    entry: int | None = None


# --- raw helpers ---


def _deep_merge(low: Mapping[str, Any], high: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(low))
    for key, value in high.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class _NotAMapping(Exception):
    """A dotted sweep key reaches inside a value that is not a mapping."""

    def __init__(self, where: str, value: Any) -> None:
        self.where, self.value = where, value


def _set_path(target: dict[str, Any], path: Sequence[str], value: Any) -> None:
    """Set a nested key, copying each mapping on the way: generated configs share the rest of the shared fields."""
    for depth, part in enumerate(path[:-1]):
        child = target.get(part)
        if child is not None and not isinstance(child, Mapping):
            raise _NotAMapping(".".join(path[: depth + 1]), child)
        child = dict(child) if child is not None else {}
        target[part] = child
        target = child
    target[path[-1]] = value


def _has_path(source: Any, path: Sequence[str | int]) -> bool:
    for part in path:
        if isinstance(source, Mapping) and part in source:
            source = source[part]
        else:
            return False
    return True


# --- sweep parsing ---


@dataclass(frozen=True)
class _Dimension:
    key: str  # as written in the file
    backend: str | None  # the backend it is scoped to, or None for every experiment
    path: tuple[str, ...]  # where it lands in the experiment
    values: tuple[Any, ...]


def _parse_sweep(sweep: Any, study_path: Path | None) -> tuple[list[_Dimension], list[str] | None]:
    """The sweep's dimensions, plus its ``backend`` values if it sweeps the backend."""
    if sweep is None:
        return [], None
    if not isinstance(sweep, Mapping):
        raise ConfigError("expected a mapping of key → list of values", file=study_path, key="sweep")
    dims: list[_Dimension] = []
    swept_backends: list[str] | None = None
    for key, raw_values in sweep.items():
        key = str(key)
        values = list(raw_values) if isinstance(raw_values, list) else [raw_values]
        if not values:
            raise ConfigError(
                "empty list: a sweep dimension needs at least one value", file=study_path, key=f"sweep.{key}"
            )
        if key == "backend":
            swept_backends = _backend_list(values, study_path, "sweep.backend")
            continue
        parts = tuple(key.split("."))
        if "" in parts:
            raise ConfigError("malformed dotted key", file=study_path, key=f"sweep.{key}")
        scoped = parts[0] in BACKENDS  # `pytorch.batch_size`, or a whole `pytorch:` section
        dims.append(_Dimension(key, parts[0] if scoped else None, parts, tuple(values)))
    return dims, swept_backends


def _backend_list(value: Any, study_path: Path | None, key: str) -> list[str]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ConfigError("empty list; name at least one backend", file=study_path, key=key)
    for v in values:
        if v not in backend_names():
            allowed = ", ".join(backend_names())
            raise ConfigError(f"{v!r} is not a backend; allowed: {allowed}", file=study_path, key=key)
    return list(dict.fromkeys(values))


def _study_backends(
    fixed: Mapping[str, Any], dims: list[_Dimension], swept: list[str] | None, study_path: Path | None
) -> list[str]:
    if swept is not None and "backend" in fixed:
        raise ConfigError(
            "is swept, and also set at the top level (backend:); keep one", file=study_path, key="sweep.backend"
        )
    if swept is not None:
        backends = swept
    elif "backend" in fixed:
        backends = _backend_list(fixed["backend"], study_path, "backend")
    else:
        # Nothing says which backend: the scoped keys do, else the default.
        backends = list(dict.fromkeys(d.backend for d in dims if d.backend)) or ["pytorch"]
    for dim in dims:
        if dim.backend is not None and dim.backend not in backends:
            raise ConfigError(
                f"is scoped to backend {dim.backend}, which this study does not run (backend: {', '.join(backends)})",
                file=study_path,
                key=f"sweep.{dim.key}",
            )
    return backends


# --- generation ---


def _for_backend(fixed: Mapping[str, Any], backend: str, study_backends: set[str]) -> dict[str, Any]:
    """The shared fields as seen by one backend: sections of the study's other backends belong to their own grids.

    A shallow copy: nothing downstream mutates a generated config except through ``_set_path``, which copies.
    """
    raw = {k: v for k, v in fixed.items() if not (k in study_backends and k != backend)}
    raw["backend"] = backend
    return raw


def _sweep_candidates(
    fixed: Mapping[str, Any],
    dims: list[_Dimension],
    backends: list[str],
    all_backends: set[str],
    study_path: Path | None,
) -> Iterator[_Candidate]:
    for backend in backends:
        own = [d for d in dims if d.backend in (None, backend)]
        for combo in itertools.product(*(d.values for d in own)):
            raw = _for_backend(fixed, backend, all_backends)
            for dim, value in zip(own, combo, strict=True):
                try:
                    _set_path(raw, dim.path, value)
                except _NotAMapping as exc:
                    raise ConfigError(
                        f"sets a field inside {exc.where}, but {exc.where} is {exc.value!r}, not a mapping",
                        file=study_path,
                        key=f"sweep.{dim.key}",
                    ) from None
            yield _Candidate(raw, sweep_keys=tuple((d.key, d.path) for d in own))


def _entry_candidates(
    fixed: Mapping[str, Any], entries: list[Any], backends: list[str], all_backends: set[str], study_path: Path | None
) -> Iterator[_Candidate]:
    for index, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise ConfigError(
                f"expected a mapping of experiment fields, got {entry!r}", file=study_path, key=f"experiments[{index}]"
            )
        own = [entry["backend"]] if "backend" in entry else backends
        for backend in own:
            base = _for_backend(fixed, backend, all_backends) if isinstance(backend, str) else dict(fixed)
            yield _Candidate(_deep_merge(base, entry), entry=index)


def _check_size(
    dims: list[_Dimension],
    backends: list[str],
    n_entry_configs: int,
    sweeping: bool,
    limit: int,
    study_path: Path | None,
) -> None:
    """Refuse a study that would expand beyond ``limit`` experiments, from the sizes of its lists alone."""
    per_backend = {b: math.prod(len(d.values) for d in dims if d.backend in (None, b)) for b in backends}
    total = (sum(per_backend.values()) if sweeping else 0) + n_entry_configs
    if total <= limit:
        return
    factors = " × ".join(f"{len(d.values)} ({d.key})" for d in sorted(dims, key=lambda d: -len(d.values)))
    by_backend = f" per backend, for {len(backends)} backends" if sweeping and len(backends) > 1 else ""
    entries = f", plus {n_entry_configs:,} from experiments:" if n_entry_configs else ""
    raise ConfigError(
        f"expands to {total:,} experiments ({factors or '1'}{by_backend}{entries}), more than the limit of "
        f"{limit:,} per study; shorten the sweep's lists, or raise the limit with the ini key {MAX_EXPERIMENTS_KEY}",
        file=study_path,
        key="sweep" if dims else "experiments",
    )


# --- validation ---


def _error_key(candidate: _Candidate, loc: tuple[str | int, ...], raw_study: Mapping[str, Any], missing: bool) -> str:
    """Where in the study file the offending value was written (or, if missing, should have been)."""
    path = key_path(loc)
    if candidate.entry is not None and (missing or _has_path(raw_study["experiments"][candidate.entry], loc)):
        return key_path(("experiments", candidate.entry, *loc))
    for written, dim_path in candidate.sweep_keys:
        n = min(len(dim_path), len(loc))
        if tuple(dim_path[:n]) == tuple(loc[:n]):
            return f"sweep.{written}"
    if _has_path(raw_study, loc) or not path:
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
    candidate: _Candidate,
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
    fixed = _deep_merge(
        load_base(raw.get("base"), study_path, STUDY_ONLY_KEYS),
        {k: v for k, v in raw.items() if k not in STUDY_ONLY_KEYS},
    )
    dims, swept_backends = _parse_sweep(raw.get("sweep"), study_path)
    entries = raw.get("experiments") or []
    if not isinstance(entries, list):
        raise ConfigError("expected a list of experiment mappings", file=study_path, key="experiments")
    backends = _study_backends(fixed, dims, swept_backends, study_path)
    all_backends = set(backends) | {
        e["backend"] for e in entries if isinstance(e, Mapping) and isinstance(e.get("backend"), str)
    }

    sweeping = bool((dims or swept_backends or not entries) and (any(k != "backend" for k in fixed) or dims))
    n_entry_configs = sum(1 if isinstance(e, Mapping) and "backend" in e else len(backends) for e in entries)
    _check_size(dims, backends, n_entry_configs, sweeping, max_experiments, study_path)
    candidates: list[_Candidate] = []
    if sweeping:
        candidates.extend(_sweep_candidates(fixed, dims, backends, all_backends, study_path))
    candidates.extend(_entry_candidates(fixed, entries, backends, all_backends, study_path))
    if not candidates:
        raise ConfigError(
            "the study produced no experiments: add a 'sweep:' block, an 'experiments:' list, "
            "or experiment fields such as 'model:'",
            file=study_path,
        )

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
