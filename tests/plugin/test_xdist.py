"""pytest-xdist: one worker per GPU set (fake GPUs installed in every worker by the temp project's conftest), results
gathered on the controller, gates and resume under xdist; --llem-shard and merging the shards."""

from __future__ import annotations

import json
import re
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pytest_llem.cli import main as llem
from tests import studies
from tests.plugin.test_gate_plugin import CONFTEST as HUNGRY_CONFTEST
from tests.plugin.test_gate_plugin import STUDY as HUNGRY_STUDY

FAKES = Path(__file__).parent.parent / "zeus_fakes.py"
WATTS = [100.0, 200.0, 300.0, 400.0]
# padded: windows of at least 0.3 s on purpose (studies.PADDED_BACKEND), so energy = power x time holds within a few %
# on any machine, busy or not.
STUDY = (
    studies.FAST
    + "backend: padded\nwarmup: {enabled: false}\nexecution: {isolation: none}\nsweep:\n  random_seed: [1, 2]\n"
)


def project(pytester: pytest.Pytester, gpus: list[float], study: str = STUDY) -> None:
    """Fake GPUs at ``gpus`` watts and one fake 50 W CPU package, in the controller and in every worker (the conftest
    runs in each; a worker has narrowed CUDA_VISIBLE_DEVICES before it does)."""
    pytester.makepyfile(zeus_fakes=FAKES.read_text())
    pytester.makeconftest(
        studies.PADDED_BACKEND
        + f"""
import zeus_fakes


def pytest_llem_backends():
    return {{"padded": Padded}}


def pytest_configure(config):
    zeus_fakes.install(zeus_fakes.FakeGPUs({gpus!r}), zeus_fakes.FakeCPUs([50.0]))


def pytest_unconfigure(config):
    zeus_fakes.uninstall()
"""
    )
    pytester.makefile(".yaml", study_x=study)


def junit_results(path: Path) -> list[dict]:
    return [json.loads(p.get("value")) for p in ET.parse(path).iter("property") if p.get("name") == "llem_result"]


def test_each_worker_measures_only_its_own_gpus_and_the_controller_writes_one_run(pytester: pytest.Pytester) -> None:
    project(pytester, WATTS)
    result = pytester.runpytest("-n", "2", "--llem-gpus-per-worker=2", "--llem-cycles=2", "--junitxml=out.xml")
    result.assert_outcomes(passed=4)
    measured = junit_results(pytester.path / "out.xml")
    assert len(measured) == 4
    seen = set()
    for r in measured:
        gpus = {int(i) for i in r["metrics"]["gpu_energy_j"]}
        assert gpus in ({0, 1}, {2, 3})  # one worker's set, never a mix
        assert {g["index"] for g in r["environment"]["gpus"]} == gpus  # the worker sees only its GPUs
        for index, joules in r["metrics"]["gpu_energy_j"].items():
            assert joules == pytest.approx(WATTS[int(index)] * r["metrics"]["duration_s"], rel=0.05, abs=0.01)
        assert r["metrics"]["cpu_energy_j"] is None  # two workers share the CPU package
        assert "2 pytest-xdist workers" in r["metrics"]["unavailable"]["cpu_energy_j"]
        assert r["metrics"]["unavailable"]["dram_energy_j"] == r["metrics"]["unavailable"]["cpu_energy_j"]
        seen |= gpus
    assert seen == {0, 1, 2, 3}
    (run,) = (pytester.path / ".llem" / "runs").iterdir()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["cycle_order"] == {"study_x.yaml": "interleaved"}
    assert sorted((i["experiment_id"], i["cycle"], i["status"]) for i in manifest["items"]) == [
        (e, c, "passed") for e in ("padded-1", "padded-2") for c in (1, 2)
    ]
    assert len(list((run / "results").iterdir())) == 4
    summary = json.loads((run / "summary.json").read_text())["study_x.yaml"]["experiments"]
    assert {e: s["cycles_passed"] for e, s in summary.items()} == {"padded-1": 2, "padded-2": 2}
    result.stdout.re_match_lines(
        [r"study_x\.yaml \[\w+\]: 2 configs x 2 cycles.*", r"padded-1\s+2\s.*", r"padded-2\s+2\s.*"]
    )


