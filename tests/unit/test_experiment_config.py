"""ExperimentConfig: field rules, decoder presets, dataset forms and the cross-field ``invalid_combination`` rules."""

from __future__ import annotations

import copy
import itertools
import types
import typing
from collections.abc import Iterator
from typing import Annotated, Any, Union

import pytest
from pydantic import BaseModel, ValidationError

from pytest_llem import ExperimentConfig, StudyConfig
from pytest_llem.config import models
from pytest_llem.config.messages import describe, key_path

INVALID_COMBINATION = "invalid_combination"


def make(platform: str = "cuda", **fields: Any) -> ExperimentConfig:
    """A validated experiment; the platform is always explicit so the tests do not depend on this machine."""
    return ExperimentConfig.model_validate({"model": "org/model", **fields}, context={"platform": platform})


def errors_of(platform: str = "cuda", **fields: Any) -> list[dict[str, Any]]:
    with pytest.raises(ValidationError) as excinfo:
        make(platform, **fields)
    return list(excinfo.value.errors())


def assert_invalid_combination(platform: str = "cuda", *, mentions: str, **fields: Any) -> None:
    errors = errors_of(platform, **fields)
    assert [e["type"] for e in errors] == [INVALID_COMBINATION], errors
    assert mentions in errors[0]["msg"]


# --------------------------------------------------------------------------------------------------------- plain fields


def test_defaults() -> None:
    exp = make()
    assert exp.backend == "pytorch"
    assert exp.n == 100
    assert exp.precision == "bf16"
    assert exp.random_seed == 42
    assert exp.max_input_tokens == 512
    assert exp.max_output_tokens == 128
    assert exp.pytorch is None
    assert exp.vllm is None
    assert exp.dataset.synthetic
    assert exp.batch_size == 1


def test_model_is_required() -> None:
    with pytest.raises(ValidationError) as excinfo:
        ExperimentConfig.model_validate({}, context={"platform": "cuda"})
    assert excinfo.value.errors()[0]["type"] == "missing"
    assert excinfo.value.errors()[0]["loc"] == ("model",)


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"precison": "fp16"}, ("precison",)),
        ({"decoder": {"temprature": 0.5}}, ("decoder", "temprature")),
        ({"pytorch": {"batchsize": 4}}, ("pytorch", "batchsize")),
        ({"backend": "vllm", "vllm": {"engines": {}}}, ("vllm", "engines")),
        ({"warmup": {"n_warmups": 2}}, ("warmup", "n_warmups")),
        ({"model_name": "gpt2"}, ("model_name",)),
    ],
)
def test_extra_keys_forbidden(fields: dict[str, Any], loc: tuple[str, ...]) -> None:
    errors = errors_of(**fields)
    assert errors[0]["type"] == "extra_forbidden"
    assert errors[0]["loc"] == loc


def test_vllm_engine_passes_unknown_keys_through() -> None:
    exp = make(backend="vllm", vllm={"engine": {"max_num_seqs": 8, "seed_offset": 3}})
    assert exp.vllm is not None and exp.vllm.engine is not None
    assert exp.vllm.engine.max_num_seqs == 8
    assert exp.vllm.engine.model_extra == {"seed_offset": 3}


@pytest.mark.parametrize(
    "fields", [{"n": 0}, {"precision": "int8"}, {"backend": "tensorrt"}, {"model": ""}, {"id": "has space"}]
)
def test_field_rules(fields: dict[str, Any]) -> None:
    errors = errors_of(**fields)
    assert errors[0]["type"] != INVALID_COMBINATION


def test_batch_size_property() -> None:
    assert make(pytorch={"batch_size": 8}).batch_size == 8
    assert make(pytorch={}).batch_size == 1


# ------------------------------------------------------------------------------------------------------------- decoder


def test_decoder_preset_expands() -> None:
    decoder = make(decoder={"preset": "creative"}).decoder
    assert decoder.temperature == 0.8
    assert decoder.do_sample is True
    assert decoder.top_p == 0.9
    assert decoder.repetition_penalty == 1.1
    assert decoder.preset == "creative"


def test_decoder_explicit_keys_win_over_preset() -> None:
    decoder = make(decoder={"preset": "deterministic", "temperature": 0.5}).decoder
    assert decoder.temperature == 0.5
    assert decoder.do_sample is False  # still from the preset

    decoder = make(decoder={"preset": "standard", "top_p": 0.5, "do_sample": False}).decoder
    assert decoder.temperature == 1.0
    assert decoder.top_p == 0.5
    assert decoder.do_sample is False


def test_decoder_unknown_preset_rejected() -> None:
    errors = errors_of(decoder={"preset": "wild"})
    assert errors[0]["loc"] == ("decoder", "preset")


