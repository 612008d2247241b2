"""Experiment ids, built like pytest parametrize ids: the backend, then the values that vary across the study."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from operator import methodcaller
from typing import Any

from ..config.models import BACKENDS, ExperimentConfig

_UNSAFE = re.compile(r"[^\w.+-]+")


def varying_paths(values: Sequence[Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Paths (in field order) whose value is not the same in every experiment; equal subtrees are skipped whole."""
    keys: dict[str, None] = {}
    for value in values:
        keys.update(dict.fromkeys(value))
    paths = []
    for key in keys:
        column = list(map(methodcaller("get", key, _MISSING), values))
        if column.count(column[0]) == len(column):  # list.count compares in C: linear, and fast at 100,000
            continue
        if any(isinstance(c, Mapping) for c in column):
            # Whether a path varies depends only on the distinct subtrees, which a sweep shares between experiments.
            distinct = {id(c): c if isinstance(c, Mapping) else {} for c in column}
            paths += varying_paths(list(distinct.values()), (*prefix, key))
        else:
            paths.append((*prefix, key))
    return paths


def lookup(data: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = data
    for part in path:
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _show(path: tuple[str, ...], value: Any) -> str:
    if isinstance(value, list):
        text = "_".join(str(v) for v in value)
    elif path in (("model",), ("dataset", "path")):
        # A model id or path is long; its last segment says which one.
        text = re.split(r"[/:\\]", str(value).rstrip("/"))[-1]
    else:
        text = str(value)
    return safe_name(text).strip("_") or "_"


def safe_name(text: str) -> str:
    """``text`` with every run of characters other than letters, digits and ``. + - _`` made one ``_``: fit for ids,
    file names and baseline names."""
    return _UNSAFE.sub("_", text)


def experiment_ids(experiments: Sequence[ExperimentConfig]) -> list[str]:
    """One unique id per experiment: its own ``id:`` if given, else ``<backend>-<varying values…>``."""
    identities = [e.identity_fields for e in experiments]
    every = varying_paths(identities)
    varying = [p for p in every if p != ("backend",)]
    # A backend's own section (`vllm.sampling.ignore_eos`) names its experiments only where it varies among them:
    # beside another backend, which lacks the section, the backend in the id already tells them apart.
    backends = {e.backend for e in experiments}
    within = {
        backend: set(
            every
            if len(backends) == 1
            else varying_paths([i for e, i in zip(experiments, identities, strict=True) if e.backend == backend])
        )
        for backend in backends
    }
    shown_by_backend = {
        backend: [p for p in varying if p[0] not in BACKENDS or p in within[backend]] for backend in backends
    }
    # A sweep repeats each value many times: each is shown once.
    shown_values: dict[tuple[tuple[str, ...], type, Any], str] = {}
    ids = []
    for exp, identity in zip(experiments, identities, strict=True):
        if exp.id:
            ids.append(exp.id)
            continue
        parts = [exp.backend]
        for path in shown_by_backend[exp.backend]:
            value = lookup(identity, path)
            if value is None:
                continue
            key = (path, type(value), value if not isinstance(value, list | dict) else repr(value))
            text = shown_values.get(key)
            if text is None:
                text = shown_values[key] = _show(path, value)
            parts.append(text)
        ids.append("-".join(parts))
    return _deduplicate(ids, explicit=[bool(e.id) for e in experiments])


_MISSING = object()


def _deduplicate(ids: list[str], explicit: list[bool]) -> list[str]:
    """Number repeated ids like pytest does (``x-0``, ``x-1``). An experiment's own ``id:`` is kept as written when
    no other experiment claims it too, and no generated id may take it."""
    pairs = list(zip(ids, explicit, strict=True))
    own_counts = Counter(i for i, own in pairs if own)
    generated_counts = Counter(i for i, own in pairs if not own)
    taken = {i for i, own in pairs if own and own_counts[i] == 1}
    every = set(ids)
    next_number: Counter[str] = Counter()
    out = []
    for id_, own in pairs:
        if own and own_counts[id_] == 1:
            out.append(id_)
            continue
        if not own and generated_counts[id_] == 1 and id_ not in taken:
            out.append(id_)
            taken.add(id_)
            continue
        candidate = f"{id_}-{next_number[id_]}"
        while candidate in taken or candidate in every:
            next_number[id_] += 1
            candidate = f"{id_}-{next_number[id_]}"
        next_number[id_] += 1
        taken.add(candidate)
        out.append(candidate)
    return out
