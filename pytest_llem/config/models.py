"""The study model: ExperimentConfig (one runnable experiment), ExecutionConfig, StudyConfig. The backends' own
sections are in backend_sections.py; dataset:, serving: and gpu: in their own modules.

Follows LLenergyMeasure v2.0's fields. Rules that concern one value live on the field; rules that concern several
values (a backend section that does not match ``backend``, contradictory options, a precision the backend cannot run
here) raise ``invalid_combination`` errors, which the grid turns into skipped configs instead of collection errors.

Numbers are strict (``StrictInt``/``StrictFloat``): an integer field refuses ``true``, ``2.5`` and ``"3"``; a float
field refuses booleans and strings but takes integers (``duration_seconds: 10``). Free-form values
(``passthrough_kwargs``, the extra keys of ``vllm.engine``/``vllm.sampling``) are passed on as written. Text meant to be
parsed (ini keys) is validated with ``strict=False``.
"""

from __future__ import annotations

import copy
import json
from enum import StrEnum
from functools import cached_property, lru_cache
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Field,
    JsonValue,
    StrictFloat,
    StrictInt,
    TypeAdapter,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError, to_json

from .backend_sections import PyTorchConfig, VLLMBeamSearchConfig, VLLMConfig
from .compat import precision_problem
from .dataset import DatasetConfig
from .gpu import GpuConfig
from .serving import Scenario, ServingConfig, serving_problem
from .strict import _Strict, context_platform, invalid_combination

# The built-in backends, each with its own settings section; plugins may add more (``pytest_llem_backends``).
BACKENDS: tuple[str, ...] = ("pytorch", "vllm")
_extra_backends: tuple[str, ...] = ()


def set_extra_backends(names: tuple[str, ...]) -> None:
    """Backends added by plugins for this session (``backend:`` accepts them; they have no settings section)."""
    global _extra_backends
    _extra_backends = tuple(n for n in names if n not in BACKENDS)


def backend_names() -> tuple[str, ...]:
    return BACKENDS + _extra_backends


Precision = Literal["fp32", "fp16", "bf16"]


class CycleOrder(StrEnum):
    """How cycles are laid out: A,A,B,B (sequential), A,B,A,B (interleaved), a new permutation per cycle (shuffled)."""

    SEQUENTIAL = "sequential"
    INTERLEAVED = "interleaved"
    SHUFFLED = "shuffled"


# Decoder presets from LLenergyMeasure; explicit keys win over the preset's.
DECODER_PRESETS: dict[str, dict[str, Any]] = {
    "deterministic": {"temperature": 0.0, "do_sample": False},
    "standard": {"temperature": 1.0, "do_sample": True, "top_p": 0.95},
    "creative": {"temperature": 0.8, "do_sample": True, "top_p": 0.9, "repetition_penalty": 1.1},
    "factual": {"temperature": 0.3, "do_sample": True},
}


class DecoderConfig(_Strict):
    temperature: StrictFloat = Field(1.0, ge=0.0, le=2.0)
    do_sample: bool = True
    top_k: StrictInt = Field(50, ge=0)
    top_p: StrictFloat = Field(1.0, ge=0.0, le=1.0)
    repetition_penalty: StrictFloat = Field(1.0, ge=0.1, le=10.0)
    min_p: StrictFloat | None = Field(None, ge=0.0, le=1.0)
    min_new_tokens: StrictInt | None = Field(None, ge=1)
    preset: Literal["deterministic", "standard", "creative", "factual"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _expand_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("preset"), str) and data["preset"] in DECODER_PRESETS:
            return {**DECODER_PRESETS[data["preset"]], **data}
        return data

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0 or not self.do_sample


class WarmupConfig(_Strict):
    enabled: bool = True
    n_warmup: StrictInt = Field(1, ge=1, description="untimed batches run before the measured window")
    # The original forced >= 30 s (MLPerf Power's GPU floor); on CPUs that only adds waiting, so 0 is allowed.
    thermal_floor_seconds: StrictFloat = Field(0.0, ge=0.0)


class BaselineConfig(_Strict):
    enabled: bool = True
    duration_seconds: StrictFloat = Field(30.0, ge=5.0, le=120.0)


_GPU_INDEX_LIST: TypeAdapter[list[int]] = TypeAdapter(list[Annotated[StrictInt, Field(ge=0)]])


class EnergyConfig(_Strict):
    """``meter``: None leaves the choice to ``--llem-meter`` / the ``llem_meter`` ini key (default auto).
    ``gpu_indices``: the GPUs measured, CUDA numbering as this process sees it (after ``CUDA_VISIBLE_DEVICES``), or
    ``all`` visible; None = the GPUs the engine uses (backends/placement.py)."""

    meter: Literal["auto", "zeus", "none"] | None = None
    gpu_indices: list[Annotated[StrictInt, Field(ge=0)]] | Literal["all"] | None = None

    @field_validator("gpu_indices", mode="wrap")
    @classmethod
    def _all_or_indices(cls, value: Any, handler: Any) -> Any:
        """One error naming what is allowed, not one per member of the union."""
        if value is None or value == "all":
            return value
        if isinstance(value, str):
            raise PydanticCustomError(
                "gpu_indices", "must be a list of GPU indices (CUDA numbering) or all, not '{value}'", {"value": value}
            )
        return _GPU_INDEX_LIST.validate_python(value)


