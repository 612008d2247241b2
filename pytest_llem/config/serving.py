"""The ``serving:`` section: requests that arrive over time at an OpenAI-compatible server (``scenario: serving``)."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, StrictFloat, StrictInt, field_validator
from pydantic_core import PydanticCustomError

from .strict import _Strict


class SloConfig(_Strict):
    """Latency targets per request, as ``vllm bench serve --goodput`` takes them; a request meets the SLO when it meets
    every target given. ``attainment``: the share of requests that must meet it for a configuration to count as
    meeting the SLO in the report."""

    ttft_ms: StrictFloat | None = Field(None, gt=0.0)
    tpot_ms: StrictFloat | None = Field(None, gt=0.0)
    e2el_ms: StrictFloat | None = Field(None, gt=0.0)
    attainment: StrictFloat = Field(0.9, gt=0.0, le=1.0)

    @property
    def targets_s(self) -> dict[str, float]:
        """The targets given, in seconds, keyed by metric (``ttft``, ``tpot``, ``e2el``)."""
        given = {"ttft": self.ttft_ms, "tpot": self.tpot_ms, "e2el": self.e2el_ms}
        return {name: ms / 1000.0 for name, ms in given.items() if ms is not None}


class ServingConfig(_Strict):
    """``request_rate``: requests per second, or ``inf`` (every request at once). Arrival gaps are drawn from a gamma
    distribution of shape ``burstiness`` (1: a Poisson process), seeded by the experiment's ``random_seed``.
    ``url``: an OpenAI-compatible server already running on this machine, measured rather than started."""

    request_rate: StrictFloat | Literal["inf"] = "inf"
    burstiness: StrictFloat = Field(1.0, gt=0.0)
    max_concurrency: StrictInt | None = Field(None, ge=1, description="cap on requests in flight")
    warmup_requests: StrictInt = Field(8, ge=0, description="sent and awaited before the measured load")
    slo: SloConfig = Field(default=SloConfig())
    url: str | None = Field(None, pattern=r"^https?://[^\s/]+(/\S*)?$", description="http://host:port of a server")
    # How long to wait is no deployment setting: left out of the experiment's identity (its config hash).
    startup_timeout_seconds: StrictFloat = Field(900.0, gt=0.0, exclude=True, description="bound on the server's start")

    @field_validator("request_rate", mode="wrap")
    @classmethod
    def _positive_or_inf(cls, value: Any, handler: Any) -> Any:
        """One spelling of infinity (YAML's ``inf`` is text, ``.inf`` a float), and one error naming what is
        allowed."""
        if value == "inf" or (isinstance(value, float) and math.isinf(value) and value > 0):
            return "inf"
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 and not math.isnan(value):
            return float(value)
        raise PydanticCustomError(
            "request_rate", "must be a positive number of requests per second or inf, not {value!r}", {"value": value}
        )

    @property
    def rate(self) -> float:
        return math.inf if self.request_rate == "inf" else float(self.request_rate)


Scenario = Literal["offline", "serving"]


def serving_problem(
    scenario: Scenario,
    serving: ServingConfig | None,
    backend: str,
    phases: bool,
    engine_options: list[str],
    vllm_section: Any | None,
    n: int,
) -> str | None:
    """Why these settings cannot make a serving (or offline) experiment, or None. ``engine_options``: the keys that
    set engine options (``vllm.engine``, ``pytorch``, ``passthrough_kwargs``) that are set; ``vllm_section``: the
    experiment's ``vllm:`` section or None; ``n``: its requests."""
    if scenario == "offline":
        return "serving: a serving section is given but scenario is offline" if serving is not None else None
    if serving is not None and serving.url is not None:
        if engine_options:
            return (
                f"{engine_options[0]}: serving.url measures a server that is already running; its engine options "
                "cannot be set from here"
            )
    elif backend != "vllm":
        return f"scenario: serving needs a server, and backend {backend} has none (use backend: vllm, or serving.url)"
    if phases:
        return "phases: the prefill split is measured on offline batches; serving items have the steady-state window"
    if vllm_section is not None and vllm_section.beam_search is not None:
        return "vllm.beam_search: vLLM's server streams sampled completions; beam search is offline only"
    sampling = vllm_section.sampling if vllm_section is not None else None
    if sampling is not None and sampling.n not in (None, 1):
        return "vllm.sampling.n: each serving request is one completion (n: 1)"
    settings = serving or ServingConfig()
    if settings.request_rate == "inf":
        return _full_batch_problem(settings, vllm_section, n)
    return None


def batch_limit(serving: ServingConfig, vllm_section: Any | None) -> int | None:
    """How many requests the engine runs at once, where the study says: ``vllm.engine.max_num_seqs`` and
    ``serving.max_concurrency``, the smaller of those set."""
    engine = vllm_section.engine if vllm_section is not None else None
    limits = [v for v in (engine.max_num_seqs if engine is not None else None, serving.max_concurrency) if v]
    return min(limits) if limits else None


def _full_batch_problem(serving: ServingConfig, vllm_section: Any | None, n: int) -> str | None:
    """At rate inf the steady state is the span of a full batch (ML.ENERGY's rule): it needs the batch limit, and
    enough requests to fill the batch and drain it again."""
    limit = batch_limit(serving, vllm_section)
    if limit is None:
        return (
            "serving.request_rate: inf measures the steady state of a full batch, whose size the study must give: "
            "set vllm.engine.max_num_seqs (or serving.max_concurrency)"
        )
    if n < 2 * limit:
        return (
            f"n: {n} requests at rate inf never fill a batch of {limit} and drain it again; the steady state needs "
            f"n >= {2 * limit}"
        )
    return None
