"""--llem-save: a run's per-experiment samples become a named baseline, keyed by config hash."""

from __future__ import annotations

import json

import pytest

from pytest_llem.results.baselines import BaselineError, load
from tests.studies import FAST

STUDY = FAST + "execution: {isolation: none}\nsweep:\n  n: [1, 2]\n"


def test_a_saved_baseline_holds_every_cycle_per_experiment_keyed_by_config_hash(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", study_b=STUDY)
    result = pytester.runpytest("--llem-cycles=2", "--llem-save=main")
    result.assert_outcomes(passed=4)
    result.stdout.re_match_lines([r"pytest-llem: baseline 'main' saved to .*main\.json \(2 experiments\)"])
    baselines_dir = pytester.path / ".llem" / "baselines"
    baseline = load("main", baselines_dir)
    (run,) = (pytester.path / ".llem" / "runs").iterdir()
    hashes = {json.loads(p.read_text())["config_hash"] for p in (run / "results").iterdir()}
    assert set(baseline.experiments) == hashes and baseline.run_id == run.name
    for experiment in baseline.experiments.values():
        assert len(experiment.cycles) == 2 and len(experiment.samples("tokens_per_s")) == 2
        assert experiment.samples("energy_j") == []  # not measured here: no samples, not zeros
        assert experiment.config["n"] in (1, 2)
    assert load("latest", baselines_dir) == baseline
    assert load(str(baselines_dir / "main.json"), baselines_dir) == baseline

    (pytester.path / "study_b.yaml").rename(pytester.path / "study_renamed.yaml")
    pytester.runpytest("--llem-cycles=1", "--llem-save=renamed").assert_outcomes(passed=2)
    assert set(load("renamed", baselines_dir).experiments) == hashes  # history survives renaming the file
    with pytest.raises(BaselineError, match=r"no baseline 'nope' in .*; saved: main, renamed"):
        load("nope", baselines_dir)


def test_a_bad_baseline_name_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--llem-save=no/slashes")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--llem-save: 'no/slashes' is not a baseline name*"])
