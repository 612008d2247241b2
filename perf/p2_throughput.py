"""P2 — throughput: tokens/s of a pytest-llem item vs the same ``generate`` loop in a bare script.

Same model (builtin:smollm2-135m, fp32), same prompts (synthetic, n=8, 64 words, seed 42, truncated to 512 tokens),
batch size 4, 32 new tokens per sequence (min_new_tokens=32, greedy), one warm-up batch, the same thread count, and
both generate under ``torch.inference_mode()`` (under ``no_grad`` the same loop costs ~5% more CPU here).

(A) ``pytest --llem-cycles=1`` on a one-experiment study in a temp folder; a conftest there appends the item's
    ``llem_result`` user property (the JSON ItemResult) to a file; its ``metrics.tokens_per_s`` is the figure. The
    item runs in its own child process (isolation: process): the conftest notes that process's torch thread count.
(B) this file run as ``--bare``: transformers only, timing the loop of ``model.generate`` over the batches.

Each A and B is a fresh subprocess (same environment, so the same OMP/torch thread count); they are interleaved
(A, B, B, A, ...) and the figure is median(A) / median(B).

    python perf/p2_throughput.py [--reps 4] [--threads N] [--explain | --no-explain]

``--explain`` (automatic when the goal is missed) adds bare variants that each add one thing the plugin does
(the per-step StoppingCriteria clock, the plugin's extra generate kwargs, its backend object), and B under
``no_grad``, to say where a gap comes from. Exit status 0 whether or not the goal is met; 2 when a check fails.
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
BATCH_SIZE = 4
NEW_TOKENS = 32
GOAL = 0.97  # A/B tokens per second, at least
# What the plugin uses when the study leaves them out; checked against the package's own defaults in --bare.
INPUT_LEN = 64
SEED = 42
MAX_INPUT_TOKENS = 512
EXPECTED_TOKENS = N_PROMPTS * NEW_TOKENS

STUDY = f"""\
model: {MODEL_SPEC}
backend: pytorch
precision: fp32
n: {N_PROMPTS}
max_output_tokens: {NEW_TOKENS}
decoder: {{preset: deterministic, min_new_tokens: {NEW_TOKENS}}}
pytorch: {{batch_size: {BATCH_SIZE}}}
"""

CONFTEST = '''\
"""Writes each item's llem_result (the JSON ItemResult pytest-llem stores in user_properties) to $LLEM_P2_OUT, with
the torch thread count of the process that ran the item's work: its isolated child, which notes the count in
$LLEM_P2_OUT.threads first thing (a result does not carry it), or pytest itself under isolation: none."""

import json
import os
import sys


def note_threads():
    import torch

    with open(os.environ["LLEM_P2_OUT"] + ".threads", "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"pid": os.getpid(), "threads": torch.get_num_threads()}) + "\\n")


def pytest_llem_child_setup():
    return [note_threads]


def threads():
    try:
        with open(os.environ["LLEM_P2_OUT"] + ".threads", encoding="utf-8") as handle:
            noted = [json.loads(line) for line in handle]
    except FileNotFoundError:  # isolation: none, the work ran here
        torch = sys.modules.get("torch")
        return torch.get_num_threads() if torch is not None else None
    return noted[-1]["threads"] if noted else None


def pytest_runtest_logreport(report):
    if report.when != "call":
        return
    properties = dict(report.user_properties)
    record = {
        "nodeid": report.nodeid,
        "outcome": report.outcome,
        "result": properties.get("llem_result"),
        "threads": threads(),
        "error": None if report.passed else str(report.longrepr)[-2000:],
    }
    with open(os.environ["LLEM_P2_OUT"], "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\\n")
'''

# Bare variants: B ("plain"), each thing the plugin adds on top of it, and B under no_grad instead of inference_mode.
VARIANTS = {
    "plain": "model.generate(**batch, max_new_tokens, min_new_tokens, do_sample=False, pad_token_id) in "
    "torch.inference_mode(), as the plugin runs it (this is B)",
    "no_grad": "plain under torch.no_grad() instead (what B was until it was found ~5% slower than the plugin's loop)",
    "stepclock": "plain + the plugin's StoppingCriteria step clock (backends/pytorch.py _step_clock_class)",
    "plugin_kwargs": "stepclock + the plugin's other kwargs (repetition_penalty=1.0, temperature/top_k/top_p=None)",
    "backend": "pytest-llem's PyTorchBackend load/prepare/warmup/generate, called directly (no pytest)",
}


def fail(message: str) -> None:
    print(f"CHECK FAILED: {message}", flush=True)
    raise SystemExit(2)


# ------------------------------------------------------------------------------------------------------ (B) bare


def bare(location: str, variants: list[str], rounds: int) -> list[dict[str, Any]]:
    """Load, warm up on one batch, then time the generate loop once per variant per round (interleaved).

    Imports pytest_llem only for the prompts and the defaults (and, for the ``backend`` variant, its backend).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, StoppingCriteria, StoppingCriteriaList

    from pytest_llem.config.models import DatasetConfig, ExperimentConfig
    from pytest_llem.workload.prompts import synthetic_prompts

    fields = ExperimentConfig.model_fields
    defaults = (
        DatasetConfig().input_len,
        DatasetConfig().seed,
        fields["random_seed"].default,
        fields["max_input_tokens"].default,
    )
    if defaults != (INPUT_LEN, None, SEED, MAX_INPUT_TOKENS):  # the plugin's defaults moved: follow them
        fail(f"plugin defaults (input_len, dataset seed, random_seed, max_input_tokens) are now {defaults}")

    tokenizer = AutoTokenizer.from_pretrained(location)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(location, dtype=torch.float32)
    model.eval()
    eos = model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos])

    prompts = synthetic_prompts(N_PROMPTS, INPUT_LEN, SEED)
    batches = [
        tokenizer(
            prompts[i : i + BATCH_SIZE], return_tensors="pt", padding=True, truncation=True, max_length=MAX_INPUT_TOKENS
        )
        for i in range(0, len(prompts), BATCH_SIZE)
    ]
    input_tokens = int(sum(int(b["attention_mask"].sum()) for b in batches))
    plain: dict[str, Any] = {
        "max_new_tokens": NEW_TOKENS,
        "min_new_tokens": NEW_TOKENS,
        "do_sample": False,
        "pad_token_id": tokenizer.pad_token_id,
    }
    plugin_kwargs = {**plain, "repetition_penalty": 1.0, "temperature": None, "top_k": None, "top_p": None}

    class StepClock(StoppingCriteria):  # the same criterion as pytest_llem.backends.pytorch._step_clock_class
        def __init__(self) -> None:
            self.times: list[float] = []

        def __call__(self, input_ids: Any, scores: Any, **_: Any) -> Any:
            self.times.append(time.perf_counter())
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    def count(outputs: list[Any]) -> int:
        tokens = 0
        for batch, output in zip(batches, outputs, strict=True):
            for row in output[:, batch["input_ids"].shape[1] :].tolist():
                tokens += next((i + 1 for i, token in enumerate(row) if token in eos_ids), len(row))
        return tokens

    def loop(variant: str) -> tuple[int, float]:
        kwargs = plugin_kwargs if variant == "plugin_kwargs" else plain
        clocked = variant in ("stepclock", "plugin_kwargs")
        context = torch.no_grad if variant == "no_grad" else torch.inference_mode  # the plugin's, for B too
        with context():
            outputs = []
            start = time.perf_counter()
            for batch in batches:
                extra = {"stopping_criteria": StoppingCriteriaList([StepClock()])} if clocked else {}
                outputs.append(model.generate(**batch, **kwargs, **extra))
            seconds = time.perf_counter() - start
        return count(outputs), seconds

    backend: Any = None
    if "backend" in variants:  # pytest-llem's own backend object, driven directly, outside pytest
        from pytest_llem.backends.pytorch import PyTorchBackend
        from pytest_llem.workload.models import ResolvedModel

        config = ExperimentConfig.model_validate(
            {
                "model": MODEL_SPEC,
                "backend": "pytorch",
                "precision": "fp32",
                "n": N_PROMPTS,
                "max_output_tokens": NEW_TOKENS,
                "decoder": {"preset": "deterministic", "min_new_tokens": NEW_TOKENS},
                "pytorch": {"batch_size": BATCH_SIZE},
            }
        )
        backend = PyTorchBackend()
        backend.load(config, ResolvedModel(spec=MODEL_SPEC, location=location, kind="builtin"))
        prepared = backend.prepare(prompts)
        backend.warmup(prepared, 1)

    def window(variant: str) -> tuple[int, float]:
        if variant != "backend":
            return loop(variant)
        start = time.perf_counter()
        generated = backend.generate(prepared)
        seconds = time.perf_counter() - start
        return backend.count(generated).output_tokens, seconds

    with torch.inference_mode():
        model.generate(**batches[0], **plain)  # warm-up, untimed
    records = []
    for round_ in range(rounds):
        for variant in variants if round_ % 2 == 0 else list(reversed(variants)):
            tokens, seconds = window(variant)
            records.append(
                {
                    "variant": variant,
                    "tokens": tokens,
                    "seconds": seconds,
                    "tokens_per_s": tokens / seconds,
                    "input_tokens": input_tokens,
                    "threads": torch.get_num_threads(),
                }
            )
    return records


