"""P6 — vLLM throughput: tokens/s of a pytest-llem vLLM item vs the same ``vllm.LLM.generate`` in a bare script.

Same model (builtin:smollm2-135m, fp32), same prompts (synthetic, n=8, 48 words, seed 42, truncated to 64 tokens),
32 new tokens per sequence (min_tokens=32, greedy), one warm-up ``generate``, then ``reset_prefix_cache()``. Both
sides build ``vllm.LLM`` from the same config dict, with pytest-llem's own ``engine_kwargs`` / ``sampling_options``
(so the engine and the sampling settings are identical by construction): eager, vLLM's own process layout (on CPUs
an engine-core and a worker process), a 256 MiB KV cache (``vllm.engine.kv_cache_memory_bytes``). One difference, on
purpose: B keeps vLLM's offline default ``disable_log_stats=True``, while the plugin turns statistics on to read
per-request TTFT; their cost is part of what the ratio measures.

(A) ``pytest --llem-cycles=1 --llem-json=out.json`` on a one-experiment study in a temp folder (isolation: process,
    the default); the figure is the item's ``metrics.tokens_per_s`` in the JSON's ``results``.
(B) this file run as ``--bare``: vllm and nothing of pytest, timing the one ``llm.generate`` call.

Each A and B is a fresh subprocess with the same environment; they are interleaved (A, B, B, A, ...) and the figure
is median(A) / median(B). One ``VLLM_CACHE_ROOT`` inside the temp folder serves every run (the first engine built
with an empty cache takes ~17 s, later ones ~3 s; outside the window either way).

    python perf/p6_vllm.py [--reps 5]

Exit status 0 whether or not the goal is met; 2 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MODEL_SPEC = "builtin:smollm2-135m"
N_PROMPTS = 8
INPUT_LEN = 48  # words per synthetic prompt
MAX_INPUT_TOKENS = 64
NEW_TOKENS = 32
KV_CACHE_BYTES = 256 * 2**20
GOAL = 0.97  # A/B tokens per second, at least
EXPECTED_TOKENS = N_PROMPTS * NEW_TOKENS

# The one experiment, as the study file says it and as the bare script validates it.
EXPERIMENT: dict[str, Any] = {
    "model": MODEL_SPEC,
    "backend": "vllm",
    "precision": "fp32",
    "n": N_PROMPTS,
    "dataset": {"input_len": INPUT_LEN},
    "max_input_tokens": MAX_INPUT_TOKENS,
    "max_output_tokens": NEW_TOKENS,
    "decoder": {"preset": "deterministic", "min_new_tokens": NEW_TOKENS},
    "warmup": {"enabled": True, "n_warmup": 1},
    "baseline": {"enabled": False},
    "vllm": {"engine": {"kv_cache_memory_bytes": KV_CACHE_BYTES}},
}


def fail(message: str) -> None:
    print(f"CHECK FAILED: {message}", flush=True)
    raise SystemExit(2)


def environment(cache_root: Path) -> dict[str, str]:
    """What A and B both run with: vLLM's default process layout, the KV cache sized by the engine option only."""
    env = dict(os.environ)
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
    env.pop("VLLM_CPU_KVCACHE_SPACE", None)  # would compete with kv_cache_memory_bytes
    env["VLLM_CACHE_ROOT"] = str(cache_root)
    return env


# ------------------------------------------------------------------------------------------------------ (B) bare


def bare(location: str) -> dict[str, Any]:
    """Build the engine, warm up as the backend does, then time the one generate call.

    Imports pytest_llem only for the config model, the prompts and the two functions that turn the config into
    ``LLM`` / ``SamplingParams`` arguments (the same ones the backend calls).
    """
    from vllm import LLM, SamplingParams

    from pytest_llem.backends.vllm import engine_kwargs, sampling_options
    from pytest_llem.config.models import ExperimentConfig
    from pytest_llem.config.platform import detect_platform
    from pytest_llem.workload.build import build_workload

    config = ExperimentConfig.model_validate(EXPERIMENT)
    kwargs = engine_kwargs(config, location, detect_platform())
    del kwargs["disable_log_stats"]  # a bare script keeps vLLM's default (statistics off)
    llm = LLM(**kwargs)
    sampling = SamplingParams(**sampling_options(config))

    tokenizer = llm.get_tokenizer()
    workload = build_workload(config, tokenizer)  # the prompts the plugin sends (its chat template applied)
    encoded = tokenizer(
        workload.prompts,
        truncation=True,
        max_length=config.max_input_tokens,
        add_special_tokens=not workload.templated,
    )
    prepared: list[Any] = [{"prompt_token_ids": list(ids)} for ids in encoded["input_ids"]]

    size = llm.llm_engine.vllm_config.scheduler_config.max_num_seqs  # the backend's warm-up batches, exactly
    for i in range(config.warmup.n_warmup):
        first = (i * size) % len(prepared)
        llm.generate(prepared[first : first + size], sampling, use_tqdm=False)
    llm.reset_prefix_cache()

    start = time.perf_counter()
    outputs = llm.generate(prepared, sampling, use_tqdm=False)
    seconds = time.perf_counter() - start

    tokens = sum(len(c.token_ids) for out in outputs for c in out.outputs)
    return {
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
        "input_tokens": sum(len(out.prompt_token_ids or ()) for out in outputs),
        "engine_kwargs": kwargs,
    }


def run_bare(location: str, env: dict[str, str]) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--bare", location]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("BARE ")]
    if proc.returncode != 0 or len(lines) != 1:
        fail(f"bare run exit {proc.returncode}:\n{(proc.stdout + proc.stderr)[-3000:]}")
    record = json.loads(lines[0][5:])
    if record["tokens"] != EXPECTED_TOKENS:
        fail(f"bare run produced {record['tokens']} tokens, expected {EXPECTED_TOKENS}")
    return record


