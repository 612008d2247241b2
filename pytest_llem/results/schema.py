"""The result of one item, as JSON-ready pydantic models. A figure that could not be measured is None, with a reason."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = "1"


class LatencyStats(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mean: float
    p50: float
    p95: float
    n: int

    @classmethod
    def of(cls, samples: list[float]) -> LatencyStats | None:
        if not samples:
            return None
        import numpy as np

        values = np.asarray(samples, dtype=float)
        return cls(
            mean=float(values.mean()),
            p50=float(np.percentile(values, 50)),
            p95=float(np.percentile(values, 95)),
            n=len(samples),
        )


class Metrics(BaseModel):
    """DESIGN.md "Metrics": one definition each."""

    model_config = ConfigDict(extra="forbid")

    input_tokens: int
    output_tokens: int
    duration_s: float = Field(description="wall time of the window, after device sync")
    tokens_per_s: float | None = Field(description="output_tokens / duration_s")
    ttft_s: LatencyStats | None
    itl_s: LatencyStats | None
    peak_memory_mb: float | None
    peak_memory_source: str
    flops_estimate: float | None = Field(description="2 × non-embedding parameters × (input + output tokens)")
    load_s: float
    warmup_s: float
    unavailable: dict[str, str] = Field(default_factory=dict, description="metric → why it is null")
    sample_output: str | None = None


class ItemResult(BaseModel):
    """One (experiment, cycle): who it is, what it ran, what it measured."""

    model_config = ConfigDict(extra="forbid")

    schema_version: str = SCHEMA_VERSION
    study: str
    study_design_hash: str
    experiment_id: str
    config_hash: str
    cycle: int
    backend: str
    model: str
    config: dict[str, Any]
    metrics: Metrics
    started_at: float
    finished_at: float

    def value(self, metric: str) -> float | None:
        """A number of ``metrics`` by name: a top-level field (``tokens_per_s``) or a latency's (``ttft_s.mean``)."""
        head, _, tail = metric.partition(".")
        raw = getattr(self.metrics, head)
        if tail:
            raw = getattr(raw, tail) if raw is not None else None
        return float(raw) if raw is not None else None
