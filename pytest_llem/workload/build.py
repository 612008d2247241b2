"""An experiment's workload: its prompts as the model will see them (the chat template applied), and how many tokens
each one generates. Built before the backend loads, outside every window; both backends take it as it is, so both
engines see the same input tokens."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config.models import ExperimentConfig
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
    templated = config.chat_template == "auto" and bool(getattr(tokenizer, "chat_template", None))

    def as_seen(prompt: str) -> str:
        if not templated:
            return prompt
        rendered: str = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        return rendered

    references: list[int] | None = None
    if dataset.source == "sharegpt":
        policy = dataset.output_policy
        fixed = policy if isinstance(policy, int) else None
        limits = sharegpt.Limits(config.max_input_tokens, config.max_output_tokens, fixed)
        pairs = sharegpt.sample(
            config.n,
            seed,
            limits,
            count_tokens=lambda text: len(tokenizer(text, verbose=False).input_ids),
            seen_tokens=lambda text: _token_count(tokenizer, as_seen(text), templated=templated),
            cache_key=_tokenizer_key(tokenizer, templated),
            cache_dir=cache_dir,
        )
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
    if templated:  # cut the user's text, not the template's end (the generation prompt): it must fit whole
        raw = _fit(raw, tokenizer, config.max_input_tokens - _token_count(tokenizer, as_seen(""), templated=True))
    return Workload(
        prompts=[as_seen(prompt) for prompt in raw],
        templated=templated,
        output_lens=references,
        description=f"{described}, {'chat template' if templated else 'raw text'}, {_lengths(config)}",
    )


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


def _token_count(tokenizer: Any, text: str, *, templated: bool) -> int:
    return len(tokenizer(text, add_special_tokens=not templated, verbose=False).input_ids)


def _fit(prompts: list[str], tokenizer: Any, budget: int) -> list[str]:
    """Each prompt cut to ``budget`` tokens (at least one)."""
    fitted = []
    for prompt in prompts:
        ids = tokenizer(prompt, add_special_tokens=False, verbose=False).input_ids
        fitted.append(tokenizer.decode(ids[: max(budget, 1)]) if len(ids) > budget else prompt)
    return fitted


def load_tokenizer(config: ExperimentConfig, model: ResolvedModel) -> Any:
    """The model's tokenizer as the backends load it (revision and remote code as the experiment says)."""
    from transformers import AutoTokenizer

    options: dict[str, Any] = {}
    if config.pytorch is not None:
        options = {"revision": config.pytorch.revision, "trust_remote_code": config.pytorch.trust_remote_code}
    elif config.vllm is not None and config.vllm.engine is not None:
        engine = config.vllm.engine.model_dump(exclude_none=True)
        options = {"revision": engine.get("tokenizer_revision"), "trust_remote_code": engine.get("trust_remote_code")}
    return AutoTokenizer.from_pretrained(model.location, **{k: v for k, v in options.items() if v is not None})


def _tokenizer_key(tokenizer: Any, templated: bool) -> str:
    """Names the tokenizer (and template) a cached sample was counted with."""
    template = getattr(tokenizer, "chat_template", None) if templated else None
    parts = [str(getattr(tokenizer, "name_or_path", "")), str(len(tokenizer)), str(template)]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]
