"""What one serving request asks for and what its stream showed, timed on ``time.perf_counter``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RequestSpec:
    """One streamed completion request: the prompt as the model sees it (chat template applied) and its length."""

    prompt: str
    max_tokens: int


@dataclass
class RequestRecord:
    """One request of the measured load. ``chunk_s``: the arrival of every streamed chunk that carried a choice, the
    first one included (the first token), as ``vllm bench serve`` times them."""

    send_s: float
    chunk_s: list[float] = field(default_factory=list)
    output_tokens: int | None = None  # the server's usage count; None when it sent none
    prompt_tokens: int | None = None
    text: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.chunk_s)

    @property
    def first_token_s(self) -> float:
        return self.chunk_s[0]

    @property
    def end_s(self) -> float:
        return self.chunk_s[-1]

    @property
    def ttft(self) -> float:
        return self.chunk_s[0] - self.send_s

    @property
    def e2el(self) -> float:
        return self.chunk_s[-1] - self.send_s

    @property
    def itl(self) -> list[float]:
        return [b - a for a, b in zip(self.chunk_s, self.chunk_s[1:], strict=False)]


def payload(spec: RequestSpec, model_name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The JSON body of one ``/v1/completions`` request: streamed, with the usage count at the end."""
    body = {
        "model": model_name,
        "prompt": spec.prompt,
        "max_tokens": spec.max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        **options,
    }
    if "min_tokens" in body:  # a server refuses a minimum above the request's own length
        body["min_tokens"] = min(body["min_tokens"], spec.max_tokens)
    return body
