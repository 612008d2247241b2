"""Backend ``pytorch``: Hugging Face transformers ``generate`` on CUDA when available, else CPU.

torch and transformers are imported inside the methods: importing this module costs nothing at collection.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from ..config.backend_sections import PyTorchConfig
from ..config.models import ExperimentConfig
from ..energy import cuda as cuda_devices
from ..workload.build import Workload
from ..workload.models import ResolvedModel
from .base import GenerationResult, PeakMemory
from .memory import PeakTracker

if TYPE_CHECKING:
    import torch

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
_GENERATE_OPTIONS = (
    "use_cache",
    "cache_implementation",
    "num_beams",
    "early_stopping",
    "length_penalty",
    "no_repeat_ngram_size",
    "prompt_lookup_num_tokens",
)


@dataclass
class _Batch:
    encoding: Any  # BatchEncoding on the model's device
    input_tokens: int  # real tokens, padding excluded
    output_lens: list[int] | None = None  # per row: exactly this many tokens (output_len: reference)


@dataclass
class _Generated:
    batch: _Batch
    output: Any  # token ids, prompt included
    start: float
    steps: list[float]  # perf_counter after each decoding step


@cache
def _step_clock_class() -> Any:
    """A stopping criterion that never stops: it records when each decoding step produced its tokens."""
    import torch
    from transformers import StoppingCriteria

    class StepClock(StoppingCriteria):
        def __init__(self) -> None:
            self.times: list[float] = []

        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
            if input_ids.is_cuda:
                torch.cuda.synchronize(input_ids.device)  # the step's tokens exist only once the device says so
            self.times.append(time.perf_counter())
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]

    return StepClock


@cache
def _row_lengths_class() -> Any:
    """A logits processor that makes each row of a batch generate exactly its own number of tokens: EOS is barred
    before the row's length and forced right after it (the row then ends, as at a natural EOS)."""
    import torch
    from transformers import LogitsProcessor

    class RowLengths(LogitsProcessor):
        def __init__(self, prompt_len: int, lengths: list[int], eos_ids: set[int]) -> None:
            self.prompt_len = prompt_len
            self.lengths = torch.tensor(lengths)
            self.eos = sorted(eos_ids)

        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            if not self.eos:
                return scores
            lengths = self.lengths.to(scores.device)
            if scores.shape[0] != lengths.shape[0]:  # beam search: each prompt's beams are consecutive rows
                lengths = lengths.repeat_interleave(scores.shape[0] // lengths.shape[0])
            done = (input_ids.shape[1] - self.prompt_len) >= lengths
            barred = scores[:, self.eos].masked_fill(~done[:, None], -float("inf"))
            scores[:, self.eos] = barred
            if bool(done.any()):
                forced = torch.full_like(scores[done], -float("inf"))
                forced[:, self.eos[0]] = 0.0
                scores[done] = forced
            return scores

    return RowLengths


class PyTorchBackend:
    name = "pytorch"

    def __init__(self) -> None:
        self.model: Any = None
        self.tokenizer: Any = None
        self.device = "cpu"
        self.config: ExperimentConfig | None = None
        self._non_embedding_params = 0
        self._eos_ids: set[int] = set()
        self._peak = PeakTracker()

    # --- load ---
    def load(self, config: ExperimentConfig, model: ResolvedModel) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.config = config
        section = config.pytorch or PyTorchConfig()
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        common = {
            k: v
            for k, v in (("revision", section.revision), ("trust_remote_code", section.trust_remote_code))
            if v is not None
        }
        self.tokenizer = AutoTokenizer.from_pretrained(model.location, **common)
        self.tokenizer.padding_side = "left"  # decoder-only models continue from the right edge
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

        kwargs: dict[str, Any] = {"dtype": getattr(torch, DTYPES[config.precision]), **common}
        for key in ("attn_implementation", "device_map", "max_memory"):
            if getattr(section, key) is not None:
                kwargs[key] = getattr(section, key)
        quantization = _quantization_config(section)
        if quantization is not None:
            kwargs["quantization_config"] = quantization
        kwargs.update(config.passthrough_kwargs or {})
        self.model = AutoModelForCausalLM.from_pretrained(model.location, **kwargs)
        if "device_map" not in kwargs and quantization is None:
            self.model.to(self.device)
        self.model.eval()
        if section.torch_compile:
            compile_kwargs = {
                k: v
                for k, v in (("mode", section.torch_compile_mode), ("backend", section.torch_compile_backend))
                if v is not None
            }
            self.model.forward = torch.compile(self.model.forward, **compile_kwargs)  # type: ignore[call-overload]

        self._non_embedding_params = sum(p.numel() for n, p in self.model.named_parameters() if "embed" not in n)
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self._eos_ids = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()

    # --- prepare ---
    def prepare(self, workload: Workload) -> list[_Batch]:
        """Tokenised as the vLLM backend tokenises (a templated prompt holds its special tokens already)."""
        assert self.config is not None
        size = self.config.batch_size
        batches = []
        for start in range(0, len(workload.prompts), size):
            encoding = self.tokenizer(
                workload.prompts[start : start + size],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=self.config.max_input_tokens,
                add_special_tokens=not workload.templated,
            )
            real = int(encoding["attention_mask"].sum())
            lens = workload.output_lens[start : start + size] if workload.output_lens is not None else None
            batches.append(_Batch(encoding.to(self.model.device), real, lens))
        return batches

    def _generate_kwargs(self, batch: _Batch | None = None) -> dict[str, Any]:
        assert self.config is not None
        decoder = self.config.decoder
        section = self.config.pytorch or PyTorchConfig()
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.config.max_output_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
            "repetition_penalty": decoder.repetition_penalty,
        }
        if decoder.min_new_tokens is not None:
            kwargs["min_new_tokens"] = min(decoder.min_new_tokens, self.config.max_output_tokens)
        policy = self.config.dataset.output_policy
        if isinstance(policy, int):  # exactly this many tokens, EOS or not
            kwargs["max_new_tokens"] = kwargs["min_new_tokens"] = policy
        elif batch is not None and batch.output_lens is not None:  # each row its reference length, EOS ignored
            from transformers import LogitsProcessorList

            prompt_len = batch.encoding["input_ids"].shape[1]
            lengths = _row_lengths_class()(prompt_len, batch.output_lens, self._eos_ids)
            kwargs["max_new_tokens"] = max(batch.output_lens)
            kwargs["logits_processor"] = LogitsProcessorList([lengths])
        if decoder.greedy:
            kwargs.update(do_sample=False, temperature=None, top_k=None, top_p=None)
        else:
            kwargs.update(do_sample=True, temperature=decoder.temperature, top_k=decoder.top_k, top_p=decoder.top_p)
            if decoder.min_p is not None:
                kwargs["min_p"] = decoder.min_p
        for key in _GENERATE_OPTIONS:
            if getattr(section, key) is not None:
                kwargs[key] = getattr(section, key)
        return kwargs

    # --- warmup ---
    def warmup(self, prepared: list[_Batch], n_batches: int) -> None:
        import torch

        with torch.inference_mode():
            for i in range(n_batches):
                batch = prepared[i % len(prepared)]
                self.model.generate(**batch.encoding, **self._generate_kwargs(batch))

    # --- the window ---
    def synchronize(self) -> None:
        cuda_devices.synchronize()  # every GPU the model is placed on (device_map may spread it)

    def reset_peak_memory(self) -> None:
        self._peak.reset(self.device == "cuda")

    def peak_memory(self) -> PeakMemory:
        return self._peak.read(self.device == "cuda")

    def generate(self, prepared: list[_Batch]) -> list[_Generated]:
        """The timed work: generate every batch, recording when each decoding step finished. Nothing else."""
        import torch
        from transformers import StoppingCriteriaList

        assert self.config is not None
        batch_kwargs = [self._generate_kwargs(batch) for batch in prepared]  # built before the clock starts
        clock_class = _step_clock_class()
        torch.manual_seed(self.config.random_seed)
        generated = []
        with torch.inference_mode():
            for batch, kwargs in zip(prepared, batch_kwargs, strict=True):
                clock = clock_class()
                start = time.perf_counter()
                output = self.model.generate(
                    **batch.encoding, **kwargs, stopping_criteria=StoppingCriteriaList([clock])
                )
                generated.append(_Generated(batch, output, start, clock.times))
        return generated

    def prefill(self, prepared: list[_Batch]) -> None:
        import torch

        with torch.inference_mode():
            for batch in prepared:
                kwargs = self._generate_kwargs()  # no per-row lengths: one token each
                kwargs.update(max_new_tokens=1, min_new_tokens=None)
                self.model.generate(**batch.encoding, **kwargs)

    def count(self, generated: list[_Generated]) -> GenerationResult:
        """Tokens and latencies of a window, worked out after it closed."""
        result = GenerationResult(input_tokens=0, output_tokens=0)
        for item in generated:
            self._account(result, item.batch, item.output, item.start, item.steps)
        if generated:
            result.sample_output = self._sample_text(generated[0].batch, generated[0].output)
        result.flops_estimate = 2.0 * self._non_embedding_params * (result.input_tokens + result.output_tokens)
        return result

    def _account(self, result: GenerationResult, batch: _Batch, output: Any, start: float, steps: list[float]) -> None:
        prompt_len = batch.encoding["input_ids"].shape[1]
        result.input_tokens += batch.input_tokens
        caps: list[int | None] = [*batch.output_lens] if batch.output_lens else [None] * output.shape[0]
        for row, cap in zip(output[:, prompt_len:].tolist(), caps, strict=True):
            length = next((i + 1 for i, token in enumerate(row) if token in self._eos_ids), len(row))
            if cap is not None:  # a reference length: the EOS forced after it (or padding) is not output
                length = min(length, cap)
            result.output_tokens += length
            if steps and length:
                result.ttft_s.append(steps[0] - start)
                usable = steps[:length]
                result.itl_s.extend(b - a for a, b in itertools.pairwise(usable))

    def _sample_text(self, batch: _Batch, output: Any) -> str:
        prompt_len = batch.encoding["input_ids"].shape[1]
        text: str = self.tokenizer.decode(output[0, prompt_len:], skip_special_tokens=True)
        return text[:200]

    def close(self) -> None:
        self.model = None
        self.tokenizer = None
        if self.device == "cuda":
            import torch

            torch.cuda.empty_cache()


def _quantization_config(section: PyTorchConfig) -> Any:
    if not (section.load_in_4bit or section.load_in_8bit):
        return None
    from transformers import BitsAndBytesConfig

    options: dict[str, Any] = {"load_in_4bit": bool(section.load_in_4bit), "load_in_8bit": bool(section.load_in_8bit)}
    for key in ("bnb_4bit_compute_dtype", "bnb_4bit_quant_type", "bnb_4bit_use_double_quant"):
        if getattr(section, key) is not None:
            options[key] = getattr(section, key)
    return BitsAndBytesConfig(**options)
