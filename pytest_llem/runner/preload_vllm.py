"""Imported by the forkserver too when the session has vLLM items: ``import vllm`` costs 8–13 s, paid once instead of
in every item's child. Only imports; no engine is built here (that needs the item's environment)."""

from __future__ import annotations

import contextlib
import importlib
import os

MODULES = ("vllm", "vllm.entrypoints.llm", "vllm.sampling_params", "pytest_llem.backends.vllm")

_before = dict(os.environ)
for _name in MODULES:
    with contextlib.suppress(Exception):  # an absent or broken vllm is the item's problem, reported there
        importlib.import_module(_name)
# Importing vLLM sets environment variables (CUDA checks through NVML, OpenMP, inductor). An isolated child's
# environment is replaced by its item's, and child.py sets these again for a vLLM item before any work: it sees what
# importing vLLM itself would give it, and a pytorch item forked from the same server sees none of them.
IMPORT_ENVIRON = {name: value for name, value in os.environ.items() if _before.get(name) != value}