def test_workers_are_dealt_the_gpus_the_controller_was_given_in_pci_order(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project(pytester, WATTS)
    conftest = pytester.path / "conftest.py"
    conftest.write_text(
        conftest.read_text()
        + textwrap.dedent(
            """
            import json, os

            def pytest_sessionstart(session):
                if hasattr(session.config, "workerinput"):
                    keys = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")
                    name = f"env_{session.config.workerinput['workerid']}.json"
                    with open(name, "w") as f:
                        json.dump({k: os.environ.get(k) for k in keys}, f)
            """
        )
    )
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,3")
    monkeypatch.setenv("HIP_VISIBLE_DEVICES", "1,3")
    result = pytester.runpytest_subprocess("-n", "2", "--llem-cycles=1", "--junitxml=out.xml")
    result.assert_outcomes(passed=2)
    envs = sorted(json.loads(p.read_text())["CUDA_VISIBLE_DEVICES"] for p in pytester.path.glob("env_gw*.json"))
    assert envs == ["1", "3"]  # physical indices, as CUDA_VISIBLE_DEVICES names them
    for path in pytester.path.glob("env_gw*.json"):
        env = json.loads(path.read_text())
        assert env["HIP_VISIBLE_DEVICES"] == env["CUDA_VISIBLE_DEVICES"] and env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    measured = junit_results(pytester.path / "out.xml")
    assert sorted(int(i) for r in measured for i in r["metrics"]["gpu_energy_j"]) == [1, 3]
    for r in measured:
        ((index, joules),) = r["metrics"]["gpu_energy_j"].items()
        assert joules == pytest.approx(WATTS[int(index)] * r["metrics"]["duration_s"], rel=0.05, abs=0.01)


def test_more_workers_than_gpu_sets_is_a_usage_error(pytester: pytest.Pytester) -> None:
    project(pytester, WATTS[:2])
    result = pytester.runpytest("-n", "3")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*-n 3 needs 3 sets of 1 GPU(s), but this machine shows 2 GPU(s) (0, 1): pass -n 2 (or -n auto)*"]
    )


def test_n_auto_is_one_worker_per_gpu_set(pytester: pytest.Pytester) -> None:
    project(pytester, WATTS)
    # -n auto is decided before any conftest runs: a -p plugin installs the four fake GPUs that early.
    pytester.makepyfile(early_fakes="import zeus_fakes\nzeus_fakes.install(zeus_fakes.FakeGPUs([1.0] * 4), None)\n")
    args = ("-p", "early_fakes", "-n", "auto", "--llem-gpus-per-worker=2", "--llem-cycles=1")
    result = pytester.runpytest_subprocess(*args)  # in its own process, as -n auto is decided at start
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*created: 2/2 workers*"])


def test_resume_works_under_xdist(pytester: pytest.Pytester) -> None:
    project(pytester, WATTS[:2])
    pytester.runpytest("-n", "2", "--llem-cycles=1").assert_outcomes(passed=2)
    (run,) = (pytester.path / ".llem" / "runs").iterdir()
    before = {p.name: p.read_bytes() for p in (run / "results").iterdir()}
    again = pytester.runpytest("-n", "2", "--llem-cycles=2", "--llem-resume", "-v")
    again.assert_outcomes(passed=4)
    assert again.stdout.str().count("RESUMED") == 2  # cycle 1 of each experiment replayed by the workers
    assert [p.name for p in (pytester.path / ".llem" / "runs").iterdir()] == [run.name]
    assert {name: (run / "results" / name).read_bytes() for name in before} == before
    assert json.loads((run / "manifest.json").read_text())["status"] == "complete"