# ---------------------------------------------------------------------------------------------------- (A) plugin


def run_plugin(folder: Path, env: dict[str, str]) -> dict[str, Any]:
    out = folder / "out.json"
    out.unlink(missing_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--llem-cycles=1",
        f"--llem-json={out.name}",
        "study_p6.yaml",
    ]
    proc = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, env=env, check=False)
    document = json.loads(out.read_text(encoding="utf-8")) if out.exists() else {}
    results = document.get("results", [])
    if proc.returncode != 0 or len(results) != 1 or document.get("failed_results"):
        fail(
            f"plugin run exit {proc.returncode}, {len(results)} result(s), "
            f"{len(document.get('failed_results', []))} failed result(s):\n{(proc.stdout + proc.stderr)[-3000:]}"
        )
    metrics = results[0]["metrics"]
    if metrics["output_tokens"] != EXPECTED_TOKENS:
        fail(f"plugin item produced {metrics['output_tokens']} tokens, expected {EXPECTED_TOKENS}")
    return {
        "tokens": metrics["output_tokens"],
        "seconds": metrics["duration_s"],
        "tokens_per_s": metrics["tokens_per_s"],
        "input_tokens": metrics["input_tokens"],
    }


# ------------------------------------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5, help="runs of each of A and B (default 5)")
    parser.add_argument("--bare", metavar="MODEL_DIR", help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args()

    if args.bare:
        print("BARE " + json.dumps(bare(args.bare)), flush=True)
        return

    import yaml

    from pytest_llem.workload.models import resolve_model

    started = time.perf_counter()
    location = resolve_model(MODEL_SPEC).location  # builds the model once (~40 s), later a folder check
    print(f"P6 vLLM throughput: {MODEL_SPEC} at {location} (resolved in {time.perf_counter() - started:.1f} s)")
    print(
        f"fp32, n={N_PROMPTS}, {NEW_TOKENS} new tokens/sequence (greedy, min_tokens), synthetic prompts "
        f"input_len={INPUT_LEN} truncated at {MAX_INPUT_TOKENS} tokens, 1 warm-up generate, KV cache "
        f"{KV_CACHE_BYTES // 2**20} MiB; vLLM's default processes; "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')} for both; {os.cpu_count()} CPUs; "
        f"{args.reps} interleaved runs each"
    )

    with tempfile.TemporaryDirectory(prefix="llem-p6-") as tmp:
        folder = Path(tmp)
        env = environment(folder / "vllm-cache")
        (folder / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
        (folder / "study_p6.yaml").write_text(yaml.safe_dump(EXPERIMENT, sort_keys=False), encoding="utf-8")

        runs: dict[str, list[dict[str, Any]]] = {"A": [], "B": []}
        for rep in range(args.reps):
            order = ("A", "B") if rep % 2 == 0 else ("B", "A")  # A B B A A B ...: neither always goes first
            for key in order:
                wall = time.perf_counter()
                record = run_plugin(folder, env) if key == "A" else run_bare(location, env)
                record["wall_s"] = time.perf_counter() - wall
                runs[key].append(record)
            a, b = runs["A"][-1], runs["B"][-1]
            print(
                f"  rep {rep + 1}: A {a['tokens_per_s']:6.1f} tok/s ({a['seconds']:.2f} s window, {a['wall_s']:.0f} s "
                f"process)  B {b['tokens_per_s']:6.1f} tok/s ({b['seconds']:.2f} s, {b['wall_s']:.0f} s)  "
                f"A/B {a['tokens_per_s'] / b['tokens_per_s']:.3f}",
                flush=True,
            )

        for key in ("A", "B"):
            first = runs[key][0]
            if any(r["input_tokens"] != first["input_tokens"] for r in runs[key]):
                fail(f"{key}: input token counts differ between runs")
        if runs["A"][0]["input_tokens"] != runs["B"][0]["input_tokens"]:
            fail(f"input tokens differ: plugin {runs['A'][0]['input_tokens']}, bare {runs['B'][0]['input_tokens']}")

        med = {key: statistics.median(r["tokens_per_s"] for r in runs[key]) for key in runs}
        ratio = med["A"] / med["B"]
        pairs = [a["tokens_per_s"] / b["tokens_per_s"] for a, b in zip(runs["A"], runs["B"], strict=True)]
        print(f"checks: {EXPECTED_TOKENS} output tokens and {runs['A'][0]['input_tokens']} input tokens in every run")
        bare_kwargs = json.dumps(runs["B"][0]["engine_kwargs"], sort_keys=True)
        print(f"engine kwargs (B; A adds disable_log_stats=false): {bare_kwargs}")
        print("raw tokens/s:")
        for key, label in (("A", "plugin"), ("B", "bare")):
            print(f"  {key} {label:6}: " + " ".join(f"{r['tokens_per_s']:.1f}" for r in runs[key]))
        print("raw windows (s):")
        for key, label in (("A", "plugin"), ("B", "bare")):
            print(f"  {key} {label:6}: " + " ".join(f"{r['seconds']:.3f}" for r in runs[key]))
        print(f"median: A (plugin item) {med['A']:.1f} tok/s, B (bare script) {med['B']:.1f} tok/s")
        print(f"per-pair A/B: {' '.join(f'{r:.3f}' for r in pairs)} (median {statistics.median(pairs):.3f})")
        met = ratio >= GOAL
    print(f"RESULT: {ratio:.3f}x (goal >= {GOAL}x: {'met' if met else 'MISSED'})")


if __name__ == "__main__":
    main()
