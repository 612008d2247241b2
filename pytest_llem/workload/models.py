"""Turn the model an experiment names into something a backend can load.

Three kinds of spec are understood:

* ``builtin:<name>``: a model pytest-llem makes itself, once, into its cache folder (no download);
* a local folder (``./models/x``, ``/abs/path``, ``~/m``);
* a Hugging Face hub id (``org/name``), looked up in the local HF cache.

Built-ins are made by ``builtins``; this module only decides what a spec means.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import ModelNotFoundError
from .builtins import BUILTIN_MODELS, BUILTIN_PREFIX, materialise_builtin

__all__ = ["BUILTIN_MODELS", "ModelKind", "ResolvedModel", "default_cache_dir", "resolve_model"]

log = logging.getLogger(__name__)

ModelKind = Literal["builtin", "local", "hub"]

_TRUTHY = frozenset({"1", "true", "yes", "on"})


@dataclass(frozen=True)
class ResolvedModel:
    """A model spec made concrete: ``location`` is what ``from_pretrained`` / ``LLM(model=...)`` takes."""

    spec: str
    location: str
    kind: ModelKind


def default_cache_dir() -> Path:
    """Where built-in models are materialised: ``$LLEM_CACHE_DIR`` if set, else ``~/.cache/pytest-llem``."""
    env = os.environ.get("LLEM_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "pytest-llem"


def resolve_model(spec: str, *, cache_dir: Path | None = None, revision: str | None = None) -> ResolvedModel:
    """Find (or, for built-ins, build) the model ``spec`` names; raise ModelNotFoundError if it cannot be had."""
    text = spec.strip()
    if not text:
        raise ModelNotFoundError("empty model name: write builtin:<name>, a local folder, or a hub id org/name")
    if text.startswith(BUILTIN_PREFIX):
        name = text[len(BUILTIN_PREFIX) :].strip()
        folder = materialise_builtin(name, cache_dir if cache_dir is not None else default_cache_dir())
        return ResolvedModel(spec=spec, location=str(folder), kind="builtin")
    local = _local_folder(text)
    if local is not None:
        return ResolvedModel(spec=spec, location=str(local), kind="local")
    return ResolvedModel(spec=spec, location=_hub_location(text, revision), kind="hub")


# --------------------------------------------------------------------------------------------------------------
# local folders and hub ids


def _looks_like_path(text: str) -> bool:
    return text.startswith((".", "/", "~"))


def _local_folder(text: str) -> Path | None:
    """The absolute folder ``text`` names, None if it is not a path (then it is a hub id)."""
    path = Path(text).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists():
        raise ModelNotFoundError(f"model path {str(path)!r} is a file, not a model folder (config.json + weights)")
    if _looks_like_path(text):
        raise ModelNotFoundError(f"model folder {str(path.resolve())!r} does not exist (model spec {text!r})")
    return None


def _truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() in _TRUTHY


def _hf_offline() -> bool:
    return _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("TRANSFORMERS_OFFLINE"))


def _hf_hub_cache() -> Path:
    """The hub cache folder, read from the environment now.

    huggingface_hub reads these variables once, when it is imported; reading them here lets a later change
    (a test's monkeypatch, a study that sets HF_HOME) take effect. Same precedence as huggingface_hub.
    """
    env = os.environ
    explicit = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(os.path.expandvars(explicit)).expanduser()
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def _hub_location(repo_id: str, revision: str | None = None) -> str:
    """The cached snapshot folder of ``repo_id``, or the id itself when transformers may still download it."""
    from huggingface_hub import try_to_load_from_cache  # not at module level: keeps the plugin import light

    hub_cache = _hf_hub_cache()
    try:
        cached = try_to_load_from_cache(repo_id, "config.json", cache_dir=hub_cache, revision=revision)
    except ValueError as exc:  # HFValidationError: neither an existing folder nor a well-formed hub id
        raise ModelNotFoundError(
            f"model {repo_id!r} is neither an existing local folder nor a valid hub id (org/name): {exc}"
        ) from exc
    if isinstance(cached, str):  # a path; the other non-None value is a "known missing" sentinel
        return str(Path(cached).parent)
    if _hf_offline():
        raise ModelNotFoundError(
            f"model {repo_id!r} is not in the local Hugging Face cache ({hub_cache}) and offline mode is on "
            f"(HF_HUB_OFFLINE); download it where there is network (`hf download {repo_id}`) into that cache, "
            "or point HF_HOME / HF_HUB_CACHE at a cache that holds it"
        )
    return repo_id
