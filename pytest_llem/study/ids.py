"""Experiment ids, built like pytest parametrize ids: the backend, then the values that vary across the study."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ..config.models import ExperimentConfig

_UNSAFE = re.compile(r"[^\w.+-]+")


def _leaves(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from _leaves(value, path + ".")
        else:
            yield path, value


def _flat(exp: ExperimentConfig) -> dict[str, Any]:
    return dict(_leaves(exp.model_dump(mode="json", exclude={"id"}, exclude_none=True)))


def _show(path: str, value: Any) -> str:
    if isinstance(value, list):
        text = "_".join(str(v) for v in value)
    elif path == "model" or path == "dataset.path":
        # A model id or path is long; its last segment says which one.
        text = re.split(r"[/:\\]", str(value).rstrip("/"))[-1]
    else:
        text = str(value)
    return _UNSAFE.sub("_", text).strip("_") or "_"


def experiment_ids(experiments: Sequence[ExperimentConfig]) -> list[str]:
    """One unique id per experiment: its own ``id:`` if given, else ``<backend>-<varying values…>``."""
    flats = [_flat(e) for e in experiments]
    order: dict[str, None] = {}
    for flat in flats:
        order.update(dict.fromkeys(flat))
    varying = [path for path in order if path != "backend" and len({repr(f.get(path, _MISSING)) for f in flats}) > 1]
    ids = []
    for exp, flat in zip(experiments, flats, strict=True):
        if exp.id:
            ids.append(exp.id)
            continue
        parts = [exp.backend] + [_show(p, flat[p]) for p in varying if p in flat]
        ids.append("-".join(parts))
    return _deduplicate(ids)


_MISSING = object()


def _deduplicate(ids: list[str]) -> list[str]:
    """Number repeated ids like pytest does (``x-0``, ``x-1``), skipping numbers another id already uses."""
    counts = Counter(ids)
    taken = set(ids)
    next_number: Counter[str] = Counter()
    out = []
    for id_ in ids:
        if counts[id_] == 1:
            out.append(id_)
            continue
        candidate = f"{id_}-{next_number[id_]}"
        while candidate in taken:
            next_number[id_] += 1
            candidate = f"{id_}-{next_number[id_]}"
        next_number[id_] += 1
        taken.add(candidate)
        out.append(candidate)
    return out