def test_a_gate_under_xdist_fails_exactly_the_regressed_experiment(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(zeus_fakes=FAKES.read_text())
    two_gpus = HUNGRY_CONFTEST.replace("FakeGPUs([100.0], names=[", "FakeGPUs([100.0, 100.0], names=2 * [")
    assert two_gpus != HUNGRY_CONFTEST
    pytester.makeconftest(two_gpus)  # one GPU per worker
    pytester.makefile(".yaml", study_g=HUNGRY_STUDY)
    pytester.runpytest("-n", "2", "--llem-cycles=3", "--llem-save=base").assert_outcomes(passed=6)
    monkeypatch.setenv("PLANTED_SEED", "2")
    # xdist's default distribution: the experiment scheduler keeps each experiment's cycles and gate on one worker
    args = ("-n", "2", "--llem-cycles=3", "--llem-compare=base", "--llem-fail=mean_power_w:10%")
    result = pytester.runpytest(*args, "-rfE", "-v")
    result.assert_outcomes(passed=7, failed=1)
    assert "FAILED study_g.yaml::hungry-2[gate]" in result.stdout.str()
    result.stdout.re_match_lines([r"hungry-1\s+3\s.*unchanged$", r"hungry-2\s+3\s.*regressed$"])
    workers = {}  # experiment → the workers that ran its items
    for line in result.outlines:
        if match := re.match(r"\[(gw\d)\] .* study_g\.yaml::(hungry-\d)\[", line):
            workers.setdefault(match.group(2), set()).add(match.group(1))
    assert sorted(workers) == ["hungry-1", "hungry-2"] and all(len(w) == 1 for w in workers.values())
    assert workers["hungry-1"] != workers["hungry-2"]  # the two experiments ran side by side
    loadgroup = pytester.runpytest(*args, "--dist", "loadgroup")
    assert loadgroup.ret == pytest.ExitCode.USAGE_ERROR
    loadgroup.stderr.fnmatch_lines(["*--llem-compare under pytest-xdist needs --dist load (the default)*"])


# No energy checked here: the plain pytorch backend, as fast as this machine makes it.
SHARDED = STUDY.replace("random_seed: [1, 2]", "random_seed: [1, 2, 3, 4, 5]").replace("padded", "pytorch")


def collected(pytester: pytest.Pytester, *args: str) -> list[str]:
    result = pytester.runpytest("--co", "-q", "--llem-cycles=2", *args)
    return [line for line in result.outlines if line.startswith("study_x.yaml::")]


def run_of_shard(pytester: pytest.Pytester, shard: str) -> Path:
    (run,) = [
        run
        for run in (pytester.path / ".llem" / "runs").iterdir()
        if json.loads((run / "manifest.json").read_text()).get("shard") == shard
    ]
    return run


def test_shards_are_disjoint_whole_experiments_and_merge_back_into_the_full_run(pytester: pytest.Pytester) -> None:
    project(pytester, WATTS[:1], SHARDED)
    everything = collected(pytester)
    shards = [collected(pytester, f"--llem-shard={k}/3") for k in (1, 2, 3)]
    assert len(everything) == 10
    assert sorted(n for shard in shards for n in shard) == sorted(everything)  # union complete, shards disjoint
    for shard in shards:
        experiments = {nodeid.split("::")[1].split("[")[0] for nodeid in shard}
        assert shard and all(f"study_x.yaml::{e}[cycle{c}]" in shard for e in experiments for c in (1, 2))
    bad = pytester.runpytest("--llem-shard=4/3")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*--llem-shard: '4/3' is not I/N with 1 <= I <= N*"])

    for k in (1, 2, 3):
        pytester.runpytest("--llem-cycles=2", f"--llem-shard={k}/3", "--llem-no-gaps").assert_outcomes(
            passed=len(shards[k - 1])
        )
    assert len(list((pytester.path / ".llem" / "runs").iterdir())) == 3
    runs = [run_of_shard(pytester, f"{k}/3") for k in (1, 2, 3)]  # run ids of one second need not sort in order
    assert llem(["merge", *map(str, runs), "-o", str(pytester.path / "merged")]) == 0
    manifest = json.loads((pytester.path / "merged" / "manifest.json").read_text())
    assert sorted(i["nodeid"] for i in manifest["items"]) == sorted(everything)
    assert manifest["status"] == "complete" and len(list((pytester.path / "merged" / "results").iterdir())) == 10
    assert llem(["merge", str(runs[0]), str(runs[2]), "-o", str(pytester.path / "partial")]) == 0
    partial = json.loads((pytester.path / "partial" / "manifest.json").read_text())
    assert partial["status"] == "incomplete" and partial["missing_shards"] == ["2/3"]  # every listed item passed
    assert all(i["status"] == "passed" for i in partial["items"])

    # A merged folder keeps its shards: merging it with the missing one completes the run.
    assert llem(["merge", str(pytester.path / "partial"), str(runs[1]), "-o", str(pytester.path / "again")]) == 0
    again = json.loads((pytester.path / "again" / "manifest.json").read_text())
    assert again["status"] == "complete" and again["shards"] == ["1/3", "2/3", "3/3"]

    many = pytester.runpytest("--llem-cycles=2", "--llem-shard=7/9")  # 5 experiments: shards 6 to 9 hold nothing
    assert many.ret == pytest.ExitCode.OK
    many.stdout.fnmatch_lines(["*pytest-llem: shard 7/9 holds no items: the split gave every unit to other shards"])
    empty = run_of_shard(pytester, "7/9")  # its folder says the shard ran
    assert json.loads((empty / "manifest.json").read_text()) | {"run_id": 0, "started_at": 0, "finished_at": 0} == {
        "run_id": 0, "status": "complete", "started_at": 0, "finished_at": 0, "studies": {}, "cycle_order": {},
        "shard": "7/9", "items": [],
    }  # fmt: skip
    assert pytester.runpytest("-n", "1", "--llem-cycles=2", "--llem-shard=8/9").ret == pytest.ExitCode.OK  # the
    # controller collects nothing itself: the workers tell it that the split left this shard empty
    typo = pytester.runpytest("--llem-cycles=2", "--llem-shard=1/2", "-k", "no_such_experiment")
    assert typo.ret == pytest.ExitCode.NO_TESTS_COLLECTED  # an empty selection is not an empty shard

    pytester.runpytest("--llem-cycles=2", "--llem-shard=1/4", "--llem-no-gaps").assert_outcomes(passed=4)
    other_split = run_of_shard(pytester, "1/4")
    assert llem(["merge", str(runs[0]), str(other_split), "-o", str(pytester.path / "mixed")]) == 2
    other = pytester.runpytest("--llem-cycles=2", "--llem-shard=2/4", f"--llem-resume={other_split.name}")
    assert other.ret == pytest.ExitCode.USAGE_ERROR
    other.stderr.fnmatch_lines(["*--llem-resume: run * was shard 1/4; resume it with --llem-shard=1/4"])


def test_items_a_stopped_session_never_ran_leave_the_run_incomplete(pytester: pytest.Pytester) -> None:
    project(pytester, WATTS[:1])
    pytester.makefile(".yaml", study_a_bad=STUDY.replace("builtin:tiny-llama", "/nonexistent/model"))
    result = pytester.runpytest("-n", "1", "-x", "--llem-cycles=1")
    assert result.ret != pytest.ExitCode.OK  # xdist reports -x as an interruption
    (run,) = (pytester.path / ".llem" / "runs").iterdir()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "incomplete"  # the study_x items were collected by the worker but never reported
    assert [i["status"] for i in manifest["items"]] == ["failed"]


def test_a_project_without_studies_is_left_alone_under_xdist(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        zeus_fakes=FAKES.read_text(),
        conftest="import zeus_fakes\n\ndef pytest_configure(config):\n"
        "    zeus_fakes.install(zeus_fakes.FakeGPUs([1.0]), None)\n",
        test_plain="import os\n\ndef test_env():\n    assert 'LLEM_XDIST_WORKERS' not in os.environ\n",
    )
    result = pytester.runpytest("-n", "2")  # one GPU, two workers: not pytest-llem's business without a study
    result.assert_outcomes(passed=1)