def run_bare(
    location: str, env: dict[str, str], variants: tuple[str, ...] = ("plain",), rounds: int = 1
) -> list[dict[str, Any]]:
    cmd = [sys.executable, __file__, "--bare", location, "--variants", ",".join(variants), "--rounds", str(rounds)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("BARE ")]
    if proc.returncode != 0 or len(lines) != len(variants) * rounds:
        fail(f"bare run ({','.join(variants)}) exit {proc.returncode}:\n{(proc.stdout + proc.stderr)[-3000:]}")
    records = [json.loads(line[5:]) for line in lines]
    for record in records:
        if record["tokens"] != EXPECTED_TOKENS:
            fail(f"bare run ({record['variant']}) produced {record['tokens']} tokens, expected {EXPECTED_TOKENS}")
    return records


# ---------------------------------------------------------------------------------------------------- (A) plugin


def run_plugin(folder: Path, env: dict[str, str]) -> dict[str, Any]:
    out = folder / "results.jsonl"
    out.unlink(missing_ok=True)
    Path(f"{out}.threads").unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--llem-cycles=1", "study_p2.yaml"]
    proc = subprocess.run(
        cmd, cwd=folder, capture_output=True, text=True, env={**env, "LLEM_P2_OUT": str(out)}, check=False
    )
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()] if out.exists() else []
    if proc.returncode != 0 or len(records) != 1 or records[0]["outcome"] != "passed" or not records[0]["result"]:
        detail = records[0]["error"] if records and records[0]["error"] else ""
        fail(
            f"plugin run exit {proc.returncode}, {len(records)} item report(s):\n{detail}\n"
            f"{(proc.stdout + proc.stderr)[-3000:]}"
        )
    result = json.loads(records[0]["result"])
    metrics = result["metrics"]
    if metrics["output_tokens"] != EXPECTED_TOKENS:
        fail(f"plugin item produced {metrics['output_tokens']} tokens, expected {EXPECTED_TOKENS}")
    return {
        "tokens": metrics["output_tokens"],
        "seconds": metrics["duration_s"],
        "tokens_per_s": metrics["tokens_per_s"],
        "input_tokens": metrics["input_tokens"],
        "threads": records[0]["threads"],
    }