@pytest.mark.parametrize(
    ("decoder", "greedy"),
    [
        ({}, False),
        ({"temperature": 0.0}, True),
        ({"do_sample": False}, True),
        ({"temperature": 0.7, "do_sample": True}, False),
        ({"preset": "deterministic"}, True),
        ({"preset": "standard"}, False),
    ],
)
def test_decoder_greedy(decoder: dict[str, Any], greedy: bool) -> None:
    assert make(decoder=decoder).decoder.greedy is greedy


# ------------------------------------------------------------------------------------------------------------- dataset


def test_dataset_synthetic_string() -> None:
    dataset = make(dataset="synthetic").dataset
    assert dataset.synthetic
    assert dataset.path is None
    assert dataset == make().dataset


def test_dataset_jsonl_string() -> None:
    dataset = make(dataset="prompts/x.jsonl").dataset
    assert not dataset.synthetic
    assert dataset.path == "prompts/x.jsonl"


def test_dataset_mapping() -> None:
    dataset = make(dataset={"input_len": 16, "seed": 3}).dataset
    assert dataset.synthetic
    assert dataset.input_len == 16
    assert dataset.seed == 3


@pytest.mark.parametrize("value", ["prompts.txt", "aienergyscore", "x.yaml"])
def test_dataset_non_jsonl_string_rejected(value: str) -> None:
    errors = errors_of(dataset=value)
    assert errors[0]["loc"][0] == "dataset"
    assert errors[0]["type"] != INVALID_COMBINATION
    assert ".jsonl" in errors[0]["msg"]


# ------------------------------------------------------------------------------------------------- cross-field rules


@pytest.mark.parametrize(
    ("fields", "mentions"),
    [
        ({"backend": "pytorch", "vllm": {"engine": {"max_num_seqs": 4}}}, "vllm"),
        ({"backend": "vllm", "pytorch": {"batch_size": 4}}, "pytorch"),
    ],
)
def test_section_must_match_backend(fields: dict[str, Any], mentions: str) -> None:
    assert_invalid_combination(mentions=mentions, **fields)


def test_matching_sections_are_valid() -> None:
    assert make(backend="pytorch", pytorch={"batch_size": 4}).pytorch is not None
    assert make(backend="vllm", vllm={"engine": {"max_num_seqs": 4}}).vllm is not None


def test_4bit_and_8bit_together() -> None:
    assert_invalid_combination(mentions="load_in_8bit", pytorch={"load_in_4bit": True, "load_in_8bit": True})


def test_torch_compile_mode_needs_torch_compile() -> None:
    assert_invalid_combination(mentions="torch_compile", pytorch={"torch_compile_mode": "max-autotune"})
    assert_invalid_combination(
        mentions="torch_compile", pytorch={"torch_compile_mode": "max-autotune", "torch_compile": False}
    )
    assert make(pytorch={"torch_compile_mode": "max-autotune", "torch_compile": True}).pytorch is not None


@pytest.mark.parametrize(
    ("key", "value"),
    [("bnb_4bit_compute_dtype", "bfloat16"), ("bnb_4bit_quant_type", "nf4"), ("bnb_4bit_use_double_quant", True)],
)
def test_bnb_4bit_options_need_load_in_4bit(key: str, value: Any) -> None:
    assert_invalid_combination(mentions=key, pytorch={key: value})
    assert make(pytorch={key: value, "load_in_4bit": True}).pytorch is not None


def test_cache_implementation_needs_use_cache() -> None:
    assert_invalid_combination(mentions="use_cache", pytorch={"cache_implementation": "static", "use_cache": False})
    assert make(pytorch={"cache_implementation": "static", "use_cache": True}).pytorch is not None
    assert make(pytorch={"cache_implementation": "static"}).pytorch is not None


@pytest.mark.parametrize("key", ["load_in_4bit", "load_in_8bit"])
def test_bitsandbytes_needs_cuda(key: str) -> None:
    assert_invalid_combination("cpu", mentions=key, pytorch={key: True})
    assert make("cuda", pytorch={key: True}).pytorch is not None


@pytest.mark.parametrize("attention", ["flash_attention_2", "flash_attention_3"])
def test_flash_attention_needs_cuda(attention: str) -> None:
    assert_invalid_combination("cpu", mentions=attention, pytorch={"attn_implementation": attention})
    assert make("cuda", pytorch={"attn_implementation": attention}).pytorch is not None
    assert make("cpu", pytorch={"attn_implementation": "sdpa"}).pytorch is not None


def test_vllm_kv_cache_sized_twice() -> None:
    assert_invalid_combination(
        mentions="kv_cache_memory_bytes",
        backend="vllm",
        vllm={"engine": {"kv_cache_memory_bytes": 2**30, "gpu_memory_utilization": 0.5}},
    )
    assert make(backend="vllm", vllm={"engine": {"kv_cache_memory_bytes": 2**30}}).vllm is not None


