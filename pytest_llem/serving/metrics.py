"""What a load's request records say: the latencies as ``vllm bench serve`` defines them, SLO goodput, and the
steady-state window. Pure functions of the records, so each definition is tested on timelines written by hand."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from .requests import RequestRecord

# ML.ENERGY's floor for a steady-state window on a GPU, and the share of the load below which it says little.
STEADY_MIN_GPU_S = 30.0
STEADY_MIN_SHARE = 0.2


def output_tokens(record: RequestRecord, count_tokens: Callable[[str], int] | None = None) -> int:
    """A completed request's output tokens: the server's usage count, else its text re-tokenised, else its chunks."""
    if record.output_tokens is not None:
        return record.output_tokens
    return count_tokens(record.text) if count_tokens is not None else len(record.chunk_s)


@dataclass(frozen=True)
class LoadSummary:
    """Per-request figures of the completed requests (seconds), and the counts."""

    sent: int
    completed: int
    input_tokens: int
    output_tokens: int
    ttft: list[float] = field(default_factory=list)
    tpot: list[float] = field(default_factory=list)  # requests with more than one output token
    itl: list[float] = field(default_factory=list)  # every chunk-to-chunk interval, pooled
    e2el: list[float] = field(default_factory=list)
    meeting_slo: int = 0  # completed requests within every target
    errors: list[str] = field(default_factory=list)  # one line per failed request (the first few)

    @property
    def failed(self) -> int:
        return self.sent - self.completed


def summarize(
    records: Sequence[RequestRecord], slo_s: Mapping[str, float], count_tokens: Callable[[str], int] | None = None
) -> LoadSummary:
    """Latencies of the completed requests. TTFT = first chunk − send; E2EL = last chunk − send; TPOT = (E2EL − TTFT)
    / (output tokens − 1) for requests with more than one output token (0 for the SLO check otherwise, as vLLM does);
    ITL: every interval between consecutive chunks. Output tokens as ``output_tokens`` counts them. A request meets
    the SLO when it completed and meets every target in ``slo_s`` (``ttft``, ``tpot``, ``e2el``: seconds)."""
    ttft: list[float] = []
    tpot: list[float] = []
    itl: list[float] = []
    e2el: list[float] = []
    inputs = outputs = completed = meeting = 0
    errors: list[str] = []
    for record in records:
        if not record.ok:
            if len(errors) < 5:
                errors.append(record.error or "failed")
            continue
        completed += 1
        produced = output_tokens(record, count_tokens)
        outputs += produced
        inputs += record.prompt_tokens or 0
        per_token = (record.e2el - record.ttft) / (produced - 1) if produced > 1 else 0.0
        if produced > 1:
            tpot.append(per_token)
        ttft.append(record.ttft)
        e2el.append(record.e2el)
        itl.extend(record.itl)
        observed = {"ttft": record.ttft, "tpot": per_token, "e2el": record.e2el}
        meeting += all(observed[name] <= target for name, target in slo_s.items())
    return LoadSummary(len(records), completed, inputs, outputs, ttft, tpot, itl, e2el, meeting, errors)


@dataclass(frozen=True)
class SteadyWindow:
    """The span of a load in which the server ran at its steady state (``perf_counter`` seconds), or why there is
    none."""

    start_s: float | None
    end_s: float | None
    rule: str
    reason: str | None = None

    @property
    def duration_s(self) -> float | None:
        return self.end_s - self.start_s if self.start_s is not None and self.end_s is not None else None


def steady_window(records: Sequence[RequestRecord], rate: float, batch_limit: int | None) -> SteadyWindow:
    """Rate inf (ML.ENERGY's rule): from the moment ``batch_limit`` requests have their first token until ``n −
    batch_limit`` have finished, the span in which the batch is full. A finite rate: from the first token of the first
    request sent until the last request's arrival, the span in which requests keep arriving."""
    done = [r for r in records if r.ok]
    if math.isinf(rate):
        rule = f"from {batch_limit} first tokens to {len(done) - (batch_limit or 0)} finished requests"
        if batch_limit is None:
            return SteadyWindow(None, None, "full batch", _NO_LIMIT)
        if len(done) - batch_limit < batch_limit:
            return SteadyWindow(
                None,
                None,
                rule,
                f"{len(done)} completed requests never fill a batch of {batch_limit} and drain it again; the steady "
                f"state needs n of at least 2 x {batch_limit}",
            )
        start = sorted(r.first_token_s for r in done)[batch_limit - 1]
        end = sorted(r.end_s for r in done)[len(done) - batch_limit - 1]
    else:
        rule = "from the load's first token to the last arrival"
        if not done:
            return SteadyWindow(None, None, rule, "no request completed")
        # The first token of any request: one failed request early in the load does not void the window.
        start, end = min(r.first_token_s for r in done), max(r.send_s for r in records)
    if end <= start:
        return SteadyWindow(None, None, rule, "the window is empty: it ends before it starts")
    return SteadyWindow(start, end, rule)


_NO_LIMIT = (
    "the engine's batch limit is unknown: set vllm.engine.max_num_seqs (or serving.max_concurrency) to define the "
    "steady state at rate inf"
)


def steady_warnings(window: SteadyWindow, load_s: float, on_gpu: bool) -> list[str]:
    """ML.ENERGY asks a GPU's steady window for 30 s at least; a window that is a small share of the load says little
    about it either way."""
    duration = window.duration_s
    if duration is None:
        return []
    found = []
    if on_gpu and duration < STEADY_MIN_GPU_S:
        found.append(f"steady-state window is {duration:.3g} s, under ML.ENERGY's {STEADY_MIN_GPU_S:.0f} s for GPUs")
    if load_s > 0 and duration < STEADY_MIN_SHARE * load_s:
        found.append(
            f"steady-state window is {duration:.3g} s, {duration / load_s:.0%} of the {load_s:.3g} s load "
            f"(under {STEADY_MIN_SHARE:.0%}): raise n"
        )
    return found


def tokens_between(
    records: Sequence[RequestRecord], start_s: float, end_s: float, count_tokens: Callable[[str], int] | None = None
) -> float:
    """Output tokens streamed inside [start_s, end_s]: each request's tokens shared evenly over its chunks (a chunk
    usually carries one token; a server that bundles several still totals right)."""
    total = 0.0
    for record in records:
        if not record.ok:
            continue
        produced = output_tokens(record, count_tokens)
        inside = sum(start_s <= t <= end_s for t in record.chunk_s)
        total += produced * inside / len(record.chunk_s)
    return total