# ------------------------------------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=4, help="runs of each of A and B (default 4)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="OMP_NUM_THREADS for both A and B (default 1; 0 leaves the environment as it is). "
        "On a shared 2-core machine the torch default (one thread per core) stalls badly",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--explain", action="store_true", help="also run the bare variants, even if the goal is met")
    group.add_argument("--no-explain", action="store_true", help="never run the bare variants")
    parser.add_argument("--bare", metavar="MODEL_DIR", help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--variants", default="plain", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.bare:
        variants = args.variants.split(",")
        unknown = set(variants) - set(VARIANTS)
        if unknown:
            parser.error(f"unknown variants {sorted(unknown)}")
        for record in bare(args.bare, variants, args.rounds):
            print("BARE " + json.dumps(record), flush=True)
        return

    from pytest_llem.workload.models import resolve_model

    started = time.perf_counter()
    location = resolve_model(MODEL_SPEC).location  # builds the model once (~40 s), later a folder check
    print(f"P2 throughput: {MODEL_SPEC} at {location} (resolved in {time.perf_counter() - started:.1f} s)")
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    print(
        f"fp32, n={N_PROMPTS}, batch {BATCH_SIZE}, {NEW_TOKENS} new tokens/sequence (greedy, min_new_tokens), "
        f"synthetic prompts input_len={INPUT_LEN} seed={SEED}; OMP_NUM_THREADS={env.get('OMP_NUM_THREADS', 'unset')} "
        f"for both; {os.cpu_count()} CPUs; {args.reps} interleaved runs each"
    )

    with tempfile.TemporaryDirectory(prefix="llem-p2-") as tmp:
        folder = Path(tmp)
        (folder / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
        (folder / "conftest.py").write_text(CONFTEST, encoding="utf-8")
        (folder / "study_p2.yaml").write_text(STUDY, encoding="utf-8")

        runs: dict[str, list[dict[str, Any]]] = {"A": [], "B": []}
        for rep in range(args.reps):
            order = ("A", "B") if rep % 2 == 0 else ("B", "A")  # A B B A A B ...: neither always goes first
            for key in order:
                wall = time.perf_counter()
                record = run_plugin(folder, env) if key == "A" else run_bare(location, env)[0]
                record["wall_s"] = time.perf_counter() - wall
                runs[key].append(record)
            a, b = runs["A"][-1], runs["B"][-1]
            print(
                f"  rep {rep + 1}: A {a['tokens_per_s']:6.1f} tok/s ({a['seconds']:.2f} s window, {a['wall_s']:.0f} s "
                f"process)  B {b['tokens_per_s']:6.1f} tok/s ({b['seconds']:.2f} s, {b['wall_s']:.0f} s)  "
                f"A/B {a['tokens_per_s'] / b['tokens_per_s']:.3f}"
            )

        for key in ("A", "B"):
            first = runs[key][0]
            if any(r["input_tokens"] != first["input_tokens"] for r in runs[key]):
                fail(f"{key}: input token counts differ between runs")
        if runs["A"][0]["input_tokens"] != runs["B"][0]["input_tokens"]:
            fail(f"input tokens differ: plugin {runs['A'][0]['input_tokens']}, bare {runs['B'][0]['input_tokens']}")
        threads = {key: sorted({r["threads"] for r in runs[key]}) for key in runs}
        if threads["A"] != threads["B"]:
            fail(f"thread counts differ: plugin {threads['A']}, bare {threads['B']}")

        med = {key: statistics.median(r["tokens_per_s"] for r in runs[key]) for key in runs}
        ratio = med["A"] / med["B"]
        pairs = [a["tokens_per_s"] / b["tokens_per_s"] for a, b in zip(runs["A"], runs["B"], strict=True)]
        print(
            f"checks: {EXPECTED_TOKENS} output tokens and {runs['A'][0]['input_tokens']} input tokens in every run; "
            f"torch threads {threads['A']} in both"
        )
        print("raw tokens/s:")
        for key, label in (("A", "plugin"), ("B", "bare")):
            print(f"  {key} {label:6}: " + " ".join(f"{r['tokens_per_s']:.1f}" for r in runs[key]))
        print(f"median: A (plugin item) {med['A']:.1f} tok/s, B (bare script) {med['B']:.1f} tok/s")
        print(f"per-pair A/B: {' '.join(f'{r:.3f}' for r in pairs)} (median {statistics.median(pairs):.3f})")
        met = ratio >= GOAL
        if args.explain or (not met and not args.no_explain):
            explain(location, env, rounds=2)
    print(f"RESULT: {ratio:.3f}x (goal >= {GOAL}x: {'met' if met else 'MISSED'})")


def explain(location: str, env: dict[str, str], rounds: int) -> None:
    """All bare variants in one process, interleaved per round: each one's median relative to the plain loop."""
    print(f"\nexplain: bare variants in one process (one load, one warm-up), {rounds} interleaved rounds")
    for name, text in VARIANTS.items():
        print(f"  {name:15} {text}")
    names = tuple(VARIANTS)
    results: dict[str, list[float]] = {name: [] for name in names}
    for record in run_bare(location, env, names, rounds):
        results[record["variant"]].append(record["tokens_per_s"])
    plain = statistics.median(results["plain"])
    for name in names:
        value = statistics.median(results[name])
        print(
            f"  {name:15} median {value:6.1f} tok/s  ({value / plain:.3f}x plain)  raw "
            + " ".join(f"{v:.1f}" for v in results[name])
        )


if __name__ == "__main__":
    main()
