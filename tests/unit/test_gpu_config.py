"""The ``gpu:`` section as study input: sweepable like any nested field, a different experiment per limit, a skipped
config where there is no GPU to set, and one clear message for a bad value."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_llem import ConfigError, ExperimentConfig, expand_grid
from pytest_llem.study.hashing import compute_config_hash
from pytest_llem.study.ids import experiment_ids

SWEEP: dict[str, Any] = {
    "model": "builtin:tiny-llama",
    "gpu": {"locked_clocks_mhz": None},
    "sweep": {"gpu.power_limit_w": [300, 500, 700]},
}


def test_a_swept_limit_is_three_experiments_with_three_hashes_and_ids() -> None:
    experiments, skipped = expand_grid(SWEEP, platform="cuda")
    assert skipped == []
    assert [e.gpu.power_limit_w for e in experiments if e.gpu] == [300, 500, 700]
    assert len({compute_config_hash(e) for e in experiments}) == 3
    assert experiment_ids(experiments) == ["pytorch-300", "pytorch-500", "pytorch-700"]


def test_without_a_gpu_the_configs_that_set_one_are_skipped_configs() -> None:
    raw = {**SWEEP, "experiments": [{"id": "plain"}]}
    experiments, skipped = expand_grid(raw, platform="cpu")
    assert [e.id for e in experiments] == ["plain"]
    assert len(skipped) == 3
    assert all(s.reason.startswith("gpu: no GPU to set") for s in skipped)


def test_an_experiment_without_the_section_keeps_the_hash_it_had_before_the_section_existed() -> None:
    plain = ExperimentConfig(model="m")
    assert "gpu" not in plain.identity()
    assert compute_config_hash(plain) == "7f42f9e6c045cb27"  # as computed before gpu: was added
    for nothing in ({}, {"power_limit_w": None, "locked_clocks_mhz": None}):  # e.g. a sweep's null: as no section
        same = ExperimentConfig(model="m", gpu=nothing)
        assert same.gpu is None and compute_config_hash(same) == compute_config_hash(plain)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"power_limit_w": 0}, "gpu.power_limit_w"),
        ({"power_limit_w": "300W"}, "gpu.power_limit_w"),
        ({"locked_clocks_mhz": [1500, 900]}, "must be [min, max] with min <= max, not [1500, 900]"),
        ({"locked_clocks_mhz": [900]}, "gpu.locked_clocks_mhz"),
        ({"power_limit": 300}, "power_limit_w"),  # did-you-mean
    ],
)
def test_a_bad_value_is_one_message_naming_the_key(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        expand_grid({"model": "m", "gpu": section}, platform="cuda")
    assert message in str(raised.value)