class ExperimentConfig(_Strict):
    """One fully specified experiment: what to run, on which backend, with which settings."""

    id: str | None = Field(None, pattern=r"^[\w.+-]+$", description="the experiment's own test id (not hashed)")
    model: str = Field(min_length=1)
    backend: str = "pytorch"
    n: StrictInt = Field(100, ge=1, description="number of prompts")
    # Frozen defaults are shared rather than rebuilt (and revalidated) for every experiment of a large sweep.
    dataset: DatasetConfig = Field(default=DatasetConfig())
    precision: Precision = "bf16"
    random_seed: StrictInt = 42
    max_input_tokens: StrictInt = Field(512, ge=1)
    max_output_tokens: StrictInt = Field(128, ge=1)
    decoder: DecoderConfig = Field(default=DecoderConfig())
    warmup: WarmupConfig = Field(default=WarmupConfig())
    baseline: BaselineConfig = Field(default=BaselineConfig())
    energy: EnergyConfig = Field(default=EnergyConfig())
    gpu: GpuConfig | None = None
    pytorch: PyTorchConfig | None = None
    vllm: VLLMConfig | None = None
    passthrough_kwargs: dict[str, JsonValue] | None = None
    chat_template: Literal["auto", "none"] = Field(
        "auto", description="auto: each prompt as one user message through the tokenizer's chat template, if it has one"
    )
    phases: bool = Field(False, description="also measure the prefill alone, and split energy and time by phase")
    scenario: Scenario = Field("offline", description="offline: every prompt at once; serving: requests over time")
    serving: ServingConfig | None = None

    @field_validator("gpu")
    @classmethod
    def _gpu_setting_something(cls, value: GpuConfig | None) -> GpuConfig | None:
        """``gpu: {}`` (or a sweep's ``null``) changes nothing: the same experiment, and config hash, as no section."""
        return value if value is not None and value.sets_anything else None

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if value not in backend_names():
            expected = " or ".join(repr(n) for n in backend_names())
            raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": expected})
        return value

    @model_validator(mode="after")
    def _cross_field(self, info: ValidationInfo) -> ExperimentConfig:
        for section in BACKENDS:
            if section != self.backend and getattr(self, section) is not None:
                raise invalid_combination(f"{section}: a {section} section is given but backend is {self.backend}")
        if self.passthrough_kwargs:
            clashes = sorted(set(self.passthrough_kwargs) & set(type(self).model_fields))
            if clashes:
                raise invalid_combination(f"passthrough_kwargs: repeats experiment fields {', '.join(clashes)}")
        policy = self.dataset.output_policy
        if policy is not None and self.decoder.min_new_tokens is not None:
            raise invalid_combination(
                f"decoder.min_new_tokens: dataset.output_len ({policy}) already decides how many tokens each prompt "
                "generates"
            )
        if policy is not None and self.vllm is not None:
            for section, key in (("sampling", "max_tokens"), ("sampling", "min_tokens"), ("sampling", "ignore_eos"),
                                 ("beam_search", "max_tokens"), ("beam_search", "ignore_eos")):  # fmt: skip
                if getattr(getattr(self.vllm, section), key, None) is not None:
                    raise invalid_combination(
                        f"vllm.{section}.{key}: dataset.output_len ({policy}) already decides how many tokens each "
                        "prompt generates"
                    )
        if self.gpu is not None and self.gpu.sets_anything and context_platform(info) == "cpu":
            raise invalid_combination("gpu: no GPU to set (this machine runs the engine on the CPU)")
        problem = precision_problem(self.backend, self.precision, context_platform(info))
        if problem:
            raise invalid_combination(problem)
        engine_options = [name for name in ("pytorch", "passthrough_kwargs") if getattr(self, name)]
        if self.vllm is not None and self.vllm.engine is not None:
            engine_options.insert(0, "vllm.engine")
        problem = serving_problem(
            self.scenario, self.serving, self.backend, self.phases, engine_options, self.vllm, self.n
        )
        if problem:
            raise invalid_combination(problem)
        if self.vllm is not None and self.vllm.beam_search is not None:
            problem = self._beam_search_problem(self.vllm.beam_search)
            if problem:
                raise invalid_combination(problem)
        return self

    def _beam_search_problem(self, beam: VLLMBeamSearchConfig) -> str | None:
        """Settings vLLM's beam search would silently ignore (its BeamSearchParams have no place for them)."""
        if beam.early_stopping is not None:
            return "vllm.beam_search.early_stopping: vLLM's beam search has no early stopping setting"
        if self.decoder.min_new_tokens is not None:
            return "decoder.min_new_tokens: vLLM's beam search cannot force a minimum length (use ignore_eos)"
        if self.decoder.repetition_penalty != 1.0:
            return "decoder.repetition_penalty: vLLM's beam search applies no repetition penalty"
        if self.dataset.output_policy == "reference":
            return "dataset.output_len: vLLM's beam search takes one length for every prompt, not each one's reference"
        return None

    @property
    def batch_size(self) -> int:
        return (self.pytorch.batch_size if self.pytorch else None) or 1

    def identity(self) -> dict[str, Any]:
        """What makes this experiment this experiment: every setting, defaults included, but not its display id."""
        return copy.deepcopy(self.identity_fields)

    @cached_property
    def _identity(self) -> tuple[dict[str, Any], str]:
        """``identity()`` and its canonical JSON, section by section: the sections of a sweep's experiments repeat,
        so each distinct one is dumped once (``_dump_section``)."""
        fields: dict[str, Any] = {}
        pieces: dict[str, str] = {}
        for name in _IDENTITY_FIELDS:
            value = getattr(self, name)
            if name in _NEW_WITH_DEFAULT and value == _NEW_WITH_DEFAULT[name]:
                continue  # at its default a field added later is left out, so earlier experiments keep their hash
            if isinstance(value, BaseModel):
                fields[name], pieces[name] = _dump_section(value)
            elif value is None or type(value) in _PLAIN:  # text, integers and None are their own JSON-mode dump
                fields[name], pieces[name] = value, _plain_json(value)
            else:
                fields[name] = self.model_dump(mode="json", include={name})[name]
                pieces[name] = _canonical(fields[name])
        return fields, "{" + ", ".join(
            _IDENTITY_KEYS[name] + pieces[name] for name in _SORTED_IDENTITY if name in pieces
        ) + "}"

    @property
    def serving_settings(self) -> ServingConfig:
        """The ``serving:`` section, or its defaults when none is given."""
        return self.serving or ServingConfig()

    @property
    def identity_fields(self) -> dict[str, Any]:
        """``identity()`` computed once, in field order; shared (sections too), so never mutate it."""
        return self._identity[0]

    @property
    def identity_json(self) -> str:
        """``identity()`` as canonical JSON: ``json.dumps(identity(), sort_keys=True)``, what hashes are over."""
        return self._identity[1]


