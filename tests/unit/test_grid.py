"""expand_grid: the original's grid tests (spec §2.8 items 14–26) plus one test per DESIGN "Grid rules" fix."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import yaml

from pytest_llem import ConfigError, ExperimentConfig, SkippedConfig, expand_grid
from pytest_llem.study.grid import ConfigWarning

MODEL = "org/model"


def expand(raw: dict[str, Any], platform: str = "cuda", study_path: Path | None = None):
    return expand_grid(raw, study_path, platform=platform)  # type: ignore[arg-type]


def write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------------------- sweeps


def test_universal_sweep_is_a_cartesian_product() -> None:
    valid, skipped = expand({"model": MODEL, "sweep": {"precision": ["fp16", "bf16"], "n": [10, 20]}})
    assert skipped == []
    assert len(valid) == 4
    assert {(e.precision, e.n) for e in valid} == set(itertools.product(["fp16", "bf16"], [10, 20]))
    assert all(isinstance(e, ExperimentConfig) and e.model == MODEL for e in valid)


def test_last_sweep_key_varies_fastest() -> None:
    valid, _ = expand({"model": MODEL, "sweep": {"precision": ["fp16", "bf16"], "n": [10, 20, 30]}})
    assert [(e.precision, e.n) for e in valid] == [
        ("fp16", 10),
        ("fp16", 20),
        ("fp16", 30),
        ("bf16", 10),
        ("bf16", 20),
        ("bf16", 30),
    ]
    valid, _ = expand({"model": MODEL, "sweep": {"n": [10, 20], "precision": ["fp16", "bf16"]}})
    assert [(e.n, e.precision) for e in valid] == [(10, "fp16"), (10, "bf16"), (20, "fp16"), (20, "bf16")]


def test_scalar_sweep_value_is_one_point() -> None:
    valid, _ = expand({"model": MODEL, "sweep": {"precision": "fp16", "n": [1, 2]}})
    assert [(e.precision, e.n) for e in valid] == [("fp16", 1), ("fp16", 2)]


def test_backend_scoped_key_lands_in_its_section() -> None:
    valid, skipped = expand({"model": MODEL, "sweep": {"pytorch.batch_size": [1, 8]}})
    assert skipped == []
    assert [e.backend for e in valid] == ["pytorch", "pytorch"]
    assert [e.pytorch.batch_size for e in valid if e.pytorch] == [1, 8]
    assert [e.batch_size for e in valid] == [1, 8]


def test_scoped_key_merges_into_fixed_section() -> None:
    raw = {"model": MODEL, "pytorch": {"attn_implementation": "sdpa"}, "sweep": {"pytorch.batch_size": [2, 4]}}
    valid, _ = expand(raw)
    assert [(e.pytorch.attn_implementation, e.pytorch.batch_size) for e in valid if e.pytorch] == [
        ("sdpa", 2),
        ("sdpa", 4),
    ]


MULTI_SWEEP = {"precision": ["fp16", "bf16"], "pytorch.batch_size": [1, 8], "vllm.engine.max_num_seqs": [64, 256]}


def _summary(experiments: list[ExperimentConfig]) -> list[tuple[Any, ...]]:
    out = []
    for e in experiments:
        batch = e.pytorch.batch_size if e.pytorch else None
        seqs = e.vllm.engine.max_num_seqs if e.vllm and e.vllm.engine else None
        out.append((e.backend, e.precision, batch, seqs))
    return out


def test_multi_backend_scoped_sweep() -> None:
    valid, skipped = expand({"model": MODEL, "backend": ["pytorch", "vllm"], "sweep": MULTI_SWEEP}, platform="cuda")
    assert skipped == []
    assert len(valid) == 8
    pytorch = [e for e in valid if e.backend == "pytorch"]
    vllm = [e for e in valid if e.backend == "vllm"]
    assert len(pytorch) == 4 and len(vllm) == 4
    assert all(e.vllm is None and e.pytorch is not None for e in pytorch)
    assert all(e.pytorch is None and e.vllm is not None for e in vllm)
    assert _summary(valid) == [
        ("pytorch", "fp16", 1, None),
        ("pytorch", "fp16", 8, None),
        ("pytorch", "bf16", 1, None),
        ("pytorch", "bf16", 8, None),
        ("vllm", "fp16", None, 64),
        ("vllm", "fp16", None, 256),
        ("vllm", "bf16", None, 64),
        ("vllm", "bf16", None, 256),
    ]


def test_backend_swept_inside_sweep_gives_independent_grids() -> None:
    top_level, _ = expand({"model": MODEL, "backend": ["pytorch", "vllm"], "sweep": MULTI_SWEEP}, platform="cuda")
    swept, skipped = expand({"model": MODEL, "sweep": {"backend": ["pytorch", "vllm"], **MULTI_SWEEP}}, platform="cuda")
    assert skipped == []
    assert len(swept) == 8
    assert _summary(swept) == _summary(top_level)
    assert [e.identity() for e in swept] == [e.identity() for e in top_level]


def test_backend_sections_of_other_backends_are_not_inherited() -> None:
    raw = {
        "model": MODEL,
        "backend": ["pytorch", "vllm"],
        "pytorch": {"batch_size": 4},
        "vllm": {"engine": {"max_num_seqs": 16}},
    }
    valid, skipped = expand(raw, platform="cuda")
    assert skipped == []
    assert _summary(valid) == [("pytorch", "bf16", 4, None), ("vllm", "bf16", None, 16)]


def test_non_backend_dotted_key_is_a_nested_field_path() -> None:
    valid, skipped = expand({"model": MODEL, "backend": "pytorch", "sweep": {"decoder.temperature": [0.0, 1.0]}})
    assert skipped == []
    assert [e.backend for e in valid] == ["pytorch", "pytorch"]
    assert [e.decoder.temperature for e in valid] == [0.0, 1.0]


def test_non_backend_dotted_key_keeps_its_axis_next_to_scoped_keys() -> None:
    raw = {"model": MODEL, "sweep": {"pytorch.batch_size": [1, 8], "decoder.temperature": [0.0, 1.0]}}
    valid, skipped = expand(raw)
    assert skipped == []
    assert [(e.pytorch.batch_size, e.decoder.temperature) for e in valid if e.pytorch] == [
        (1, 0.0),
        (1, 1.0),
        (8, 0.0),
        (8, 1.0),
    ]


def test_dotted_key_merges_with_fixed_nested_fields() -> None:
    raw = {"model": MODEL, "decoder": {"preset": "deterministic", "top_k": 5}, "sweep": {"decoder.temperature": [0.5]}}
    (exp,), _ = expand(raw)
    assert exp.decoder.temperature == 0.5
    assert exp.decoder.top_k == 5
    assert exp.decoder.do_sample is False


def test_four_segment_scoped_key_unflattens_fully() -> None:
    raw = {"model": MODEL, "backend": "vllm", "sweep": {"vllm.engine.attention.backend": ["FLASH_ATTN", "XFORMERS"]}}
    valid, skipped = expand(raw, platform="cuda")
    assert skipped == []
    engines = [e.vllm.engine for e in valid if e.vllm]
    assert len(engines) == 2
    assert [engine.model_extra for engine in engines if engine] == [
        {"attention": {"backend": "FLASH_ATTN"}},
        {"attention": {"backend": "XFORMERS"}},
    ]
    dumped = valid[0].model_dump()["vllm"]["engine"]
    assert "attention.backend" not in dumped
    assert dumped["attention"] == {"backend": "FLASH_ATTN"}


@pytest.mark.parametrize("backend", ["pytorch", ["pytorch"]])
def test_scoped_key_for_backend_not_run_is_an_error(backend: Any) -> None:
    raw = {"model": MODEL, "backend": backend, "sweep": {"vllm.engine.max_num_seqs": [64, 256]}}
    with pytest.raises(ConfigError) as excinfo:
        expand(raw)
    assert excinfo.value.key == "sweep.vllm.engine.max_num_seqs"
    assert "sweep.vllm.engine.max_num_seqs" in str(excinfo.value)


def test_scoped_key_for_backend_not_swept_is_an_error() -> None:
    raw = {"model": MODEL, "sweep": {"backend": ["vllm"], "pytorch.batch_size": [1, 2]}}
    with pytest.raises(ConfigError) as excinfo:
        expand(raw)
    assert excinfo.value.key == "sweep.pytorch.batch_size"


def test_scoped_keys_alone_choose_the_backend() -> None:
    valid, _ = expand({"model": MODEL, "sweep": {"vllm.engine.max_num_seqs": [8, 16]}}, platform="cuda")
    assert [e.backend for e in valid] == ["vllm", "vllm"]


@pytest.mark.parametrize("key", ["n", "decoder.temperature", "pytorch.batch_size"])
def test_empty_sweep_list_names_the_key(key: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        expand({"model": MODEL, "sweep": {key: []}})
    assert excinfo.value.key == f"sweep.{key}"


def test_wrong_sweep_value_names_the_sweep_key() -> None:
    with pytest.raises(ConfigError) as excinfo:
        expand({"model": MODEL, "sweep": {"n": [10, "many"]}})
    assert excinfo.value.key == "sweep.n"


# ---------------------------------------------------------------------------------------------------- explicit entries


def test_explicit_entries_keep_list_order() -> None:
    valid, _ = expand({"model": MODEL, "experiments": [{"n": 30}, {"n": 10}, {"n": 20}]})
    assert [e.n for e in valid] == [30, 10, 20]


def test_entries_come_after_sweep_points() -> None:
    raw = {"model": MODEL, "sweep": {"n": [1, 2]}, "experiments": [{"n": 50, "precision": "fp32"}, {"n": 40}]}
    valid, skipped = expand(raw)
    assert skipped == []
    assert [(e.n, e.precision) for e in valid] == [(1, "bf16"), (2, "bf16"), (50, "fp32"), (40, "bf16")]


def test_top_level_fields_are_defaults_for_entries_only() -> None:
    raw = {"model": MODEL, "n": 5, "precision": "fp16", "experiments": [{"n": 10}, {"n": 20, "precision": "fp32"}]}
    valid, skipped = expand(raw)
    assert skipped == []
    assert len(valid) == 2  # no hidden third experiment made of the top-level fields
    assert [(e.n, e.precision, e.model) for e in valid] == [(10, "fp16", MODEL), (20, "fp32", MODEL)]


def test_entries_merge_nested_defaults() -> None:
    raw = {"model": MODEL, "decoder": {"temperature": 0.3}, "experiments": [{"decoder": {"top_k": 7}}]}
    (exp,), _ = expand(raw)
    assert exp.decoder.temperature == 0.3
    assert exp.decoder.top_k == 7


def test_entry_with_its_own_backend_drops_other_sections() -> None:
    raw = {"model": MODEL, "pytorch": {"batch_size": 4}, "experiments": [{}, {"backend": "vllm"}]}
    valid, skipped = expand(raw, platform="cuda")
    assert skipped == []
    assert _summary(valid) == [("pytorch", "bf16", 4, None), ("vllm", "bf16", None, None)]


def test_wrong_type_in_entry_names_the_entry_field() -> None:
    raw = {"model": MODEL, "experiments": [{"n": 10}, {"n": "many"}]}
    with pytest.raises(ConfigError) as excinfo:
        expand(raw)
    assert excinfo.value.key == "experiments[1].n"
    assert "experiments[1].n" in str(excinfo.value)


def test_nested_wrong_type_in_entry_names_the_nested_field() -> None:
    raw = {"model": MODEL, "experiments": [{"pytorch": {"batch_size": 0}}]}
    with pytest.raises(ConfigError) as excinfo:
        expand(raw)
    assert excinfo.value.key == "experiments[0].pytorch.batch_size"


def test_entry_that_is_not_a_mapping() -> None:
    with pytest.raises(ConfigError) as excinfo:
        expand({"model": MODEL, "experiments": [{"n": 1}, "fp16"]})
    assert excinfo.value.key == "experiments[1]"


# ---------------------------------------------------------------------------------------------------------------- base


def test_base_resolves_relative_to_the_study_file(tmp_path: Path) -> None:
    write(tmp_path / "base.yaml", {"model": "org/from-base", "backend": "pytorch", "n": 7})
    other = tmp_path / "elsewhere"
    other.mkdir()
    study = write(tmp_path / "study.yaml", {"base": "base.yaml", "sweep": {"precision": ["fp32", "bf16"]}})
    valid, skipped = expand(yaml.safe_load(study.read_text()), study_path=study)
    assert skipped == []
    assert [(e.model, e.backend, e.n, e.precision) for e in valid] == [
        ("org/from-base", "pytorch", 7, "fp32"),
        ("org/from-base", "pytorch", 7, "bf16"),
    ]


def test_base_in_a_subfolder(tmp_path: Path) -> None:
    (tmp_path / "bases").mkdir()
    write(tmp_path / "bases" / "small.yaml", {"model": "org/from-base", "n": 3})
    study = tmp_path / "study.yaml"
    (exp,), _ = expand({"base": "bases/small.yaml"}, study_path=study)
    assert (exp.model, exp.n) == ("org/from-base", 3)


def test_study_fields_override_base(tmp_path: Path) -> None:
    write(tmp_path / "base.yaml", {"model": "org/from-base", "n": 7, "precision": "fp16"})
    (exp,), _ = expand({"base": "base.yaml", "n": 9}, study_path=tmp_path / "study.yaml")
    assert (exp.model, exp.n, exp.precision) == ("org/from-base", 9, "fp16")


def test_base_ignores_study_only_keys(tmp_path: Path) -> None:
    write(
        tmp_path / "base.yaml",
        {
            "name": "from-base",
            "model": "org/from-base",
            "n": 7,
            "sweep": {"n": [1, 2, 3], "precision": ["fp16", "fp32"]},
            "experiments": [{"n": 99}],
            "execution": {"n_cycles": 0},
            "base": "does-not-exist.yaml",
        },
    )
    study = write(tmp_path / "study.yaml", {"base": "base.yaml", "sweep": {"max_output_tokens": [8, 16]}})
    valid, skipped = expand(yaml.safe_load(study.read_text()), study_path=study)
    assert skipped == []
    assert [(e.n, e.precision, e.max_output_tokens) for e in valid] == [(7, "bf16", 8), (7, "bf16", 16)]


def test_missing_base_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="base") as excinfo:
        expand({"base": "nope.yaml", "model": MODEL}, study_path=tmp_path / "study.yaml")
    assert excinfo.value.key == "base"
    assert "nope.yaml" in str(excinfo.value)


def test_base_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_bytes(b"model: \xff\xfe\x88 broken\n")
    with pytest.raises(ConfigError) as excinfo:
        expand({"base": "base.yaml"}, study_path=tmp_path / "study.yaml")
    assert excinfo.value.key == "base"


def test_base_under_an_unknown_home_folder_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as excinfo:
        expand({"base": "~no-such-user-llem/base.yaml", "model": MODEL}, study_path=tmp_path / "study.yaml")
    assert excinfo.value.key == "base"


def test_base_that_is_not_a_mapping(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError) as excinfo:
        expand({"base": "base.yaml", "model": MODEL}, study_path=tmp_path / "study.yaml")
    assert excinfo.value.key == "base"


# ------------------------------------------------------------------------------------------------- skips and errors


def test_invalid_combinations_are_skipped_and_valid_ones_kept() -> None:
    raw = {
        "model": MODEL,
        "sweep": {"precision": ["fp32", "bf16"]},
        "experiments": [{"backend": "pytorch", "vllm": {"engine": {"max_num_seqs": 4}}}],
    }
    valid, skipped = expand(raw, platform="cpu")
    assert [e.precision for e in valid] == ["fp32", "bf16"]
    assert len(skipped) == 1
    assert isinstance(skipped[0], SkippedConfig)
    assert "vllm" in skipped[0].reason and "backend" in skipped[0].reason
    assert skipped[0].raw_config["vllm"] == {"engine": {"max_num_seqs": 4}}
    assert skipped[0].errors and skipped[0].errors[0]["type"] == "invalid_combination"


def test_platform_decides_which_configs_are_skipped() -> None:
    raw = {
        "model": MODEL,
        "backend": "vllm",
        "sweep": {"precision": ["fp32", "bf16"]},
        "experiments": [{"vllm": {"engine": {"tensor_parallel_size": 64}}}],
    }
    valid, skipped = expand(raw, platform="cuda")
    assert len(valid) == 3 and skipped == []
    valid, skipped = expand(raw, platform="cpu")  # vLLM's CPU workers need a NUMA node each
    assert [e.precision for e in valid] == ["fp32", "bf16"]
    assert len(skipped) == 1 and "64 CPU workers (tensor x pipeline parallel) need as many NUMA" in skipped[0].reason


def test_all_invalid_is_nothing_to_run() -> None:
    raw = {
        "model": MODEL,
        "experiments": [
            {"backend": "pytorch", "vllm": {"engine": {}}},
            {"backend": "vllm", "pytorch": {"batch_size": 2}},
        ],
    }
    with pytest.raises(ConfigError, match="nothing to run"):
        expand(raw)


def test_no_experiments_is_an_error() -> None:
    with pytest.raises(ConfigError, match="no experiments"):
        expand({"name": "x"})


def test_identical_experiments_collapse_with_a_warning() -> None:
    raw = {"model": MODEL, "sweep": {"n": [1, 2]}, "experiments": [{"n": 2}, {"n": 3}]}
    with pytest.warns(ConfigWarning, match="identical"):
        valid, skipped = expand(raw)
    assert skipped == []
    assert [e.n for e in valid] == [1, 2, 3]


def test_duplicates_differing_only_in_id_collapse() -> None:
    raw = {"model": MODEL, "experiments": [{"id": "first", "n": 2}, {"id": "second", "n": 2}]}
    with pytest.warns(ConfigWarning):
        valid, _ = expand(raw)
    assert [e.id for e in valid] == ["first"]


def test_skipped_config_short_label_and_to_dict() -> None:
    skipped = SkippedConfig(raw_config={"backend": "pytorch", "precision": "fp32"}, reason="because")
    assert skipped.short_label == "pytorch, fp32"
    as_dict = skipped.to_dict()
    assert set(as_dict) == {"raw_config", "reason", "short_label", "errors"}
    assert as_dict["short_label"] == "pytorch, fp32"
    assert as_dict["reason"] == "because"
    assert as_dict["raw_config"] == {"backend": "pytorch", "precision": "fp32"}
    assert as_dict["errors"] == []
    assert SkippedConfig(raw_config={}, reason="x").short_label == "unknown, ?"


def test_unknown_top_level_key_suggests_the_close_match() -> None:
    with pytest.raises(ConfigError) as excinfo:
        expand({"model": MODEL, "precison": "fp16"})
    assert excinfo.value.key == "precison"
    message = str(excinfo.value)
    assert "precison" in message
    assert "did you mean 'precision'" in message


def test_unknown_nested_key_suggests_the_close_match() -> None:
    with pytest.raises(ConfigError) as excinfo:
        expand({"model": MODEL, "pytorch": {"batchsize": 4}})
    assert excinfo.value.key == "pytorch.batchsize"
    assert "did you mean 'batch_size'" in str(excinfo.value)


def test_unknown_key_in_sweep_names_the_sweep_key() -> None:
    with pytest.raises(ConfigError) as excinfo:
        expand({"model": MODEL, "sweep": {"precison": ["fp16"]}})
    assert excinfo.value.key == "sweep.precison"
    assert "did you mean 'precision'" in str(excinfo.value)


def test_not_a_mapping_is_an_error() -> None:
    with pytest.raises(ConfigError):
        expand(["model", MODEL])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"model": MODEL, "sweep": ["n", 1]}, "sweep"),
        ({"model": MODEL, "experiments": {"n": 1}}, "experiments"),
        ({"model": MODEL, "backend": "tensorrt"}, "backend"),
        ({"model": MODEL, "backend": []}, "backend"),
        ({"model": MODEL, "sweep": {"backend": ["pytorch", "onnx"]}}, "sweep.backend"),
        ({"model": MODEL, "sweep": {"decoder..temperature": [0.0]}}, "sweep.decoder..temperature"),
    ],
)
def test_malformed_study_blocks_name_their_key(raw: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        expand(raw)
    assert excinfo.value.key == key
