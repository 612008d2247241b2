"""One experiment run for real on builtin:tiny-llama: token counts, the window, latencies, FLOPs, failures by phase."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from pytest_llem.backends.pytorch import PyTorchBackend, _Batch
from pytest_llem.config.models import ExperimentConfig
from pytest_llem.errors import PhaseError
from pytest_llem.runner.execute import run_experiment
from pytest_llem.workload.models import resolve_model
from pytest_llem.workload.prompts import synthetic_prompts


def experiment(**overrides: object) -> ExperimentConfig:
    fields: dict[str, object] = {
        "model": "builtin:tiny-llama",
        "precision": "fp32",
        "n": 6,
        "max_output_tokens": 5,
        "decoder": {"preset": "deterministic", "min_new_tokens": 5},
        "pytorch": {"batch_size": 4},
        "baseline": {"enabled": False},  # 30 s of idle per call where a GPU or RAPL is readable
    }
    fields.update(overrides)
    return ExperimentConfig.model_validate(fields, context={"platform": "cpu"})


@pytest.fixture(scope="module")
def tiny(llem_cache_dir: Path) -> tuple[object, object]:
    location = resolve_model("builtin:tiny-llama", cache_dir=llem_cache_dir).location
    return AutoTokenizer.from_pretrained(location), AutoModelForCausalLM.from_pretrained(location)


def test_token_counts_are_real_tokens_without_padding(tiny, tmp_path: Path) -> None:
    tokenizer, _ = tiny
    prompts = [
        "short one",
        "a somewhat longer prompt with more words in it",
        "mid length prompt here",
        "x",
        "energy per token matters",
        "the last prompt of the set",
    ]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    config = experiment(dataset=str(tmp_path / "p.jsonl"), chat_template="none")
    metrics = run_experiment(config)
    expected_input = sum(len(tokenizer(p)["input_ids"]) for p in prompts)
    assert metrics.input_tokens == expected_input
    assert metrics.output_tokens == 6 * 5
    assert metrics.tokens_per_s == pytest.approx(metrics.output_tokens / metrics.duration_s)


@pytest.mark.parametrize("chat_template", ["none", "auto"])
def test_inputs_are_truncated_to_max_input_tokens(chat_template: str) -> None:
    metrics = run_experiment(experiment(max_input_tokens=20, dataset={"input_len": 50}, chat_template=chat_template))
    assert metrics.input_tokens == 6 * 20  # through the template: the user's text is cut so that the whole fits


def test_latencies_come_from_every_decoding_step() -> None:
    metrics = run_experiment(experiment())
    assert metrics.ttft_s is not None and metrics.itl_s is not None
    assert metrics.ttft_s.n == 6  # one first token per sequence
    assert metrics.itl_s.n == 6 * (5 - 1)  # every gap between a sequence's tokens
    assert 0 < metrics.itl_s.p50 <= metrics.itl_s.p95
    assert metrics.ttft_s.mean < metrics.duration_s


def test_one_output_token_has_no_inter_token_latency_and_says_why() -> None:
    metrics = run_experiment(experiment(max_output_tokens=1, decoder={"preset": "deterministic"}))
    assert metrics.itl_s is None
    assert metrics.unavailable["itl_s"] == "no sequence produced more than one token"


class TimedBackend(PyTorchBackend):
    """The real backend, noting how long its generate call took."""

    def generate(self, prepared):
        started = time.perf_counter()
        try:
            return super().generate(prepared)
        finally:
            self.generate_s = time.perf_counter() - started


def test_window_excludes_load_and_warmup() -> None:
    backend = TimedBackend()
    config = experiment(warmup={"n_warmup": 3, "thermal_floor_seconds": 0.5})
    metrics = run_experiment(config, backend_factory=lambda _name: backend)
    assert metrics.load_s > 0 and metrics.warmup_s >= 0.5  # the warmup's batches, then its 0.5 s thermal floor
    # The window is the generate call, however long this machine takes for it; nothing of the warmup, whose thermal
    # floor alone is 0.5 s.
    assert backend.generate_s <= metrics.duration_s < backend.generate_s + 0.5


def test_greedy_generation_is_deterministic_across_runs() -> None:
    first = run_experiment(experiment())
    second = run_experiment(experiment())
    assert first.sample_output and first.sample_output == second.sample_output


def test_flops_estimate_is_two_times_non_embedding_params_times_tokens(tiny) -> None:
    _, model = tiny
    params = sum(p.numel() for name, p in model.named_parameters() if "embed" not in name)
    metrics = run_experiment(experiment())
    assert metrics.flops_estimate == 2 * params * (metrics.input_tokens + metrics.output_tokens)


def test_peak_memory_is_the_process_rss_on_cpu() -> None:
    metrics = run_experiment(experiment())
    assert metrics.peak_memory_mb is not None and metrics.peak_memory_mb > 50
    assert metrics.peak_memory_source == "peak RSS of the process during the window (VmHWM)"  # the reset worked


def test_output_is_counted_up_to_the_first_eos(tiny) -> None:
    tokenizer, _ = tiny
    backend = PyTorchBackend()
    backend._eos_ids = {tokenizer.eos_token_id}
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    prompt = torch.tensor([[pad, 11, 12], [13, 14, 15]])
    generated = torch.tensor([[21, eos, pad, pad], [22, 23, 24, 25]])
    batch = _Batch(encoding={"input_ids": prompt}, input_tokens=5)
    from pytest_llem.backends.base import GenerationResult

    result = GenerationResult(input_tokens=0, output_tokens=0)
    backend._account(result, batch, torch.cat([prompt, generated], dim=1), start=0.0, steps=[1.0, 1.5, 2.5, 3.0])
    assert result.input_tokens == 5
    assert result.output_tokens == 2 + 4  # EOS itself counts; the padding after it does not
    assert result.ttft_s == [1.0, 1.0]
    assert result.itl_s == [0.5, 0.5, 1.0, 0.5]


def test_synthetic_prompts_are_seeded() -> None:
    assert synthetic_prompts(3, 16, seed=1) == synthetic_prompts(3, 16, seed=1)
    assert synthetic_prompts(3, 16, seed=1) != synthetic_prompts(3, 16, seed=2)


@pytest.mark.parametrize(
    ("overrides", "phase", "message"),
    [
        ({"model": "/nonexistent/model"}, "model", "does not exist"),
        ({"dataset": "/nonexistent/prompts.jsonl"}, "prompts", "dataset file not found"),
        ({"passthrough_kwargs": {"no_such_option_for_llama": 1}}, "load", "no_such_option_for_llama"),
    ],
)
def test_a_failure_names_its_phase(overrides: dict[str, object], phase: str, message: str) -> None:
    with pytest.raises(PhaseError) as caught:
        run_experiment(experiment(**overrides))
    assert caught.value.phase == phase
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("precision", "dtype"), [("fp32", torch.float32), ("fp16", torch.float16), ("bf16", torch.bfloat16)]
)
def test_precision_decides_the_dtype_of_the_loaded_model(precision: str, dtype: torch.dtype, llem_cache_dir) -> None:
    backend = PyTorchBackend()
    config = experiment(precision=precision)
    backend.load(config, resolve_model(config.model, cache_dir=llem_cache_dir))
    assert backend.model.dtype == dtype
    assert backend.model.device.type == "cpu"


def test_sampling_settings_reach_generate_and_greedy_drops_them() -> None:
    backend = PyTorchBackend()
    backend.tokenizer = type("Tok", (), {"pad_token_id": 0})()
    backend.config = experiment(decoder={"preset": "creative", "top_k": 7}, pytorch={"batch_size": 2, "num_beams": 2})
    sampled = backend._generate_kwargs()
    assert (sampled["do_sample"], sampled["temperature"], sampled["top_p"], sampled["top_k"]) == (True, 0.8, 0.9, 7)
    assert sampled["repetition_penalty"] == 1.1 and sampled["num_beams"] == 2
    backend.config = experiment()
    greedy = backend._generate_kwargs()
    assert greedy["do_sample"] is False and greedy["temperature"] is None and greedy["min_new_tokens"] == 5