@pytest.mark.parametrize(
    ("engine", "mentions"),
    [
        ({"tensor_parallel_size": 64}, "64 CPU workers (tensor x pipeline parallel) need as many NUMA nodes"),
        ({"tensor_parallel_size": 8, "pipeline_parallel_size": 8}, "64 CPU workers"),
    ],
)
def test_vllm_engine_options_a_cpu_cannot_honour(engine: dict[str, Any], mentions: str) -> None:
    assert_invalid_combination("cpu", mentions=mentions, backend="vllm", vllm={"engine": engine})
    assert make("cuda", backend="vllm", vllm={"engine": engine}).vllm is not None  # a GPU machine runs them


def test_vllm_beam_search_and_sampling() -> None:
    assert_invalid_combination(
        mentions="beam_search", backend="vllm", vllm={"beam_search": {"beam_width": 4}, "sampling": {"n": 1}}
    )
    assert make(backend="vllm", vllm={"beam_search": {"beam_width": 4}}).vllm is not None


@pytest.mark.parametrize(
    ("fields", "mentions"),
    [
        ({"vllm": {"beam_search": {"beam_width": 2, "early_stopping": True}}}, "has no early stopping setting"),
        ({"vllm": {"beam_search": {"beam_width": 2}}, "decoder": {"min_new_tokens": 4}}, "cannot force a minimum"),
        ({"vllm": {"beam_search": {"beam_width": 2}}, "decoder": {"repetition_penalty": 1.2}}, "no repetition"),
    ],
)
def test_vllm_beam_search_refuses_what_it_would_ignore(fields: dict[str, Any], mentions: str) -> None:
    assert_invalid_combination(mentions=mentions, backend="vllm", **fields)
    ignoring_eos = make(backend="vllm", vllm={"beam_search": {"beam_width": 2, "ignore_eos": True}})
    assert ignoring_eos.vllm is not None and ignoring_eos.vllm.beam_search is not None


def test_passthrough_kwargs_must_not_repeat_fields() -> None:
    assert_invalid_combination(mentions="precision", passthrough_kwargs={"precision": "fp16", "low_cpu_mem_usage": 1})
    assert make(passthrough_kwargs={"low_cpu_mem_usage": True}).passthrough_kwargs == {"low_cpu_mem_usage": True}


@pytest.mark.parametrize(
    ("backend", "platform", "precision", "runs"),
    [
        ("vllm", "cuda", "fp32", True),
        ("vllm", "cuda", "fp16", True),
        ("vllm", "cuda", "bf16", True),
        ("vllm", "cpu", "fp16", True),  # vLLM's CpuPlatform.supported_dtypes on x86 and aarch64
        ("vllm", "cpu", "fp32", True),
        ("vllm", "cpu", "bf16", True),
        ("pytorch", "cpu", "fp32", True),
        ("pytorch", "cpu", "fp16", True),
        ("pytorch", "cpu", "bf16", True),
        ("pytorch", "cuda", "fp32", True),
        ("pytorch", "cuda", "fp16", True),
        ("pytorch", "cuda", "bf16", True),
    ],
)
def test_precision_per_backend_and_platform(backend: str, platform: str, precision: str, runs: bool) -> None:
    if runs:
        assert make(platform, backend=backend, precision=precision).precision == precision
    else:
        assert_invalid_combination(platform, mentions=precision, backend=backend, precision=precision)


def test_identity_excludes_id_and_includes_defaults() -> None:
    identity = make(id="mine", n=3).identity()
    assert "id" not in identity
    assert identity["n"] == 3
    assert identity["precision"] == "bf16"
    assert identity == make(id="other", n=3).identity()


# ------------------------------------------------------------------------------------------------------ strict numbers
# Every int and float field of every model, found by walking the models from StudyConfig down, so that a field (or a
# model) added later is covered without touching this list.

Path_ = tuple[str | int, ...]


def _number_fields(annotation: Any, path: Path_, seen: set[type[BaseModel]]) -> Iterator[tuple[Path_, str]]:
    """(path, "int" | "float") of every number reachable from ``annotation``, written at ``path``."""
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(annotation):
            yield from _number_fields(arg, path, seen)
    elif origin is list:
        yield from _number_fields(typing.get_args(annotation)[0], (*path, 0), seen)
    elif annotation is int:  # not bool: ``bool`` fields are not numbers
        yield path, "int"
    elif annotation is float:
        yield path, "float"
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        seen.add(annotation)
        for name, field in annotation.model_fields.items():
            yield from _number_fields(field.annotation, (*path, name), seen)


