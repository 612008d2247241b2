"""The load generator: streamed ``/v1/completions`` requests sent at their arrival times (aiohttp, as ``vllm bench
serve`` sends them), each chunk timed as it arrives. Runs its own event loop; nothing else happens in it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import Any

import aiohttp  # here, not in the load: its import would land inside the measured window

from .requests import RequestRecord, RequestSpec, payload

# A stream that sends nothing for this long is a failed request, not a hung item.
READ_TIMEOUT_S = 600.0


def run_load(
    base_url: str,
    model_name: str,
    specs: Sequence[RequestSpec],
    arrivals: Sequence[float],
    options: dict[str, Any],
    max_concurrency: int | None = None,
) -> list[RequestRecord]:
    """Send ``specs[i]`` at ``arrivals[i]`` seconds after the start, at most ``max_concurrency`` in flight; return
    their records in the same order once every request has ended."""
    return asyncio.run(_load(base_url, model_name, specs, arrivals, options, max_concurrency))


def warm_up(
    base_url: str, model_name: str, specs: Sequence[RequestSpec], options: dict[str, Any], max_concurrency: int | None
) -> list[RequestRecord]:
    """Send ``specs`` at once (bounded by ``max_concurrency``) and wait for them; nothing of them is measured."""
    return run_load(base_url, model_name, specs, [0.0] * len(specs), options, max_concurrency)


async def _load(
    base_url: str,
    model_name: str,
    specs: Sequence[RequestSpec],
    arrivals: Sequence[float],
    options: dict[str, Any],
    max_concurrency: int | None,
) -> list[RequestRecord]:
    url = base_url.rstrip("/") + "/v1/completions"
    limit = asyncio.Semaphore(max_concurrency) if max_concurrency else None
    connector = aiohttp.TCPConnector(limit=max_concurrency or 0, limit_per_host=max_concurrency or 0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=READ_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False) as session:
        start = time.perf_counter()
        tasks = []
        for spec, at in zip(specs, arrivals, strict=True):
            delay = start + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            body = payload(spec, model_name, options)
            tasks.append(asyncio.create_task(_bounded(session, url, body, limit)))
        return list(await asyncio.gather(*tasks))


async def _bounded(session: Any, url: str, body: dict[str, Any], limit: asyncio.Semaphore | None) -> RequestRecord:
    if limit is None:
        return await _stream(session, url, body)
    async with limit:
        return await _stream(session, url, body)


async def _stream(session: Any, url: str, body: dict[str, Any]) -> RequestRecord:
    """One request: every ``data:`` line with a choice is a chunk, timed on arrival; the usage line gives the counts."""
    record = RequestRecord(send_s=time.perf_counter())
    try:
        async with session.post(url, json=body) as response:
            if response.status != 200:
                detail = (await response.text())[:300].strip()
                record.error = f"HTTP {response.status} {response.reason}: {detail}"
                return record
            async for raw in response.content:
                line = raw.strip()
                if not line.startswith(b"data:"):
                    continue  # blank lines between events, SSE comments (pings)
                data = line[5:].strip()
                if data == b"[DONE]":
                    break
                event = json.loads(data)
                if event.get("choices"):
                    record.chunk_s.append(time.perf_counter())
                    record.text += event["choices"][0].get("text") or ""
                usage = event.get("usage")
                if usage:
                    record.output_tokens = usage.get("completion_tokens")
                    record.prompt_tokens = usage.get("prompt_tokens")
        if not record.chunk_s:
            record.error = "the stream ended without a token"
    except Exception as exc:  # one request's failure is counted, not the load's end
        record.error = f"{type(exc).__name__}: {exc}"
    return record
