"""Study files: YAML reading errors, execution precedence, load_study."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from pytest_llem import ConfigError, CycleOrder, StudyConfig
from pytest_llem.config.loader import read_study_file, resolve_execution
from pytest_llem.study.load import load_study

# The plugin's effective defaults, passed in as the lowest layer (the library's own are the model's: 1, sequential).
PLUGIN_DEFAULTS = {"n_cycles": 3, "cycle_order": "interleaved"}

# --------------------------------------------------------------------------------------------------------- YAML reading


def test_reads_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_text("model: org/model\nsweep:\n  n: [1, 2]\n")
    assert read_study_file(path) == {"model": "org/model", "sweep": {"n": [1, 2]}}


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_text("model: org/model\nn: 10\nsweep: [a\n  b: c\n")
    with pytest.raises(ConfigError) as excinfo:
        read_study_file(path)
    assert excinfo.value.file == path
    assert re.search(r"\bline 4\b", str(excinfo.value)), str(excinfo.value)
    assert str(path) in str(excinfo.value)


def test_bad_indentation_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_text("model: org/model\nn: 1\n  x: 2\n")
    with pytest.raises(ConfigError) as excinfo:
        read_study_file(path)
    assert re.search(r"\bline 3\b", str(excinfo.value)), str(excinfo.value)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="empty") as excinfo:
        read_study_file(path)
    assert excinfo.value.file == path


@pytest.mark.parametrize(("text", "kind"), [("- model: a\n- model: b\n", "list"), ("just text\n", "str")])
def test_document_must_be_a_mapping(tmp_path: Path, text: str, kind: str) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="mapping") as excinfo:
        read_study_file(path)
    assert kind in str(excinfo.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as excinfo:
        read_study_file(tmp_path / "absent.yaml")
    assert excinfo.value.file == tmp_path / "absent.yaml"


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_bytes(b"model: \xff\xfe\n")
    with pytest.raises(ConfigError):
        read_study_file(path)


# ------------------------------------------------------------------------------------------------ execution precedence


def test_library_defaults_are_the_models() -> None:
    execution = resolve_execution(None)
    assert (execution.n_cycles, execution.cycle_order) == (1, CycleOrder.SEQUENTIAL)


def test_defaults_layer_applies_when_nothing_else_says() -> None:
    execution = resolve_execution(None, defaults=PLUGIN_DEFAULTS)
    assert (execution.n_cycles, execution.cycle_order) == (3, CycleOrder.INTERLEAVED)


def test_the_plugin_passes_llenergymeasures_cli_defaults() -> None:
    from pytest_llem.options import EFFECTIVE_EXECUTION_DEFAULTS

    assert EFFECTIVE_EXECUTION_DEFAULTS == PLUGIN_DEFAULTS


def test_ini_beats_defaults() -> None:
    execution = resolve_execution(None, ini={"n_cycles": 5, "cycle_order": "shuffled"})
    assert (execution.n_cycles, execution.cycle_order) == (5, CycleOrder.SHUFFLED)


def test_ini_strings_are_converted() -> None:
    execution = resolve_execution(None, ini={"n_cycles": "4", "config_gap_seconds": "2.5"})
    assert (execution.n_cycles, execution.config_gap_seconds) == (4, 2.5)


def test_study_execution_beats_ini() -> None:
    execution = resolve_execution({"n_cycles": 2}, ini={"n_cycles": 5, "cycle_order": "shuffled"})
    assert execution.n_cycles == 2
    assert execution.cycle_order == CycleOrder.SHUFFLED  # not set by the study: the ini still applies


def test_command_line_beats_study_execution() -> None:
    execution = resolve_execution(
        {"n_cycles": 2, "cycle_order": "sequential"}, ini={"n_cycles": 5}, command_line={"n_cycles": 7}
    )
    assert execution.n_cycles == 7
    assert execution.cycle_order == CycleOrder.SEQUENTIAL


def test_unset_command_line_options_do_not_override() -> None:
    execution = resolve_execution(
        {"n_cycles": 2}, command_line={"n_cycles": None, "cycle_order": None}, defaults=PLUGIN_DEFAULTS
    )
    assert (execution.n_cycles, execution.cycle_order) == (2, CycleOrder.INTERLEAVED)


def test_layers_merge_per_key() -> None:
    execution = resolve_execution(
        {"config_gap_seconds": 1.0},
        ini={"cycle_gap_seconds": 9.0, "shuffle_seed": 4},
        command_line={"cycle_order": "shuffled"},
        defaults=PLUGIN_DEFAULTS,
    )
    assert execution.n_cycles == 3
    assert execution.cycle_order == CycleOrder.SHUFFLED
    assert execution.config_gap_seconds == 1.0
    assert execution.cycle_gap_seconds == 9.0
    assert execution.shuffle_seed == 4


def test_invalid_ini_value_names_its_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as excinfo:
        resolve_execution(None, ini={"n_cycles": 0}, path=tmp_path / "study.yaml")
    assert excinfo.value.key is not None
    assert excinfo.value.key == "llem_cycles (ini)"


@pytest.mark.parametrize("text", ["true", "2.5", "many"])
def test_ini_text_that_is_not_an_integer_is_refused(text: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        resolve_execution(None, ini={"n_cycles": text})
    assert excinfo.value.key == "llem_cycles (ini)"
    assert "input should be a valid integer" in excinfo.value.message


@pytest.mark.parametrize(
    ("written", "shown"), [("true", "true"), ("2.5", "2.5"), ("'3'", "the string '3' (write numbers without quotes)")]
)
def test_study_execution_numbers_are_strict(tmp_path: Path, written: str, shown: str) -> None:
    path = tmp_path / "study_x.yaml"
    path.write_text(f"model: org/model\nexecution: {{n_cycles: {written}}}\n")
    with pytest.raises(ConfigError) as excinfo:
        load_study(path, ini={"n_cycles": "2"}, platform="cpu")
    assert str(excinfo.value) == f"{path}: execution.n_cycles: input should be a valid integer, got {shown}"


def test_invalid_command_line_value_names_its_source() -> None:
    with pytest.raises(ConfigError) as excinfo:
        resolve_execution(None, command_line={"cycle_order": "random"})
    assert excinfo.value.key is not None
    assert excinfo.value.key == "--llem-cycle-order"


def test_invalid_study_value_names_the_study_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as excinfo:
        resolve_execution({"n_cycles": 0}, ini={"n_cycles": 4}, path=tmp_path / "study.yaml")
    assert excinfo.value.key == "execution.n_cycles"
    assert excinfo.value.file == tmp_path / "study.yaml"


def test_unknown_execution_key_suggests_the_close_match() -> None:
    with pytest.raises(ConfigError) as excinfo:
        resolve_execution({"n_cycle": 2})
    assert "n_cycle" in str(excinfo.value)
    assert "did you mean 'n_cycles'" in str(excinfo.value)


def test_execution_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError) as excinfo:
        resolve_execution([1, 2])
    assert excinfo.value.key == "execution"


# ----------------------------------------------------------------------------------------------------------- load_study


# The platform passed in decides, not the machine running the tests: each case fails on one kind of machine if
# load_study validated against the detected platform instead.
@pytest.mark.parametrize(("platform", "runs"), [("cuda", 4), ("cpu", 3)])
def test_load_study(tmp_path: Path, platform: str, runs: int) -> None:
    path = tmp_path / "platform-check.yaml"
    data = {
        "model": "org/model",
        "backend": "vllm",
        "sweep": {"precision": ["fp32", "fp16", "bf16"]},
        "experiments": [{"precision": "fp16", "vllm": {"engine": {"tensor_parallel_size": 64}}}],
        "execution": {"n_cycles": 2},
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    study = load_study(path, ini={"cycle_order": "sequential"}, platform=platform)  # type: ignore[arg-type]
    assert isinstance(study, StudyConfig)
    assert study.name == "platform-check"
    assert study.study_design_hash is not None and re.fullmatch(r"[0-9a-f]{16}", study.study_design_hash)
    assert [e.precision for e in study.experiments] == ["fp32", "fp16", "bf16", "fp16"][:runs]
    assert (study.execution.n_cycles, study.execution.cycle_order) == (2, CycleOrder.SEQUENTIAL)
    if platform == "cuda":
        assert study.skipped_configs == []
        return
    (skipped,) = study.skipped_configs  # 64 CPU workers want 64 NUMA nodes
    assert isinstance(skipped, dict)
    assert set(skipped) == {"raw_config", "reason", "short_label", "errors"}
    assert skipped["short_label"] == "vllm, fp16"
    assert "need as many NUMA nodes" in skipped["reason"]


def test_load_study_uses_the_name_key(tmp_path: Path) -> None:
    path = tmp_path / "file-name.yaml"
    path.write_text("name: my-study\nmodel: org/model\n")
    study = load_study(path, platform="cpu", defaults=PLUGIN_DEFAULTS)
    assert study.name == "my-study"
    assert len(study.experiments) == 1
    assert study.skipped_configs == []
    assert study.execution.n_cycles == 3


def test_load_study_reports_errors_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_text("model: org/model\nexperiments:\n  - {n: many}\n")
    with pytest.raises(ConfigError) as excinfo:
        load_study(path, platform="cpu")
    assert excinfo.value.file == path
    assert excinfo.value.key == "experiments[0].n"


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        ("n: true\n", "n", "input should be a valid integer, got true"),
        ("n: 2.5\n", "n", "input should be a valid integer, got 2.5"),
        ("n: '3'\n", "n", "input should be a valid integer, got the string '3' (write numbers without quotes)"),
        ("sweep:\n  n: [1, true]\n", "sweep.n", "input should be a valid integer, got true"),
        ("experiments:\n  - {n: 2.5}\n", "experiments[0].n", "input should be a valid integer, got 2.5"),
        ("decoder: {temperature: false}\n", "decoder.temperature", "input should be a valid number, got false"),
        (
            "baseline: {duration_seconds: yes}\n",
            "baseline.duration_seconds",
            "input should be a valid number, got true",
        ),
    ],
)
def test_load_study_refuses_booleans_and_fractions_for_numbers(
    tmp_path: Path, text: str, key: str, message: str
) -> None:
    path = tmp_path / "study_x.yaml"
    path.write_text("model: org/model\n" + text)
    with pytest.raises(ConfigError) as excinfo:
        load_study(path, platform="cpu")
    assert (excinfo.value.file, excinfo.value.key, excinfo.value.message) == (path, key, message)
    assert str(excinfo.value) == f"{path}: {key}: {message}"


def test_load_study_takes_integers_for_float_fields(tmp_path: Path) -> None:
    path = tmp_path / "study_x.yaml"
    path.write_text("model: org/model\nbaseline: {duration_seconds: 10}\ndecoder: {temperature: 0}\n")
    (experiment,) = load_study(path, platform="cpu").experiments
    assert (experiment.baseline.duration_seconds, experiment.decoder.temperature) == (10.0, 0.0)
