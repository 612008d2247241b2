"""The result of one item, as JSON-ready pydantic models. A figure that could not be measured is None, with a reason."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..energy.baseline import IdlePower
from ..energy.meter import Reading
from .environment import Environment

SCHEMA_VERSION = "2"


class LatencyStats(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mean: float
    p50: float | None  # None when only the mean is known (see ``mean_only``)
    p95: float | None
    n: int
    p90: float | None = None  # serving items report p90 and p99 too, as ``vllm bench serve`` does
    p99: float | None = None

    @classmethod
    def of(cls, samples: list[float]) -> LatencyStats | None:
        if not samples:
            return None
        import numpy as np

        values = np.asarray(samples, dtype=float)
        p50, p90, p95, p99 = (float(p) for p in np.percentile(values, [50, 90, 95, 99]))
        return cls(mean=float(values.mean()), p50=p50, p95=p95, n=len(samples), p90=p90, p99=p99)

    @classmethod
    def mean_only(cls, mean: float, n: int) -> LatencyStats:
        """``n`` intervals whose mean is known exactly (from first and last times) but not their spread."""
        return cls(mean=mean, p50=None, p95=None, n=n)


class EnergyMetrics(BaseModel):
    """DESIGN.md "Metrics", energy part: what the meter read over the window. None = not measured, with the reason."""

    model_config = ConfigDict(extra="forbid")

    energy_j: float | None = Field(None, description="energy of the window summed over the measured devices")
    gpu_energy_j: dict[int, float] = Field(default_factory=dict, description="per GPU, keyed by the driver's index")
    cpu_energy_j: float | None = Field(None, description="CPU packages (RAPL)")
    dram_energy_j: float | None = Field(None, description="DRAM (RAPL)")
    mean_power_w: float | None = Field(None, description="energy_j / duration_s")
    energy_per_output_token_j: float | None = Field(None, description="energy_j / output_tokens")
    energy_source: str | None = Field(None, description="which devices, through what")
    energy_unavailable_reason: str | None = Field(None, description="why energy_j is None")
    idle_power_w: float | None = Field(None, description="idle power of the same devices, measured before load")
    idle_power_origin: str | None = Field(None, description="measured before load, cached (and how old) or unavailable")
    energy_adjusted_j: float | None = Field(None, description="energy_j - idle_power_w * duration_s")
    measurement_warnings: list[str] = Field(default_factory=list, description="why the reading may not be trustworthy")

    @classmethod
    def of(cls, reading: Reading, output_tokens: int | None, idle: IdlePower | None) -> dict[str, Any]:
        """The energy fields of a window, as keyword arguments for ``Metrics``."""
        energy = reading.energy_j
        warnings = list(reading.warnings)
        adjusted = None
        if idle is not None:
            warnings += idle.warnings
            if energy is not None and idle.watts is not None:
                adjusted = energy - idle.watts * reading.duration_s
        return {
            "duration_s": reading.duration_s,
            "energy_j": energy,
            "gpu_energy_j": dict(reading.gpu_energy_j),
            "cpu_energy_j": reading.cpu_energy_j,
            "dram_energy_j": reading.dram_energy_j,
            "mean_power_w": reading.mean_power_w,
            "energy_per_output_token_j": energy / output_tokens if energy is not None and output_tokens else None,
            "energy_source": reading.source,
            "energy_unavailable_reason": reading.unavailable_reason,
            "idle_power_w": idle.watts if idle is not None else None,
            "idle_power_origin": idle.origin if idle is not None else None,
            "energy_adjusted_j": adjusted,
            "measurement_warnings": warnings,
        }


class ServingMetrics(BaseModel):
    """DESIGN.md "Metrics", serving part (``scenario: serving``); the window is the whole load, first send to last
    token. Latencies are ``ttft_s``/``itl_s`` of Metrics plus these, as ``vllm bench serve`` defines them."""

    tpot_s: LatencyStats | None = Field(None, description="per request: (e2el - ttft) / (output tokens - 1)")
    e2el_s: LatencyStats | None = Field(None, description="per request: last token - send")
    requests_sent: int | None = None
    requests_completed: int | None = None
    requests_failed: int | None = None
    request_throughput_rps: float | None = Field(None, description="completed requests / duration_s")
    goodput_rps: float | None = Field(None, description="requests meeting every SLO target / duration_s")
    slo_attainment: float | None = Field(None, description="requests meeting every SLO target / requests sent")
    energy_per_request_j: float | None = Field(None, description="energy_j / completed requests")
    steady_energy_j: float | None = Field(None, description="energy of the steady-state window, from the timeline")
    steady_duration_s: float | None = None
    steady_output_tokens: float | None = Field(None, description="tokens streamed inside the steady-state window")
    steady_energy_per_output_token_j: float | None = Field(None, description="steady_energy_j / steady_output_tokens")
    steady_window: str | None = Field(None, description="the steady-state rule applied")
    server_startup_s: float | None = Field(None, description="from starting the server to its first healthy answer")


class Metrics(ServingMetrics, EnergyMetrics):
    """DESIGN.md "Metrics": one definition each. Study items fill every field they can; an ``llem_energy`` window
    has only what the test tells it (output tokens) besides the energy and time."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    duration_s: float = Field(description="wall time of the window, after device sync")
    tokens_per_s: float | None = Field(None, description="output_tokens / duration_s")
    ttft_s: LatencyStats | None = None
    itl_s: LatencyStats | None = None
    peak_memory_mb: float | None = None
    peak_memory_source: str | None = None
    gpu_peak_memory_mb: dict[int, float] = Field(
        default_factory=dict, description="per GPU the item used, by CUDA index; peak_memory_mb is their sum"
    )
    flops_estimate: float | None = Field(None, description="2 × non-embedding parameters × (input + output tokens)")
    load_s: float | None = None
    warmup_s: float | None = None
    unavailable: dict[str, str] = Field(default_factory=dict, description="metric → why it is null")
    sample_output: str | None = None
    workload: str | None = Field(None, description="what the prompts were and how long the outputs, in words")
    # phases: true
    prefill_passes: int | None = Field(None, description="prefill passes in the prefill window (it lasts >= 1 s)")
    prefill_duration_s: float | None = Field(None, description="one prefill pass: every batch, one output token")
    decode_duration_s: float | None = Field(None, description="duration_s - prefill_duration_s")
    prefill_energy_j: float | None = Field(None, description="energy of one prefill pass")
    decode_energy_j: float | None = Field(None, description="energy_j - prefill_energy_j")
    prefill_energy_per_input_token_j: float | None = Field(None, description="prefill_energy_j / input_tokens")
    decode_energy_per_output_token_j: float | None = Field(
        None, description="decode_energy_j / the tokens decode made (output_tokens less each sequence's first)"
    )
    # gpu: settings (energy/gpu_settings.py)
    gpu_settings_gpus: list[int] = Field(
        default_factory=list, description="the GPUs (driver's index) the study's gpu: settings were applied on"
    )
    gpu_power_limit_w: float | None = Field(
        None, description="the power limit in force on those GPUs during the item, read back before and after it"
    )
    gpu_locked_clocks_mhz: list[int] | None = Field(
        None, description="[min, max] graphics clocks locked on those GPUs, as the driver accepted them"
    )


class ItemResult(BaseModel):
    """One (experiment, cycle) of a study, or one ``llem_energy`` window of a plain test (``kind: fixture``; then
    ``study`` is the test's file and ``experiment_id`` names the test and the window)."""

    model_config = ConfigDict(extra="forbid")

    schema_version: str = SCHEMA_VERSION
    study: str
    study_design_hash: str
    experiment_id: str
    config_hash: str
    cycle: int
    kind: Literal["study", "fixture"] = "study"
    backend: str | None
    model: str | None
    config: dict[str, Any]
    metrics: Metrics
    environment: Environment | None = None
    started_at: float
    finished_at: float

    def value(self, metric: str) -> float | None:
        return metric_value(self.metrics, metric)


def metric_value(metrics: Metrics, metric: str) -> float | None:
    """A number of ``metrics`` by name: a top-level field (``tokens_per_s``) or a latency's (``ttft_s.mean``)."""
    head, _, tail = metric.partition(".")
    raw = getattr(metrics, head)
    if tail:
        raw = getattr(raw, tail) if raw is not None else None
    return float(raw) if isinstance(raw, int | float) else None