REACHED: set[type[BaseModel]] = set()
# serving.request_rate also takes inf, and its one message says so (tests/unit/test_serving.py).
OWN_MESSAGE = {"experiments[0].serving.request_rate"}
NUMBER_FIELDS = sorted(
    (f for f in _number_fields(StudyConfig, (), REACHED) if key_path(f[0]) not in OWN_MESSAGE),
    key=lambda found: key_path(found[0]),
)
# The smallest valid study; a vllm section needs backend: vllm, or the section itself would be the error.
MINIMAL_STUDY: dict[str, Any] = {"experiments": [{"model": "org/model"}]}


def _study_with(path: Path_, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(MINIMAL_STUDY)
    if path[:3] == ("experiments", 0, "vllm"):
        data["experiments"][0]["backend"] = "vllm"
    node: Any = data
    for part, following in itertools.pairwise(path):
        node = node[part] if isinstance(part, int) else node.setdefault(part, [] if isinstance(following, int) else {})
    last = path[-1]
    if isinstance(last, int):
        node[last:] = [value]
    else:
        node[last] = value
    return data


def test_the_walk_reaches_every_model_and_number() -> None:
    defined = {
        obj
        for obj in vars(models).values()
        if isinstance(obj, type) and issubclass(obj, BaseModel) and obj.__module__ == models.__name__
    }
    assert defined - REACHED - {models._Strict} == set()
    found = {key_path(path) for path, _ in NUMBER_FIELDS}
    assert {
        "experiments[0].n",
        "experiments[0].decoder.temperature",
        "experiments[0].energy.gpu_indices[0]",
        "experiments[0].vllm.engine.gpu_memory_utilization",
        "experiments[0].vllm.sampling.n",
        "execution.n_cycles",
        "execution.timeout_seconds",
    } <= found


@pytest.mark.parametrize(("path", "kind"), NUMBER_FIELDS, ids=[key_path(path) for path, _ in NUMBER_FIELDS])
def test_numbers_refuse_booleans_strings_and_fractions(path: Path_, kind: str) -> None:
    wanted = {"int": "a valid integer", "float": "a valid number"}[kind]
    refused: list[tuple[Any, str]] = [(True, "true"), (False, "false"), ("3", "the string '3'")]
    if kind == "int":
        refused.append((2.5, "2.5"))
    for value, shown in refused:
        with pytest.raises(ValidationError) as excinfo:
            StudyConfig.model_validate(_study_with(path, value), context={"platform": "cuda"})
        (error,) = excinfo.value.errors(include_url=False)
        assert (error["type"], error["loc"]) == (f"{kind}_type", path), value
        assert describe(error).startswith(f"input should be {wanted}, got {shown}"), describe(error)


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"baseline": {"duration_seconds": 10}}, ("baseline", "duration_seconds")),
        ({"decoder": {"temperature": 1}}, ("decoder", "temperature")),
        ({"warmup": {"thermal_floor_seconds": 0}}, ("warmup", "thermal_floor_seconds")),
        (
            {"backend": "vllm", "vllm": {"engine": {"gpu_memory_utilization": 1}}},
            ("vllm", "engine", "gpu_memory_utilization"),
        ),
    ],
)
def test_float_fields_take_integers(fields: dict[str, Any], path: tuple[str, ...]) -> None:
    node: Any = make(**fields)
    expected: Any = fields
    for part in path:
        node, expected = getattr(node, part), expected[part]
    assert node == expected
    assert type(node) is float


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"passthrough_kwargs": {"num_workers": True}}, ("passthrough_kwargs", "num_workers")),
        ({"backend": "vllm", "vllm": {"engine": {"seed_offset": "3"}}}, ("vllm", "engine", "seed_offset")),
        ({"backend": "vllm", "vllm": {"sampling": {"logprobs": True}}}, ("vllm", "sampling", "logprobs")),
    ],
)
def test_free_form_values_are_passed_on_as_written(fields: dict[str, Any], path: tuple[str, ...]) -> None:
    node: Any = make(**fields).model_dump()
    expected: Any = fields
    for part in path:
        node, expected = node[part], expected[part]
    assert node == expected and type(node) is type(expected)


@pytest.mark.parametrize(
    "vllm",
    [{"sampling": {"max_tokens": 10}}, {"sampling": {"ignore_eos": False}}, {"beam_search": {"max_tokens": 10}}],
)
def test_vllm_length_settings_cannot_contradict_the_datasets_output_len(vllm: dict[str, Any]) -> None:
    assert_invalid_combination(
        mentions="dataset.output_len (8) already decides",
        backend="vllm",
        dataset={"output_len": 8},
        vllm=vllm,
    )


def test_output_len_and_min_new_tokens_exclude_each_other_and_reference_needs_sharegpt() -> None:
    assert_invalid_combination(
        mentions="decoder.min_new_tokens: dataset.output_len (reference)",
        dataset="sharegpt",
        decoder={"min_new_tokens": 4},
    )
    errors = errors_of(dataset={"output_len": "reference"})
    assert "only sharegpt has them" in errors[0]["msg"]
