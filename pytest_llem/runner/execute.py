"""Run one experiment: resolve the model, make prompts, measure idle power, load, warm up, then measure the window
(generate only) with the meter."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..backends import get_backend
from ..backends.base import Backend
from ..config.models import ExperimentConfig
from ..energy.baseline import IdleBaselines
from ..energy.meter import Meter
from ..results.schema import EnergyMetrics, LatencyStats, Metrics
from .phases import measure_prefill, split_phases
from .preparation import idle_unavailable, item_meter, phase, prepare

BackendFactory = Callable[[str], Backend]


def run_experiment(
    config: ExperimentConfig,
    *,
    study_dir: Path | None = None,
    cache_dir: Path | None = None,
    backend_factory: BackendFactory = get_backend,
    meter: Meter | None = None,
    idle_baselines: IdleBaselines | None = None,
) -> Metrics:
    """Run ``config`` once and measure it. Raises PhaseError naming the phase that failed.

    ``meter`` defaults to the one ``config.energy`` asks for; ``idle_baselines`` (a session's cache) to a fresh one.
    """
    with phase("backend"):  # an unavailable backend fails before any model is built
        backend = backend_factory(config.backend)
    meter = item_meter(config, meter)
    ready = prepare(config, meter, study_dir=study_dir, cache_dir=cache_dir, idle_baselines=idle_baselines)
    model, workload, idle = ready.model, ready.workload, ready.idle
    try:
        started = time.perf_counter()
        with phase("load"):
            backend.load(config, model)
            prepared = backend.prepare(workload)
        loaded = time.perf_counter()
        with phase("warmup"):
            if config.warmup.enabled:
                backend.warmup(prepared, config.warmup.n_warmup)
                backend.synchronize()
                time.sleep(config.warmup.thermal_floor_seconds)
        warmed = time.perf_counter()
        with phase("generate"):
            backend.reset_peak_memory()
            backend.synchronize()
            meter.begin("generate")
            try:
                generated = backend.generate(prepared)
                backend.synchronize()
            except BaseException:
                meter.cancel("generate")
                raise
            reading = meter.end("generate")
            memory = backend.peak_memory()
            generation = backend.count(generated)
        prefill = None
        if config.phases:
            with phase("prefill"):  # after the generate window, on the same loaded engine
                prefill = measure_prefill(backend, prepared, meter)
    finally:
        backend.close()

    unavailable = dict(generation.unavailable) | reading.unavailable
    phases: dict[str, Any] = {}
    if prefill is not None:
        sequences = config.n * _completions_per_prompt(config)
        phases, unclear = split_phases(
            reading, prefill, generation.input_tokens, generation.output_tokens, first_tokens=sequences
        )
        unavailable |= unclear
    if memory.mb is None:
        unavailable["peak_memory_mb"] = memory.source
    if not generation.ttft_s:
        unavailable.setdefault("ttft_s", "no sequence produced a token")
    itl = LatencyStats.of(generation.itl_s)
    if itl is None and generation.itl_mean_s is not None:
        itl = LatencyStats.mean_only(generation.itl_mean_s, generation.itl_count)
    if itl is None:
        unavailable.setdefault("itl_s", "no sequence produced more than one token")
    idle_unknown = idle_unavailable(config, idle)
    if idle_unknown:
        unavailable["idle_power_w"] = idle_unknown
    duration = reading.duration_s
    return Metrics(
        **EnergyMetrics.of(reading, generation.output_tokens, idle),
        input_tokens=generation.input_tokens,
        output_tokens=generation.output_tokens,
        tokens_per_s=generation.output_tokens / duration if duration > 0 else None,
        ttft_s=LatencyStats.of(generation.ttft_s),
        itl_s=itl,
        peak_memory_mb=memory.mb,
        peak_memory_source=memory.source,
        gpu_peak_memory_mb=memory.per_device_mb,
        flops_estimate=generation.flops_estimate,
        load_s=loaded - started,
        warmup_s=warmed - loaded,
        unavailable=unavailable,
        sample_output=generation.sample_output,
        workload=workload.description,
        **phases,
    )


def _completions_per_prompt(config: ExperimentConfig) -> int:
    """vLLM's ``sampling.n`` (parallel sampling); one everywhere else (beam search returns its best)."""
    sampling = config.vllm.sampling if config.vllm is not None else None
    return sampling.n if sampling is not None and sampling.n else 1
