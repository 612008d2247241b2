"""The backends' own settings sections: ``pytorch:`` (transformers) and ``vllm:`` (engine, sampling, beam search).

Each section refuses its own contradictions and what this machine cannot run as invalid combinations (skipped
configs); whether a section matches ``backend`` is the experiment's rule (models.py).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationInfo, model_validator

from .compat import PYTORCH_CUDA_ONLY, PYTORCH_CUDA_ONLY_ATTENTION, vllm_engine_problem
from .strict import _Strict, context_platform, invalid_combination


class PyTorchConfig(_Strict):
    """Options of the transformers backend; None means the library's own default."""

    batch_size: StrictInt | None = Field(None, ge=1)
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2", "flash_attention_3"] | None = None
    torch_compile: bool | None = None
    torch_compile_mode: str | None = None
    torch_compile_backend: str | None = None
    load_in_4bit: bool | None = None
    load_in_8bit: bool | None = None
    bnb_4bit_compute_dtype: Literal["float16", "bfloat16", "float32"] | None = None
    bnb_4bit_quant_type: Literal["nf4", "fp4"] | None = None
    bnb_4bit_use_double_quant: bool | None = None
    use_cache: bool | None = None
    cache_implementation: Literal["static", "offloaded_static", "sliding_window"] | None = None
    num_beams: StrictInt | None = Field(None, ge=1)
    early_stopping: bool | None = None
    length_penalty: StrictFloat | None = None
    no_repeat_ngram_size: StrictInt | None = Field(None, ge=0)
    prompt_lookup_num_tokens: StrictInt | None = Field(None, ge=1)
    device_map: str | None = None
    max_memory: dict[str, str] | None = None
    revision: str | None = None
    trust_remote_code: bool | None = None

    @model_validator(mode="after")
    def _contradictions(self, info: ValidationInfo) -> PyTorchConfig:
        if self.load_in_4bit and self.load_in_8bit:
            raise invalid_combination("load_in_4bit and load_in_8bit are both true; choose one")
        if (self.torch_compile_mode or self.torch_compile_backend) and not self.torch_compile:
            raise invalid_combination("torch_compile_mode/torch_compile_backend need torch_compile: true")
        bnb = [
            k
            for k in ("bnb_4bit_compute_dtype", "bnb_4bit_quant_type", "bnb_4bit_use_double_quant")
            if getattr(self, k) is not None
        ]
        if bnb and not self.load_in_4bit:
            raise invalid_combination(f"{', '.join(bnb)} need load_in_4bit: true")
        if self.cache_implementation is not None and self.use_cache is False:
            raise invalid_combination("cache_implementation is set but use_cache is false")
        if context_platform(info) == "cpu":
            for key, why in PYTORCH_CUDA_ONLY.items():
                if getattr(self, key):
                    raise invalid_combination(f"{key}: {why}, and this machine has none")
            if self.attn_implementation in PYTORCH_CUDA_ONLY_ATTENTION:
                raise invalid_combination(f"attn_implementation {self.attn_implementation} needs a CUDA GPU")
        return self


class VLLMEngineConfig(BaseModel):
    """Keyword arguments of ``vllm.LLM``; keys not listed here are passed through to vLLM as written."""

    model_config = ConfigDict(extra="allow", frozen=True)

    gpu_memory_utilization: StrictFloat | None = Field(None, gt=0.0, le=1.0)
    swap_space: StrictFloat | None = Field(None, ge=0)
    cpu_offload_gb: StrictFloat | None = Field(None, ge=0)
    block_size: StrictInt | None = Field(None, ge=1)
    kv_cache_dtype: str | None = None
    enforce_eager: bool | None = None
    enable_chunked_prefill: bool | None = None
    max_num_seqs: StrictInt | None = Field(None, ge=1)
    max_num_batched_tokens: StrictInt | None = Field(None, ge=1)
    max_model_len: StrictInt | None = Field(None, ge=1)
    tensor_parallel_size: StrictInt | None = Field(None, ge=1)
    pipeline_parallel_size: StrictInt | None = Field(None, ge=1)
    enable_prefix_caching: bool | None = None
    quantization: str | None = None
    kv_cache_memory_bytes: StrictInt | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _contradictions(self, info: ValidationInfo) -> VLLMEngineConfig:
        if self.kv_cache_memory_bytes is not None and self.gpu_memory_utilization is not None:
            raise invalid_combination(
                "kv_cache_memory_bytes and gpu_memory_utilization both size the KV cache; set one"
            )
        problem = vllm_engine_problem(self.model_dump(exclude_none=True), context_platform(info))
        if problem:
            raise invalid_combination(problem)
        return self


class VLLMSamplingConfig(BaseModel):
    """Extra ``SamplingParams`` fields; keys not listed here are passed through to vLLM as written."""

    model_config = ConfigDict(extra="allow", frozen=True)

    max_tokens: StrictInt | None = Field(None, ge=1)
    min_tokens: StrictInt | None = Field(None, ge=0)
    presence_penalty: StrictFloat | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: StrictFloat | None = Field(None, ge=-2.0, le=2.0)
    ignore_eos: bool | None = None
    n: StrictInt | None = Field(None, ge=1)


class VLLMBeamSearchConfig(_Strict):
    """``BeamSearchParams`` fields. ``early_stopping`` is accepted for old study files and refused: vLLM's beam search
    has no such setting."""

    beam_width: StrictInt | None = Field(None, ge=1)
    length_penalty: StrictFloat | None = None
    early_stopping: bool | None = None
    max_tokens: StrictInt | None = Field(None, ge=1)
    ignore_eos: bool | None = None


class VLLMConfig(_Strict):
    engine: VLLMEngineConfig | None = None
    sampling: VLLMSamplingConfig | None = None
    beam_search: VLLMBeamSearchConfig | None = None

    @model_validator(mode="after")
    def _contradictions(self) -> VLLMConfig:
        if self.beam_search is not None and self.sampling is not None:
            raise invalid_combination("beam_search and sampling are alternatives; set one")
        return self
