"""An experiment's workload: its prompts as the model will see them (the chat template applied), and how many tokens
each one generates. Built before the backend loads, outside every window; both backends take it as it is, so both
engines see the same input tokens."""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config.models import ExperimentConfig
from ..errors import DatasetError
from . import sharegpt
from .models import ResolvedModel
from .prompts import dataset_path, file_prompts, synthetic_prompts


@dataclass(frozen=True)
class Workload:
    prompts: list[str]  # as the model sees them
    templated: bool  # rendered through the chat template (which holds the special tokens): tokenise without adding any
    output_lens: list[int] | None = None  # per prompt (output_len: reference); None: one rule for all
    description: str = ""  # what the prompts are, for the result


def build_workload(
    config: ExperimentConfig, tokenizer: Any, *, base_dir: Path | None = None, cache_dir: Path | None = None
) -> Workload:
    """``config``'s prompts through ``tokenizer``'s chat template (``chat_template: auto`` and it has one)."""
    dataset = config.dataset
    seed = dataset.seed if dataset.seed is not None else config.random_seed
    view = _View(tokenizer, config.chat_template == "auto" and bool(getattr(tokenizer, "chat_template", None)))
    references: list[int] | None = None
    if dataset.source == "sharegpt":
        policy = dataset.output_policy
        limits = sharegpt.Limits(
            config.max_input_tokens,
            config.max_output_tokens,
            fixed_output_len=policy if isinstance(policy, int) else None,
            reference_output=policy == "reference",
        )
        pairs = _sharegpt_pairs(view, config.n, seed, limits, cache_dir)
        raw = [prompt for prompt, _ in pairs]
        references = [length for _, length in pairs] if policy == "reference" else None
        described = f"sharegpt (seed {seed})"
    elif dataset.source == "file":
        path = dataset_path(dataset, base_dir)
        raw = file_prompts(path, config.n, dataset.field)
        described = f"file {path.name}"
    else:
        raw = synthetic_prompts(config.n, dataset.input_len, seed)
        described = f"synthetic ({dataset.input_len} words, seed {seed})"
    if view.templated:  # cut the user's text, not the template's end (the generation prompt): it must fit whole
        raw = [view.fit(prompt, config.max_input_tokens) for prompt in raw]
    return Workload(
        prompts=[view.as_seen(prompt) for prompt in raw],
        templated=view.templated,
        output_lens=references,
        description=f"{described}, {'chat template' if view.templated else 'raw text'}, {_lengths(config)}",
    )


@dataclass(frozen=True)
class _View:
    """A prompt as the model sees it: through the chat template (``templated``) or as it is."""

    tokenizer: Any
    templated: bool

    def as_seen(self, prompt: str) -> str:
        if not self.templated:
            return prompt
        rendered: str = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        return rendered

    def raw_tokens(self, text: str) -> int:
        """As vLLM's sampler counts: the text alone, with the tokenizer's special tokens."""
        return len(self.tokenizer(text, verbose=False).input_ids)

    def seen_tokens(self, prompt: str) -> int:
        """What the backends feed the model (a rendered template holds its special tokens already)."""
        return len(self.tokenizer(self.as_seen(prompt), add_special_tokens=not self.templated, verbose=False).input_ids)

    def fit(self, prompt: str, max_tokens: int) -> str:
        """``prompt`` cut in its own text until, through the template, it fits ``max_tokens``."""
        if self.seen_tokens(prompt) <= max_tokens:
            return prompt
        room = max_tokens - self.seen_tokens("")
        if room < 1:
            raise DatasetError(
                f"max_input_tokens {max_tokens} leaves no room for a prompt: the chat template alone takes "
                f"{self.seen_tokens('')} tokens (raise max_input_tokens, or chat_template: none)"
            )
        ids = self.tokenizer(prompt, add_special_tokens=False, verbose=False).input_ids
        keep = min(room, len(ids))
        cut = self.tokenizer.decode(ids[:keep])
        while keep > 1 and self.seen_tokens(cut) > max_tokens:  # decoding and encoding again may add a token
            keep -= 1
            cut = self.tokenizer.decode(ids[:keep])
        return cut


def _sharegpt_pairs(
    view: _View, n: int, seed: int, limits: sharegpt.Limits, cache_dir: Path | None
) -> list[tuple[str, int]]:
    """The sample, from the disk cache; on a miss it is drawn in a process of its own (spawned), so the parsed file
    (~170 MiB that CPython does not give back) never sits in the item's process and in its peak memory."""
    key = _tokenizer_key(view.tokenizer, view.templated)
    if cache_dir is not None and not sharegpt.is_cached(n, seed, limits, key, cache_dir):
        drawer = multiprocessing.get_context("spawn").Process(
            target=_draw_into_cache, args=(view, n, seed, limits, key, cache_dir), name="pytest-llem-sharegpt"
        )
        drawer.start()
        drawer.join()  # a failure (too few conversations, no package) is drawn again below, and said there
    return sharegpt.sample(n, seed, limits, view.raw_tokens, view.seen_tokens, key, cache_dir)


def _draw_into_cache(view: _View, n: int, seed: int, limits: sharegpt.Limits, key: str, cache_dir: Path) -> None:
    with contextlib.suppress(Exception):  # a failure is told by the item's own draw, with its reason
        sharegpt.sample(n, seed, limits, view.raw_tokens, view.seen_tokens, key, cache_dir)


def _lengths(config: ExperimentConfig) -> str:
    policy = config.dataset.output_policy
    if policy == "reference":
        return "reference output lengths"
    if policy == "natural":
        return f"outputs until EOS (at most {config.max_output_tokens} tokens)"
    if policy is not None:
        return f"{policy} output tokens each"
    minimum = config.decoder.min_new_tokens
    floor = f"at least {minimum}, " if minimum else ""
    return f"{floor}at most {config.max_output_tokens} output tokens"


def load_tokenizer(config: ExperimentConfig, model: ResolvedModel) -> Any:
    """The model's tokenizer as the backends load it (revision and remote code as the experiment says)."""
    from transformers import AutoTokenizer

    source, options = model.location, {}
    if config.backend == "vllm":  # as vLLM picks its tokenizer: engine options, then passthrough_kwargs
        engine = config.vllm.engine.model_dump(exclude_none=True) if config.vllm and config.vllm.engine else {}
        engine.update(config.passthrough_kwargs or {})
        source = str(engine.get("tokenizer") or model.location)
        revision = engine.get("tokenizer_revision") or engine.get("revision")
        options = {"revision": revision, "trust_remote_code": engine.get("trust_remote_code")}
    elif config.pytorch is not None:
        options = {"revision": config.pytorch.revision, "trust_remote_code": config.pytorch.trust_remote_code}
    return AutoTokenizer.from_pretrained(source, **{k: v for k, v in options.items() if v is not None})


def _tokenizer_key(tokenizer: Any, templated: bool) -> str:
    """Names the tokenizer (and template) a cached sample was counted with."""
    template = getattr(tokenizer, "chat_template", None) if templated else None
    parts = [str(getattr(tokenizer, "name_or_path", "")), str(len(tokenizer)), str(template)]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]
