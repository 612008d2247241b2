"""The item after a killed one waits for the GPU memory the killed one held, and says so in its log. NVML is faked in
the pytest process at pynvml's functions: the killed item's process writes GPU 0's used memory to a file, which the
"driver" gives back after four reads (the wait polls every 0.25 s: at least 0.75 s of it, however fast the machine)."""

from __future__ import annotations

import pytest

from tests.studies import CRASHY_CONFTEST, CRASHY_HEAD

CONFTEST = (
    CRASHY_CONFTEST
    + """
import json
import types

import pynvml

MEMORY = Path(__file__).parent / "gpu0.json"  # {"used_mb": ..., "reads_left": n}; 500 MiB otherwise


class Holding(Crashy):
    def generate(self, prepared):  # fills GPU 0, then is killed
        if self.mode == "kill":
            MEMORY.write_text(json.dumps({"used_mb": 70000, "reads_left": 4}))
        return super().generate(prepared)


def used(handle):
    held = json.loads(MEMORY.read_text()) if MEMORY.exists() else {"reads_left": 0}
    if held["reads_left"] > 0:
        MEMORY.write_text(json.dumps({**held, "reads_left": held["reads_left"] - 1}))
        return types.SimpleNamespace(used=held["used_mb"] * 2**20, total=80000 * 2**20)
    return types.SimpleNamespace(used=500 * 2**20, total=80000 * 2**20)


def pytest_configure(config):
    fakes = {"nvmlInit": lambda: None, "nvmlShutdown": lambda: None, "nvmlDeviceGetCount": lambda: 1,
             "nvmlDeviceGetHandleByIndex": lambda i: i, "nvmlDeviceGetIndex": lambda h: h,
             "nvmlDeviceGetMemoryInfo": used}
    for name, function in fakes.items():
        setattr(pynvml, name, function)


def pytest_llem_backends():
    return {"crashy": Holding}
"""
)
STUDY = CRASHY_HEAD + (
    "execution: {cycle_order: sequential}\nexperiments:\n  - {id: killed, random_seed: 2}\n"
    "  - {id: after, random_seed: 0}\n"
)


def test_the_item_after_a_killed_one_waits_for_its_gpu_memory_and_says_so(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    pytester.makeconftest(CONFTEST)
    pytester.makefile(".yaml", study_m=STUDY)
    result = pytester.runpytest_subprocess("--llem-cycles=1", "--llem-isolation=process", "-rA")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.re_match_lines(
        [
            r".* Captured stderr call .*",
            r"pytest-llem: waited \d\.\d s for the GPU memory of the killed item before this one "
            r"\(GPU 0: 70000 → 500 MiB used\)",
        ]
    )
    waited = float(result.stdout.str().split("pytest-llem: waited ")[1].split(" s ")[0])
    assert 0.75 <= waited < 60  # until the driver gave it back, not the whole bound
