"""Serving items through the plugin, against a local OpenAI-compatible server (``serving.url``): the engine behind
the server is the only thing faked, and fake GPUs at Zeus's device layer draw a known power, so the steady-state
energy is checked against watts x the window. The vLLM server itself runs in tests/plugin/test_vllm_serving.py."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pytest_llem.serving.server import free_port
from tests import studies
from tests.openai_fake import FakeOpenAIServer

STUDY = """
model: builtin:tiny-llama
backend: vllm
scenario: serving
precision: fp32
n: 8
max_output_tokens: 4
baseline: {{enabled: false}}
serving:
  url: {url}
  warmup_requests: 2
  max_concurrency: 2
  slo: {{ttft_ms: 60000, tpot_ms: 60000}}
sweep:
  serving.request_rate: [40, inf]
"""


@pytest.fixture(scope="module")
def server():
    """One server for the module, on one port, so a study's identity is the same in every run of a test."""
    with FakeOpenAIServer(model="builtin:tiny-llama", token_s=0.002) as running:
        yield running


def project(pytester: pytest.Pytester, url: str, watts: float = 200.0, study: str = STUDY, gpus: int = 1) -> None:
    studies.fake_gpus(pytester, [watts] * gpus)
    pytester.makefile(".yaml", study_serve=study.format(url=url))


def results(path: Path) -> list[dict]:
    return json.loads(path.read_text())["results"]


def test_serving_items_report_latencies_goodput_and_the_steady_state_energy(pytester, server) -> None:
    project(pytester, server.url)
    before, resets = len(server.bodies), server.resets
    run = pytester.runpytest("--llem-cycles=2", "--llem-json=out.json", "--llem-plots=plots", "-p", "no:cacheprovider")
    run.assert_outcomes(passed=4)
    assert server.resets - resets == 4  # after each item's warm-up, which the load repeats
    plots = {p.name for p in (pytester.path / "plots").iterdir()}
    for rate in ("40", "inf"):
        for latency in ("ttft_s.p90", "tpot_s.p90"):
            assert f"study_serve-rate-{rate}-steady_energy_per_output_token_j-vs-{latency}.png" in plots
    assert len(server.bodies) - before == 4 * (8 + 2)  # every item: its warm-up and its load
    for result in results(pytester.path / "out.json"):
        m = result["metrics"]
        assert (m["requests_sent"], m["requests_completed"], m["requests_failed"]) == (8, 8, 0)
        assert m["output_tokens"] == 8 * 4 and m["input_tokens"] > 0
        assert m["ttft_s"]["p90"] >= m["ttft_s"]["p50"] > 0 and m["tpot_s"]["n"] == 8 and m["e2el_s"]["n"] == 8
        assert m["goodput_rps"] == pytest.approx(m["request_throughput_rps"]) and m["slo_attainment"] == 1.0
        # a constant 200 W: the steady window's energy is 200 W x its length, read from the counter timeline
        assert m["steady_energy_j"] == pytest.approx(200.0 * m["steady_duration_s"], rel=1e-3, abs=2e-3)
        assert m["steady_energy_per_output_token_j"] == pytest.approx(m["steady_energy_j"] / m["steady_output_tokens"])
        assert m["energy_per_request_j"] == pytest.approx(m["energy_j"] / 8)
        rule = "first tokens" if result["config"]["serving"]["request_rate"] == "inf" else "last arrival"
        assert rule in m["steady_window"]
    text = run.stdout.str()
    assert "steady J/tok (95% CI)" in text and "TTFT p90 ms" in text
    assert "cheapest steady energy per token meeting the SLO, per request rate:" in text
    assert "  rate 40 req/s: vllm-40.0 costs the least meeting the SLO" in text
    assert "  rate inf: vllm-inf costs the least meeting the SLO" in text
    document = json.loads((pytester.path / "out.json").read_text())
    chosen = {c["request_rate"]: c["best"] for c in document["serving_choices"]["study_serve.yaml"]}
    assert chosen == {"40": "vllm-40.0", "inf": "vllm-inf"}


