"""Edge cases of study files that must be clean ConfigErrors (or clean grids), each with the key the user wrote."""

from __future__ import annotations

import pytest

from pytest_llem import ConfigError, expand_grid


def expand(raw: dict) -> list:
    return expand_grid(raw, platform="cpu")[0]


def error_of(raw: dict) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        expand_grid(raw, platform="cpu")
    return caught.value


def test_dotted_sweep_key_into_a_scalar_is_an_error_naming_the_sweep_key() -> None:
    error = error_of({"model": "m", "decoder": "greedy", "sweep": {"decoder.temperature": [0.5]}})
    assert error.key == "sweep.decoder.temperature"
    assert "decoder is 'greedy', not a mapping" in error.message


def test_backend_swept_and_set_at_top_level_is_an_error() -> None:
    error = error_of({"model": "m", "backend": "vllm", "sweep": {"backend": ["pytorch"]}})
    assert error.key == "sweep.backend"


def test_a_whole_backend_section_in_the_sweep_is_scoped_to_that_backend() -> None:
    experiments = expand(
        {
            "model": "m",
            "backend": ["pytorch", "vllm"],
            "precision": "bf16",
            "sweep": {"pytorch": [{"batch_size": 1}, {"batch_size": 2}]},
        }
    )
    assert [(e.backend, e.batch_size) for e in experiments] == [("pytorch", 1), ("pytorch", 2), ("vllm", 1)]


def test_a_missing_field_in_an_entry_is_named_at_that_entry() -> None:
    error = error_of({"experiments": [{"n": 1}, {"model": "x"}]})
    assert error.key == "experiments[0].model"


def test_non_json_passthrough_values_are_a_config_error() -> None:
    error = error_of({"model": "m", "passthrough_kwargs": {"blob": b"\xff\x00"}})
    assert error.key is not None and error.key.startswith("passthrough_kwargs")


def test_own_ids_are_kept_when_a_generated_id_would_collide() -> None:
    from pytest_llem.study.ids import experiment_ids

    experiments = expand({"model": "m", "experiments": [{"id": "pytorch-2", "n": 1}, {"n": 2}, {"n": 3}]})
    ids = experiment_ids(experiments)
    assert ids[0] == "pytorch-2" and len(set(ids)) == 3
