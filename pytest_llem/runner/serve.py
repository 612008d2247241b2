"""Run one serving experiment: start (or reach) the server outside every window, warm it up, then measure the seeded
load with the meter, an energy timeline beside it for the steady-state window known only afterwards."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..backends.vllm import sampling_options
from ..config.models import ExperimentConfig
from ..config.platform import detect_platform
from ..config.serving import batch_limit
from ..energy.baseline import IdleBaselines
from ..energy.meter import Meter
from ..energy.timeline import EnergyTimeline
from ..results.schema import EnergyMetrics, LatencyStats, Metrics
from ..serving import client
from ..serving.arrivals import arrival_times
from ..serving.metrics import SteadyWindow, steady_warnings, steady_window, summarize, tokens_between
from ..serving.requests import RequestRecord, RequestSpec
from ..serving.server import (
    Endpoint,
    ServerError,
    StartedServer,
    external,
    free_port,
    on_this_machine,
    reset_prefix_cache,
)
from ..workload.build import Workload
from .preparation import idle_unavailable, item_meter, phase, prepare

# Figures of the steady-state window, the energy ones first.
STEADY_FIELDS = ("steady_energy_j", "steady_energy_per_output_token_j", "steady_duration_s", "steady_output_tokens")
NOT_READ_HERE = "the engine runs in the server's processes, whose peak memory this item does not read"


def run_serving(
    config: ExperimentConfig,
    *,
    study_dir: Path | None = None,
    cache_dir: Path | None = None,
    meter: Meter | None = None,
    idle_baselines: IdleBaselines | None = None,
) -> Metrics:
    """Run ``config`` (``scenario: serving``) once and measure its load. Raises PhaseError naming the phase.
    ``meter`` and ``idle_baselines`` default as for offline items (runner/preparation.py)."""
    settings = config.serving_settings
    meter = item_meter(config, meter)
    ready = prepare(config, meter, study_dir=study_dir, cache_dir=cache_dir, idle_baselines=idle_baselines)
    tokenizer, workload, idle = ready.tokenizer, ready.workload, ready.idle
    specs = request_specs(config, workload)
    options = request_options(config, workload)
    arrivals = arrival_times(len(specs), settings.rate, settings.burstiness, config.random_seed)
    timeline = EnergyTimeline(meter)
    server: StartedServer | None = None
    with tempfile.TemporaryDirectory(prefix="llem-server-") as scratch, contextlib.ExitStack() as running:
        with phase("server"):  # outside every window: start-up is no part of serving
            if settings.url is None:
                server = running.enter_context(_vllm_server(config, str(ready.model.location), Path(scratch) / "log"))
                endpoint = Endpoint(server.base_url, config.model)
            else:
                endpoint = external(settings.url, config.model)
        target = {"base_url": endpoint.base_url, "model_name": endpoint.model_name}
        with phase("warmup"):
            warm = [specs[i % len(specs)] for i in range(settings.warmup_requests)]
            failed = [r for r in client.warm_up(**target, specs=warm, options=options,
                                                max_concurrency=settings.max_concurrency) if not r.ok]  # fmt: skip
            if failed:
                raise ServerError(f"{len(failed)} of {len(warm)} warm-up requests failed: {failed[0].error}")
            not_reset = reset_prefix_cache(endpoint.base_url) if warm else None
        with phase("load"):
            timeline.start()
            meter.begin("load")
            try:
                records = client.run_load(**target, specs=specs, arrivals=arrivals, options=options,
                                          max_concurrency=settings.max_concurrency)  # fmt: skip
            except BaseException:
                meter.cancel("load")
                raise
            finally:
                timeline.stop()
            reading = meter.end("load")

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    summary = summarize(records, settings.slo.targets_s, count)
    if summary.completed == 0:
        raise ServerError(f"every one of the {summary.sent} requests failed: {summary.errors[0]}")
    unavailable: dict[str, str] = dict(reading.unavailable)
    warnings: list[str] = []
    if not_reset is not None:
        warnings.append(
            f"the server's prefix cache was not emptied after the warm-up ({not_reset}): the warm-up's prompts are "
            "sent again in the load and may skip their prefill"
        )
    if settings.url is not None and not on_this_machine(settings.url):
        warnings.append(
            f"serving.url names another host ({settings.url}): the energy measured is this machine's, not the server's"
        )
    if summary.failed:
        warnings.append(f"{summary.failed} of {summary.sent} requests failed (first: {summary.errors[0]})")
    window = steady_window(records, settings.rate, batch_limit(settings, config.vllm))
    steady, unknown = _steady_figures(window, timeline, records, count)
    unavailable |= unknown
    if window.duration_s is not None:
        warnings += steady_warnings(window, reading.duration_s, on_gpu=bool(meter.gpus))
    if not summary.tpot:
        unavailable["tpot_s"] = "no request produced more than one token"
    if not summary.itl:
        unavailable["itl_s"] = "no request streamed more than one chunk"
    duration = reading.duration_s
    slo_given = bool(settings.slo.targets_s)
    if not slo_given:
        unavailable["goodput_rps"] = unavailable["slo_attainment"] = "serving.slo sets no target"
    if summary.input_tokens == 0:
        unavailable["input_tokens"] = "the server's stream carried no usage counts"
    energy_fields = EnergyMetrics.of(reading, summary.output_tokens, idle)
    energy_fields["measurement_warnings"] = [*energy_fields["measurement_warnings"], *warnings]
    energy_j = energy_fields["energy_j"]
    idle_unknown = idle_unavailable(config, idle)
    if idle_unknown:
        unavailable["idle_power_w"] = idle_unknown
    unavailable["peak_memory_mb"] = NOT_READ_HERE
    return Metrics(
        **energy_fields,
        **steady,
        input_tokens=summary.input_tokens or None,
        output_tokens=summary.output_tokens,
        tokens_per_s=summary.output_tokens / duration if duration > 0 else None,
        ttft_s=LatencyStats.of(summary.ttft),
        itl_s=LatencyStats.of(summary.itl),
        tpot_s=LatencyStats.of(summary.tpot),
        e2el_s=LatencyStats.of(summary.e2el),
        requests_sent=summary.sent,
        requests_completed=summary.completed,
        requests_failed=summary.failed,
        request_throughput_rps=summary.completed / duration if duration > 0 else None,
        goodput_rps=summary.meeting_slo / duration if slo_given and duration > 0 else None,
        slo_attainment=summary.meeting_slo / summary.sent if slo_given else None,
        energy_per_request_j=energy_j / summary.completed if energy_j is not None else None,
        server_startup_s=server.startup_s if server is not None else None,
        peak_memory_source=NOT_READ_HERE,
        unavailable=unavailable,
        sample_output=next((r.text for r in records if r.ok), None),
        workload=workload.description,
    )


def _steady_figures(
    window: SteadyWindow, timeline: EnergyTimeline, records: list[RequestRecord], count: Callable[[str], int]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The steady-state window's fields, and the reasons for those that are unknown."""
    steady: dict[str, Any] = {"steady_window": window.rule}
    if window.start_s is None or window.end_s is None:
        return steady, dict.fromkeys(STEADY_FIELDS, window.reason or "no steady-state window")
    energy = timeline.energy_between(window.start_s, window.end_s)
    produced = tokens_between(records, window.start_s, window.end_s, count)
    steady |= {"steady_duration_s": window.duration_s, "steady_output_tokens": produced}
    if energy.energy_j is None:
        return steady, dict.fromkeys(STEADY_FIELDS[:2], energy.reason or "not measured")
    steady["steady_energy_j"] = energy.energy_j
    if not produced:
        return steady, {"steady_energy_per_output_token_j": "no token was streamed inside the steady-state window"}
    steady["steady_energy_per_output_token_j"] = energy.energy_j / produced
    return steady, {}


