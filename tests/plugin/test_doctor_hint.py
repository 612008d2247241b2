"""The main job's footer points at ``llem doctor`` when nothing was measured, and only then."""

from __future__ import annotations

import pytest

from tests import studies

HINT = r"energy: run `llem doctor` to see what this machine can measure, and how to get the rest"


def test_the_footer_points_at_llem_doctor_when_nothing_was_measured(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", study_h=studies.FAST)
    result = pytester.runpytest("--llem-cycles=1", "--llem-meter=none")
    result.assert_outcomes(passed=1)
    result.stdout.re_match_lines(
        [r"energy: not measured: energy measurement is turned off \(meter: none\) \(1 results\)", HINT],
        consecutive=True,
    )


def test_no_pointer_when_energy_was_measured(pytester: pytest.Pytester) -> None:
    studies.fake_gpus(pytester, [100.0])
    pytester.makefile(".yaml", study_h=studies.FAST)
    result = pytester.runpytest("--llem-cycles=1")
    result.assert_outcomes(passed=1)
    result.stdout.re_match_lines([r"energy: zeus: GPU 0 \(Fake GPU\) via FakeGPUs \(.*\) \(1 results\)"])
    assert "llem doctor" not in result.stdout.str()