_PLAIN = (str, int, bool)
# Fields added after experiments were first hashed, with the value that means "as before".
_NEW_WITH_DEFAULT: dict[str, Any] = {"scenario": "offline", "serving": None, "gpu": None}


@lru_cache(maxsize=4096, typed=True)  # typed: 1 and True are equal keys otherwise, but "1" and "true" in JSON
def _plain_json(value: str | int | bool | None) -> str:
    return _canonical(value)


_SECTION_CACHE_SIZE = 4096
_sections: dict[tuple[type, bytes], tuple[dict[str, Any], str]] = {}


def _dump_section(section: BaseModel) -> tuple[dict[str, Any], str]:
    """A section's JSON-mode dump and its canonical JSON, made once per distinct section. Keyed by the section's type
    and its own JSON (pydantic's serializer, ~1 µs), which tells 1 from 1.0 and from true, as the dump does."""
    key = (type(section), to_json(section))
    found = _sections.get(key)
    if found is None:
        if len(_sections) >= _SECTION_CACHE_SIZE:
            _sections.clear()
        dumped = section.model_dump(mode="json")
        found = _sections[key] = (dumped, _canonical(dumped))
    return found


_IDENTITY_FIELDS = tuple(name for name in ExperimentConfig.model_fields if name != "id")
_SORTED_IDENTITY = sorted(_IDENTITY_FIELDS)
_IDENTITY_KEYS = {name: json.dumps(name) + ": " for name in _IDENTITY_FIELDS}  # '"name": ', as json.dumps writes it
_canonical = json.JSONEncoder(sort_keys=True).encode  # json.dumps(value, sort_keys=True), without a new encoder


class ExecutionConfig(_Strict):
    """How a study's items are ordered and paced. Defaults are conservative; the plugin's effective defaults differ.

    Its numbers are as strict as an experiment's; ini keys arrive as text, so that layer is validated with
    ``model_validate(values, strict=False)``, which parses ``"3"`` and still refuses ``"true"`` and ``"2.5"`` for ints.
    """

    n_cycles: StrictInt = Field(1, ge=1)
    cycle_order: CycleOrder = CycleOrder.SEQUENTIAL
    config_gap_seconds: StrictFloat | None = Field(None, ge=0.0, description="pause between consecutive items")
    cycle_gap_seconds: StrictFloat | None = Field(
        None, ge=0.0, description="pause where one cycle ends and the next starts"
    )
    shuffle_seed: StrictInt | None = None
    isolation: Literal["process", "none"] = Field("process", description="each item in a fresh child process, or not")
    timeout_seconds: StrictFloat | None = Field(None, gt=0.0, description="per item (isolation: process); then SIGKILL")


class StudyConfig(_Strict):
    """A loaded study: its unique experiments (before cycling), how to execute them, and what was skipped."""

    name: str | None = None
    experiments: list[ExperimentConfig] = Field(min_length=1)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    study_design_hash: str | None = None
    skipped_configs: list[dict[str, Any]] = Field(default_factory=list)