def _vllm_server(config: ExperimentConfig, location: str, log_path: Path) -> StartedServer:
    from ..serving.vllm_server import server_argv

    port = free_port()
    argv = server_argv(config, location, detect_platform(), port)
    env = dict(os.environ, VLLM_SERVER_DEV_MODE="1")  # its /reset_prefix_cache, on 127.0.0.1 only
    return StartedServer(argv, port, log_path, config.serving_settings.startup_timeout_seconds, env)


def request_specs(config: ExperimentConfig, workload: Workload) -> list[RequestSpec]:
    """One request per prompt, its length as an offline item would generate: each prompt's reference length, the
    fixed ``output_len``, else ``max_output_tokens`` (or ``vllm.sampling.max_tokens``)."""
    policy = config.dataset.output_policy
    sampling = config.vllm.sampling if config.vllm is not None else None
    default = (sampling.max_tokens if sampling is not None else None) or config.max_output_tokens
    lengths = workload.output_lens or [policy if isinstance(policy, int) else default] * len(workload.prompts)
    return [RequestSpec(prompt, length) for prompt, length in zip(workload.prompts, lengths, strict=True)]


def request_options(config: ExperimentConfig, workload: Workload) -> dict[str, Any]:
    """The rest of each request's body: the sampling settings an offline vLLM item uses (the decoder, then
    ``vllm.sampling`` as written), less the length, which is each request's own. ``ignore_eos`` and
    ``add_special_tokens`` are vLLM's extensions of the API (SGLang's too; other servers ignore them)."""
    options = {k: v for k, v in sampling_options(config).items() if k not in ("max_tokens", "n")}
    if not config.decoder.greedy:
        # Batches form by timing here, not in prompt order: a seed per request keeps sampling repeatable (and is the
        # only seed a server at a url takes from us).
        options["seed"] = config.random_seed
    if workload.templated:
        options["add_special_tokens"] = False  # the chat template holds them already
    return options
