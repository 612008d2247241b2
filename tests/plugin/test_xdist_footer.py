"""The summary's footer under pytest-xdist: each worker measures its own GPUs, and the ``energy:`` line names every GPU
any worker measured (fake GPUs at Zeus's device layer, as in test_xdist.py)."""

from __future__ import annotations

import pytest

from tests.plugin.test_xdist import WATTS, project


def test_the_energy_line_names_the_gpus_of_every_worker(pytester: pytest.Pytester) -> None:
    project(pytester, WATTS)  # four fake GPUs, two experiments
    result = pytester.runpytest("-n", "2", "--llem-gpus-per-worker=2", "--llem-cycles=2")
    result.assert_outcomes(passed=4)
    environments = [line for line in result.outlines if line.startswith("environment: ")]
    assert len(environments) == 2  # each worker measured: one with GPUs 0 and 1, the other with 2 and 3
    assert "Fake GPU #0, Fake GPU #1" in environments[0] + environments[1]
    assert "Fake GPU #2, Fake GPU #3" in environments[0] + environments[1]
    energy = [line for line in result.outlines if line.startswith("energy: ")]
    gpus = ", ".join(f"GPU {i} (Fake GPU)" for i in range(4))
    assert energy == [f"energy: zeus: {gpus} via FakeGPUs (every visible GPU: the engine runs on the CPU) (4 results)"]
