"""Imported by the forkserver too when the session has vLLM items: ``import vllm`` costs 8–13 s, paid once instead of
in every item's child. Only imports; no engine is built here (that needs the item's environment)."""

from __future__ import annotations

import contextlib
import importlib

MODULES = ("vllm", "vllm.entrypoints.llm", "vllm.sampling_params", "pytest_llem.backends.vllm")

for _name in MODULES:
    with contextlib.suppress(Exception):  # an absent or broken vllm is the item's problem, reported there
        importlib.import_module(_name)
