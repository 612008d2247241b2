"""A study's raw mapping → the raw configs it generates (candidates), each knowing which keys of the file set it.

The sweep's dimensions (dotted keys, backend-scoped or not), the study's backends, the product per backend, the
``experiments:`` entries merged over the shared fields, and the size check that refuses a typo asking for millions
of experiments before anything is expanded. Validation is grid.py's.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config.models import BACKENDS, backend_names
from ..errors import ConfigError

# A sweep's size is a product: one typo (a long list, one key too many) can ask for millions of experiments. Above this
# many per study, the study is refused before anything is expanded.
DEFAULT_MAX_EXPERIMENTS = 100_000
MAX_EXPERIMENTS_KEY = "llem_max_experiments"  # the ini key that raises the limit


@dataclass(frozen=True)
class Candidate:
    """One generated raw config and where its values came from, so an error can name the key in the file."""

    raw: dict[str, Any]
    sweep_keys: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (key as written, path it set)
    entry: int | None = None


# --- raw helpers ---


def deep_merge(low: Mapping[str, Any], high: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(low))
    for key, value in high.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
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


def has_path(source: Any, path: Sequence[str | int]) -> bool:
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
) -> Iterator[Candidate]:
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
            yield Candidate(raw, sweep_keys=tuple((d.key, d.path) for d in own))


def _entry_candidates(
    fixed: Mapping[str, Any], entries: list[Any], backends: list[str], all_backends: set[str], study_path: Path | None
) -> Iterator[Candidate]:
    for index, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise ConfigError(
                f"expected a mapping of experiment fields, got {entry!r}", file=study_path, key=f"experiments[{index}]"
            )
        own = [entry["backend"]] if "backend" in entry else backends
        for backend in own:
            base = _for_backend(fixed, backend, all_backends) if isinstance(backend, str) else dict(fixed)
            yield Candidate(deep_merge(base, entry), entry=index)


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


def generate(
    raw: Mapping[str, Any], fixed: Mapping[str, Any], study_path: Path | None, max_experiments: int
) -> list[Candidate]:
    """Every raw config of the study (sweep points first, then entries); ``fixed`` is its shared fields, base merged."""
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
    candidates: list[Candidate] = []
    if sweeping:
        candidates.extend(_sweep_candidates(fixed, dims, backends, all_backends, study_path))
    candidates.extend(_entry_candidates(fixed, entries, backends, all_backends, study_path))
    if not candidates:
        raise ConfigError(
            "the study produced no experiments: add a 'sweep:' block, an 'experiments:' list, "
            "or experiment fields such as 'model:'",
            file=study_path,
        )
    return candidates
