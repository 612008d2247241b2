"""The main job's footer points at ``llem doctor`` when nothing was measured, and only then."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import studies

FAKES = Path(__file__).parent.parent / "zeus_fakes.py"
HINT = r"energy: run `llem doctor` to see what this machine can measure, and how to get the rest"

# One fake GPU at Zeus's device layer, in the pytest process and in every item's process.
CONFTEST = """
import zeus_fakes


def install_fakes():
    zeus_fakes.install(zeus_fakes.FakeGPUs([100.0]), None)


def pytest_configure(config):
    install_fakes()


def pytest_llem_child_setup():
    return [install_fakes]


def pytest_unconfigure(config):
    zeus_fakes.uninstall()
"""


def test_the_footer_points_at_llem_doctor_when_nothing_was_measured(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", study_h=studies.FAST)
    result = pytester.runpytest("--llem-cycles=1", "--llem-meter=none")
    result.assert_outcomes(passed=1)
    result.stdout.re_match_lines(
        [r"energy: not measured: energy measurement is turned off \(meter: none\) \(1 results\)", HINT],
        consecutive=True,
    )


def test_no_pointer_when_energy_was_measured(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(zeus_fakes=FAKES.read_text())
    pytester.makeconftest(CONFTEST)
    pytester.makefile(".yaml", study_h=studies.FAST)
    result = pytester.runpytest("--llem-cycles=1")
    result.assert_outcomes(passed=1)
    result.stdout.re_match_lines([r"energy: zeus: GPU 0 \(Fake GPU\) via FakeGPUs \(.*\) \(1 results\)"])
    assert "llem doctor" not in result.stdout.str()
