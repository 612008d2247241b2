"""A pytorch item measures the same process whether or not vLLM items share its session: items are forked from one
server per kind of backend, and only vLLM's imports vLLM (which changes torch's process state when imported)."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.studies import FAST

# Each item's process writes, before any work, the torch settings importing vLLM is known to change, and from which
# server it was forked. PYTEST_CURRENT_TEST (set by pytest around the item, and passed on to its process) names it.
CONFTEST = """
import json
import os
import sys
from pathlib import Path

RECORDS = Path(__file__).parent / "records.jsonl"


def record_process_state():
    import torch

    inductor = sys.modules.get("torch._inductor.config")
    state = {
        "item": os.environ["PYTEST_CURRENT_TEST"].split("::")[-1].split(" ")[0],
        "server": os.getppid(),
        "vllm imported": "vllm" in sys.modules,
        "sdp": [
            torch.backends.cuda.cudnn_sdp_enabled(),
            torch.backends.cuda.flash_sdp_enabled(),
            torch.backends.cuda.mem_efficient_sdp_enabled(),
            torch.backends.cuda.math_sdp_enabled(),
        ],
        "threads": [torch.get_num_threads(), torch.get_num_interop_threads()],
        "inductor compile threads": getattr(inductor, "compile_threads", None),
        "default dtype": str(torch.get_default_dtype()),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
    }
    with RECORDS.open("a") as handle:
        handle.write(json.dumps(state) + "\\n")


def pytest_llem_child_setup():
    return [record_process_state]
"""


def run(pytester: pytest.Pytester) -> dict[str, dict]:
    """Run the project's studies; each item's recorded state by item name."""
    records = pytester.path / "records.jsonl"
    records.unlink(missing_ok=True)
    pytester.runpytest("--llem-cycles=1", "--llem-isolation=process")
    return {r["item"]: r for r in map(json.loads, records.read_text().splitlines())}


def test_a_pytorch_item_sees_the_same_torch_with_and_without_vllm_items_beside_it(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makefile(".yaml", study_p=FAST + "warmup: {enabled: false}\n")
    alone = run(pytester)
    # The vLLM item fails at its load at once (no such model): what it was forked from is what matters here.
    missing = str(pytester.path / "no-such-model")
    pytester.makefile(".yaml", study_v=FAST.replace("builtin:tiny-llama", missing) + "backend: vllm\n")
    mixed = run(pytester)
    assert set(alone) == {"pytorch[cycle1]"} and set(mixed) == {"pytorch[cycle1]", "vllm[cycle1]"}
    pytorch_alone, pytorch_mixed, vllm_item = alone["pytorch[cycle1]"], mixed["pytorch[cycle1]"], mixed["vllm[cycle1]"]
    assert not pytorch_mixed["vllm imported"]
    assert {k: v for k, v in pytorch_mixed.items() if k != "server"} == {
        k: v for k, v in pytorch_alone.items() if k != "server"
    }
    assert vllm_item["server"] != pytorch_mixed["server"]  # forked from a server of its own kind
    if importlib.util.find_spec("vllm") is not None:
        assert vllm_item["vllm imported"]  # that server preloads vLLM: the item pays no import
