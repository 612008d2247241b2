"""The backend protocol: what the runner asks of an inference engine, and what it gets back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from ..config.models import ExperimentConfig
from ..workload.build import Workload
from ..workload.models import ResolvedModel


@dataclass
class GenerationResult:
    """What one timed generation produced. Token counts are real tokens: no padding, output up to EOS."""

    input_tokens: int
    output_tokens: int
    ttft_s: list[float] = field(default_factory=list)  # one per sequence: batch start → its first token
    itl_s: list[float] = field(default_factory=list)  # every interval between consecutive tokens of a sequence
    # An engine that reports only each sequence's first and last token times knows the mean interval, not the intervals
    itl_mean_s: float | None = None
    itl_count: int = 0
    flops_estimate: float | None = None
    sample_output: str | None = None  # the first sequence's text, for a human glance at what was generated
    unavailable: dict[str, str] = field(default_factory=dict)  # metric → why it could not be measured


@dataclass
class PeakMemory:
    mb: float | None  # on GPUs: the sum over the devices used
    source: str  # how it was measured, or why it could not be
    per_device_mb: dict[int, float] = field(default_factory=dict)  # GPUs by CUDA index; empty on CPUs


class Backend(Protocol):
    """One inference engine. The runner calls, in order: load, prepare, warmup, then generate inside the window."""

    name: str

    def load(self, config: ExperimentConfig, model: ResolvedModel) -> None: ...

    def prepare(self, workload: Workload) -> Any:
        """Everything before the window that depends on the prompts (tokenising, batching, per-prompt lengths)."""
        ...

    def warmup(self, prepared: Any, n_batches: int) -> None: ...

    def synchronize(self) -> None:
        """Wait for the device to finish queued work, so the window's clock reads are true."""
        ...

    def reset_peak_memory(self) -> None: ...

    def peak_memory(self) -> PeakMemory: ...

    def generate(self, prepared: Any) -> Any:
        """The measured work and nothing else; returns raw outputs for ``count``."""
        ...

    def prefill(self, prepared: Any) -> None:
        """The same batches as ``generate``, one output token each: the prefill alone (``phases: true``)."""
        ...

    def count(self, generated: Any) -> GenerationResult:
        """Token counts and latencies from ``generate``'s raw outputs, after the window has closed."""
        ...

    def close(self) -> None: ...
