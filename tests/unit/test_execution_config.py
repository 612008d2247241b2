"""ExecutionConfig and StudyConfig: the study-level models (spec §1.6, §2.8 items 1–13)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pytest_llem import CycleOrder, ExecutionConfig, ExperimentConfig, StudyConfig


def _experiment(**fields: object) -> ExperimentConfig:
    return ExperimentConfig.model_validate({"model": "org/model", **fields}, context={"platform": "cpu"})


# ------------------------------------------------------------------------------------------------------ ExecutionConfig


def test_execution_defaults() -> None:
    config = ExecutionConfig()
    assert config.n_cycles == 1
    assert config.cycle_order == CycleOrder.SEQUENTIAL
    assert config.cycle_order == "sequential"
    assert config.config_gap_seconds is None
    assert config.cycle_gap_seconds is None
    assert config.shuffle_seed is None


@pytest.mark.parametrize("n_cycles", [0, -1])
def test_execution_rejects_non_positive_n_cycles(n_cycles: int) -> None:
    with pytest.raises(ValidationError) as excinfo:
        ExecutionConfig(n_cycles=n_cycles)
    assert excinfo.value.errors()[0]["loc"] == ("n_cycles",)


def test_execution_accepts_more_cycles() -> None:
    assert ExecutionConfig(n_cycles=5).n_cycles == 5


def test_execution_rejects_unknown_key() -> None:
    with pytest.raises(ValidationError) as excinfo:
        ExecutionConfig.model_validate({"n_cycles": 2, "experiment_gap_seconds": 5.0})
    error = excinfo.value.errors()[0]
    assert error["type"] == "extra_forbidden"
    assert error["loc"] == ("experiment_gap_seconds",)


@pytest.mark.parametrize("order", ["sequential", "interleaved", "shuffled"])
def test_execution_accepts_the_three_orders(order: str) -> None:
    config = ExecutionConfig(cycle_order=order)
    assert config.cycle_order == CycleOrder(order)
    assert isinstance(config.cycle_order, CycleOrder)


def test_execution_rejects_unknown_order() -> None:
    with pytest.raises(ValidationError) as excinfo:
        ExecutionConfig(cycle_order="random")
    assert excinfo.value.errors()[0]["loc"] == ("cycle_order",)


@pytest.mark.parametrize("field", ["config_gap_seconds", "cycle_gap_seconds"])
@pytest.mark.parametrize("seconds", [0.0, 60.5])
def test_execution_accepts_non_negative_gaps(field: str, seconds: float) -> None:
    config = ExecutionConfig.model_validate({field: seconds})
    assert getattr(config, field) == seconds


@pytest.mark.parametrize("field", ["config_gap_seconds", "cycle_gap_seconds"])
def test_execution_rejects_negative_gaps(field: str) -> None:
    with pytest.raises(ValidationError) as excinfo:
        ExecutionConfig.model_validate({field: -1})
    assert excinfo.value.errors()[0]["loc"] == (field,)


def test_execution_stores_shuffle_seed() -> None:
    assert ExecutionConfig(shuffle_seed=1234).shuffle_seed == 1234
    assert ExecutionConfig(shuffle_seed=0).shuffle_seed == 0


def test_execution_is_frozen() -> None:
    config = ExecutionConfig()
    with pytest.raises(ValidationError):
        config.n_cycles = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("field", "value"),
    [("n_cycles", True), ("n_cycles", 2.5), ("n_cycles", "3"), ("shuffle_seed", False), ("timeout_seconds", True)],
)
def test_execution_numbers_are_strict(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as excinfo:
        ExecutionConfig.model_validate({field: value})
    assert excinfo.value.errors()[0]["loc"] == (field,)
    assert excinfo.value.errors()[0]["type"] in ("int_type", "float_type")


def test_execution_text_is_parsed_only_when_asked() -> None:
    """ini keys are text: the loader validates that layer with strict=False, which parses numbers and nothing else."""
    config = ExecutionConfig.model_validate({"n_cycles": "4", "timeout_seconds": "2.5"}, strict=False)
    assert (config.n_cycles, config.timeout_seconds) == (4, 2.5)
    for text in ("true", "2.5", "many"):
        with pytest.raises(ValidationError) as excinfo:
            ExecutionConfig.model_validate({"n_cycles": text}, strict=False)
        assert excinfo.value.errors()[0]["loc"] == ("n_cycles",)


# ---------------------------------------------------------------------------------------------------------- StudyConfig


def test_study_accepts_all_fields() -> None:
    experiments = [_experiment(n=1), _experiment(n=2)]
    execution = ExecutionConfig(n_cycles=3, cycle_order="interleaved", config_gap_seconds=1.5, shuffle_seed=7)
    skipped = [{"raw_config": {"backend": "vllm"}, "reason": "why", "short_label": "vllm, ?", "errors": []}]
    study = StudyConfig(
        name="demo",
        experiments=experiments,
        execution=execution,
        study_design_hash="0123456789abcdef",
        skipped_configs=skipped,
    )
    assert study.name == "demo"
    assert study.experiments == experiments
    assert study.execution == execution
    assert study.study_design_hash == "0123456789abcdef"
    assert study.skipped_configs == skipped
    assert StudyConfig.model_validate(study.model_dump()) == study


def test_study_rejects_empty_experiments() -> None:
    with pytest.raises(ValidationError) as excinfo:
        StudyConfig(experiments=[])
    assert excinfo.value.errors()[0]["loc"] == ("experiments",)


def test_study_default_execution() -> None:
    study = StudyConfig(experiments=[_experiment()])
    assert study.execution == ExecutionConfig()
    assert study.execution.n_cycles == 1
    assert study.execution.cycle_order == CycleOrder.SEQUENTIAL
    assert study.name is None
    assert study.study_design_hash is None
    assert study.skipped_configs == []


def test_study_rejects_unknown_key() -> None:
    with pytest.raises(ValidationError) as excinfo:
        StudyConfig.model_validate({"experiments": [{"model": "org/model"}], "runners": {"pytorch": "local"}})
    error = excinfo.value.errors()[0]
    assert error["type"] == "extra_forbidden"
    assert error["loc"] == ("runners",)