def test_k_selects_serving_items_by_their_rate_and_m_by_their_scenario(pytester, server) -> None:
    project(pytester, server.url)
    pytester.makefile(".yaml", study_offline="model: builtin:tiny-llama\nn: 1\nexperiments: [{id: offline}]\n")

    def selected(*args: str) -> list[str]:
        collected = pytester.runpytest("--co", "-q", "--llem-cycles=1", *args)
        return [line.split("::")[1] for line in collected.outlines if "::" in line]

    assert selected("-k", "inf") == ["vllm-inf[cycle1]"]
    assert selected("-m", "serving") == ["vllm-40.0[cycle1]", "vllm-inf[cycle1]"]
    assert selected("-m", "not serving") == ["offline[cycle1]"]
    assert selected("-k", "serving and not inf") == ["vllm-40.0[cycle1]"]


def test_the_gate_judges_serving_items_on_steady_energy_per_token(pytester, server) -> None:
    one_rate = STUDY.replace("[40, inf]", "[inf]")
    project(pytester, server.url, watts=100.0, study=one_rate)
    pytester.runpytest("--llem-cycles=3", "--llem-save=base").assert_outcomes(passed=3)
    project(pytester, server.url, watts=400.0, study=one_rate)  # the same load at 4x the power
    gated = pytester.runpytest("--llem-cycles=3", "--llem-compare=base", "-rf")
    gated.assert_outcomes(passed=3, failed=1)
    gated.stdout.fnmatch_lines(["vllm: steady_energy_per_output_token_j: regressed (the interval lies beyond +5%)*"])


def test_resume_replays_passed_serving_items_without_loading_the_server_again(pytester, server) -> None:
    project(pytester, server.url)
    pytester.runpytest("--llem-cycles=1").assert_outcomes(passed=2)
    before = len(server.bodies)
    resumed = pytester.runpytest("--llem-cycles=1", "--llem-resume")
    resumed.assert_outcomes(passed=2)
    assert len(server.bodies) == before
    assert "vllm-inf" in resumed.stdout.str()


def test_serving_items_run_under_xdist(pytester, server) -> None:
    project(pytester, server.url, gpus=2)  # one GPU per worker
    run = pytester.runpytest("-n", "2", "--llem-cycles=1", "--llem-json=out.json", "--junitxml=out.xml")
    run.assert_outcomes(passed=2)
    properties = {p.get("name") for p in ET.parse(pytester.path / "out.xml").iter("property")}
    assert {"steady_energy_per_output_token_j", "goodput_rps", "ttft_s.p90"} <= properties
    assert {r["experiment_id"] for r in results(pytester.path / "out.json")} == {"vllm-40.0", "vllm-inf"}
    assert "cheapest steady energy per token meeting the SLO" in run.stdout.str()


def test_a_server_failing_every_request_fails_its_item_in_one_line_and_the_others_run(pytester, server) -> None:
    with FakeOpenAIServer(model="builtin:tiny-llama", fail_every=1) as broken:
        broken_entry = f"experiments:\n  - {{{{id: broken, serving: {{{{url: {broken.url}, warmup_requests: 2}}}}}}}}\n"
        project(pytester, server.url, study=STUDY.replace("[40, inf]", "[inf]") + broken_entry)
        run = pytester.runpytest("--llem-cycles=1", "-rf")
    run.assert_outcomes(passed=1, failed=1)
    run.stdout.fnmatch_lines(["*broken*warmup failed: ServerError: 2 of 2 warm-up requests failed: HTTP 500*"])


def test_a_server_without_a_prefix_cache_reset_is_measured_with_a_warning(pytester) -> None:
    with FakeOpenAIServer(model="builtin:tiny-llama", prefix_cache_reset=False) as plain:
        project(pytester, plain.url, study=STUDY.replace("[40, inf]", "[inf]"))
        run = pytester.runpytest("--llem-cycles=1", "--llem-json=out.json")
    run.assert_outcomes(passed=1)
    (warning,) = [w for w in results(pytester.path / "out.json")[0]["metrics"]["measurement_warnings"] if "prefix" in w]
    assert warning.startswith("the server's prefix cache was not emptied after the warm-up (POST /reset_prefix_cache")


def test_an_unreachable_url_fails_at_the_server_phase(pytester) -> None:
    project(pytester, f"http://127.0.0.1:{free_port()}", study=STUDY.replace("[40, inf]", "[inf]"))
    run = pytester.runpytest("--llem-cycles=1", "-rf")
    run.assert_outcomes(failed=1)
    run.stdout.fnmatch_lines(["*server failed: ServerError: *did not answer as an OpenAI-compatible server does*"])
