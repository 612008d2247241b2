"""Turn pydantic's validation errors into one sentence a user can act on: key path, what is wrong, what is allowed."""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from .models import ExperimentConfig


def key_path(loc: Sequence[str | int]) -> str:
    """``("experiments", 2, "pytorch", "batch_size")`` → ``experiments[2].pytorch.batch_size``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def model_at(loc: Sequence[str | int], root: type[BaseModel] = ExperimentConfig) -> type[BaseModel] | None:
    """The pydantic model that owns the mapping at ``loc`` (``()`` is the root), or None if it is not a model."""
    model: type[BaseModel] | None = root
    for part in loc:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None
        model = _model_in(model.model_fields[part].annotation)
    return model


def allowed_keys(model: type[BaseModel]) -> list[str]:
    return list(model.model_fields)


def unknown_key_message(key: str, allowed: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown key '{key}'{hint}; allowed: {', '.join(allowed)}"


# The errors of strict numbers (``n: true``, ``n: 2.5``, ``n: "3"``) and what the field wanted.
_NUMBER_TYPES = {"int_type": "a valid integer", "float_type": "a valid number"}
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def as_written(value: Any) -> str:
    """A value as a study file writes it: ``true``, ``null``, ``2.5``, ``the string '3'``, ``a mapping``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, str):
        hint = " (write numbers without quotes)" if _NUMBER.fullmatch(value.strip()) else ""
        return f"the string {value!r}{hint}"
    return repr(value)


def describe(error: ErrorDetails, root: type[BaseModel] = ExperimentConfig) -> str:
    """What is wrong with the value at ``error['loc']``, without the location itself."""
    loc = error["loc"]
    if error["type"] == "extra_forbidden":
        owner = model_at(loc[:-1], root)
        allowed = allowed_keys(owner) if owner is not None else []
        return unknown_key_message(str(loc[-1]), allowed)
    if error["type"] == "missing":
        return "is required and no experiment sets it"
    value = error.get("input")
    if error["type"] in _NUMBER_TYPES:
        return f"input should be {_NUMBER_TYPES[error['type']]}, got {as_written(value)}"
    shown = "" if isinstance(value, dict | list) else f" (got {value!r})"
    return f"{error['msg'][0].lower()}{error['msg'][1:]}{shown}"
