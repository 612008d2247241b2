"""Imported once by the forkserver that isolated items are forked from, so no item pays these imports again.

transformers imports most of itself lazily, on first use of a class: naming the classes every item touches here moves
several seconds per item into the server's one-time start. Only imports, never CUDA. A missing library is skipped:
the item then imports what it needs itself.
"""

from __future__ import annotations

import contextlib
import importlib

MODULES = (
    "torch",
    "transformers",
    "transformers.models.auto.configuration_auto",
    "transformers.models.auto.tokenization_auto",
    "transformers.models.auto.modeling_auto",
    "transformers.models.llama.configuration_llama",  # the built-in models are Llamas
    "transformers.models.llama.modeling_llama",
    "transformers.tokenization_utils_fast",
    "transformers.generation.utils",
    "zeus.monitor",
    "pytest_llem.backends.pytorch",
    "pytest_llem.runner.execute",
)
LAZY_NAMES = ("AutoConfig", "AutoTokenizer", "AutoModelForCausalLM", "PreTrainedTokenizerFast", "LlamaForCausalLM")

for _name in MODULES:
    with contextlib.suppress(Exception):  # a library that is absent or broken here is the item's problem, not ours
        importlib.import_module(_name)
with contextlib.suppress(Exception):
    import transformers

    for _attribute in LAZY_NAMES:
        getattr(transformers, _attribute)
