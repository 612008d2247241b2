"""RAPL through the plugin: Zeus's real RAPL code reads a fake powercap folder (tests/rapl_fakes.py) in the pytest
process and in every item's process, with a counter range small enough to wrap inside every window.

Zeus's own wraparound tracker is a spawned, non-daemon process per RAPL file, started inside the first window: an item's
process leaving through multiprocessing waited for it (30 s, then the parent killed it). These tests check, from
inside the item's process as it exits, that nothing of ours is left to wait for, and that nothing outlives pytest.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests import studies
from tests.plugin.test_process_cleanup import CONFTEST as CLEANUP_CONFTEST
from tests.plugin.test_process_cleanup import noted, still_there

RAPL_FAKES = Path(__file__).parent.parent / "rapl_fakes.py"
PACKAGE_W, DRAM_W, RANGE_J = 50.0, 10.0, 40.0  # the package counter wraps every 0.8 s

# Windows of at least 1 s (50 J at 50 W: a wrap in each); the idle baseline (5 s) measured once, in the first item.
STUDY = studies.FAST.replace("baseline: {enabled: false}", "warmup: {enabled: false}") + (
    "backend: padded\nbaseline: {enabled: true, duration_seconds: 5}\nexecution: {isolation: process}\n"
)

# The cleanup check's conftest (every process the run started is noted), plus: the fake powercap folder, written by a
# thread in the pytest process and read by Zeus there and in every item's process; no GPU; in each item's process, two
# multiprocessing exit finalizers: one before multiprocessing joins the process's children (which children are left)
# and one after it (the process got through its exit on its own, not killed by the parent after its 30 s join).
CONFTEST = (
    CLEANUP_CONFTEST
    + studies.PADDED_BACKEND.replace("WINDOW_S = 0.3", "WINDOW_S = 1.0")
    + f"""
import multiprocessing
import multiprocessing.util

import zeus.device.gpu
from zeus.device.gpu.common import EmptyGPUs

import rapl_fakes

FOLDER = Path(__file__).parent / "powercap"
EXITS = Path(__file__).parent / "exits.txt"
RIGS = []  # the writer, in the pytest process only (an item's process imports this file too)


def pytest_llem_backends():
    return {{"padded": Padded}}


def point_zeus():
    zeus.device.gpu._gpus = EmptyGPUs()
    rapl_fakes.point_zeus(FOLDER)


def children_of(pid):
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if stat(entry.name)[0] == pid:
                    found.append(Path(f"/proc/{{entry.name}}/cmdline").read_bytes().replace(b"\\0", b" ").decode())
            except OSError:
                continue
    return found


def note_exit(what):
    with EXITS.open("a") as handle:
        handle.write(json.dumps([os.getpid(), what]) + "\\n")


def before_joining():
    left = [p.name for p in multiprocessing.active_children()]
    note_exit({{"children": left, "processes": children_of(os.getpid())}})


def watch_exit():
    multiprocessing.util.Finalize(None, before_joining, exitpriority=100)
    multiprocessing.util.Finalize(None, note_exit, args=("exited",), exitpriority=-100)


def pytest_llem_child_setup():
    return [note_item_process, point_zeus, watch_exit]


def pytest_configure(config):
    RIGS.append(rapl_fakes.FakeRapl(FOLDER, package_w={PACKAGE_W}, dram_w={DRAM_W}, max_range_j={RANGE_J}).start())
    point_zeus()


def pytest_unconfigure(config):
    RIGS.pop().stop()
    rapl_fakes.unpoint_zeus()
"""
).replace("import os\n", "import json\nimport os\n", 1)

FIXTURE_TEST = """
import time


def test_pipeline(llem_energy):
    with llem_energy.measure("generate") as m:
        time.sleep(1.0)
    m.output_tokens = 10
"""


def results(path: Path) -> list[dict]:
    tree = ET.parse(path)
    return [json.loads(p.get("value")) for p in tree.iter("property") if p.get("name") == "llem_result"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_rapl_energy_idle_power_and_wraps_in_items_and_the_fixture_and_nothing_is_left(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(rapl_fakes=RAPL_FAKES.read_text(), test_fx=FIXTURE_TEST)
    pytester.makeconftest(CONFTEST)
    pytester.makefile(".yaml", study_r=STUDY)
    result = pytester.runpytest_subprocess("--llem-cycles=2", "--junitxml=out.xml")
    left = [p for p in noted(pytester) if still_there(p[0], p[1])]  # right after pytest returned
    result.assert_outcomes(passed=3)

    item_pids = {p[0] for p in noted(pytester) if p[2] == "item"}
    exits = [json.loads(line) for line in (pytester.path / "exits.txt").read_text().splitlines()]
    assert len(item_pids) == 2 and {pid for pid, _ in exits} == item_pids
    for pid in item_pids:
        seen = [what for p, what in exits if p == pid]
        assert seen == [{"children": [], "processes": []}, "exited"]  # nothing to join; out on its own
    assert left == []

    items = [r for r in results(pytester.path / "out.xml") if r["kind"] != "fixture"]
    (fixture,) = [r for r in results(pytester.path / "out.xml") if r["kind"] == "fixture"]
    assert len(items) == 2
    for r in [*items, fixture]:
        m = r["metrics"]
        assert m["duration_s"] >= 1.0
        assert m["energy_source"] == "zeus: CPU package + DRAM via RAPL"
        assert m["cpu_energy_j"] == pytest.approx(PACKAGE_W * m["duration_s"], rel=0.02)  # > RANGE_J: wrapped
        assert m["dram_energy_j"] == pytest.approx(DRAM_W * m["duration_s"], rel=0.02)
        assert m["gpu_energy_j"] == {} and m["measurement_warnings"] == []
    for m in (r["metrics"] for r in items):
        assert m["idle_power_w"] == pytest.approx(PACKAGE_W + DRAM_W, rel=0.02)  # 5 s: several wraps
    assert [r["metrics"]["idle_power_origin"][:6] for r in items] == ["measur", "cached"]  # one measurement
