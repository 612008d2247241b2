"""``llem report / compare / merge`` on real run folders written by the run store, and baselines saved on disk."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from pytest_llem.cli import main
from pytest_llem.results import baselines, gate
from pytest_llem.results.environment import Environment, GpuFingerprint
from pytest_llem.results.runfolder import RunFolder, merge
from pytest_llem.results.schema import ItemResult, Metrics
from pytest_llem.results.store import ItemEntry, RunFolderError, RunStore

STUDY = "study_decode.yaml"
TIGHT = (1.0, 1.01, 0.99)  # J per output token over three cycles: under 1% noise


def environment(gpu: str) -> Environment:
    return Environment(
        hostname="bench",
        python="3.11.9",
        platform="Linux",
        cpu_model="Test CPU",
        gpus=[GpuFingerprint(index=0, name=gpu, power_limit_w=700.0)],
        gpus_unavailable_reason=None,
        gpu_driver="nvidia 550.54",
        rapl="absent",
        versions={"torch": "2.4.0"},
        git_commit=None,
        git_dirty=None,
    )


def result(experiment_id: str, cycle: int, joules_per_token: float, study: str, study_hash: str) -> ItemResult:
    tokens = 100
    return ItemResult(
        study=study,
        study_design_hash=study_hash,
        experiment_id=experiment_id,
        config_hash=f"config-{experiment_id}",
        cycle=cycle,
        backend="pytorch",
        model="tiny",
        config={"experiment": experiment_id},
        metrics=Metrics(
            duration_s=2.0,
            output_tokens=tokens,
            tokens_per_s=tokens / 2.0,
            energy_j=joules_per_token * tokens,
            energy_per_output_token_j=joules_per_token,
            mean_power_w=joules_per_token * tokens / 2.0,
            energy_source="test meter",
        ),
        started_at=1000.0 + cycle,
        finished_at=1001.0 + cycle,
    )


def make_run(
    runs_dir: Path,
    values: Mapping[str, Sequence[float | None]],
    *,
    study: str = STUDY,
    study_hash: str = "hash1",
    env: Environment | None = None,
    skipped: Sequence[str] = (),
) -> Path:
    """A run folder: each experiment's cycles passed with these J/tok values (None: never ran), laid out interleaved."""
    store = RunStore.create(runs_dir)
    n_cycles = max(len(v) for v in values.values())
    cycles = [(eid, c) for c in range(1, n_cycles + 1) for eid in values if c <= len(values[eid])]
    entries = [ItemEntry(f"{study}::{eid}[cycle{c}]", study, study_hash, eid, c) for eid, c in cycles]
    entries += [
        ItemEntry(f"{study}::{name}", study, study_hash, name, None, "skipped", error="bad") for name in skipped
    ]
    store.register(entries, {study: "interleaved"})
    for eid, cycle in cycles:
        value = values[eid][cycle - 1]
        if value is not None:
            store.started(f"{study}::{eid}[cycle{cycle}]")
            store.finished(
                f"{study}::{eid}[cycle{cycle}]", "passed", result=result(eid, cycle, value, study, study_hash)
            )
    if env is not None:
        store.write_environment(env)
    store.close("complete" if all(v is not None for vs in values.values() for v in vs) else "incomplete")
    return store.folder


def save_baseline(run: Path, name: str = "main", env: Environment | None = None) -> Path:
    folder = RunFolder.open(run)
    baseline = baselines.build(name, folder.results, folder.run_id, env)
    return baselines.save(baseline, run.parent.parent / "baselines")


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    return tmp_path / ".llem" / "runs"


# -- report -----------------------------------------------------------------------------------------------------------


def test_report_prints_the_table_of_a_run(runs_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(runs_dir, {"exp-a": TIGHT, "exp-b": TIGHT}, skipped=["invalid-1[batch_size=0]"])
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"run {run.name} (complete)" in out
    assert f"{STUDY} [hash1]: 2 configs x 3 cycles = 6 items (1 skipped), order interleaved" in out
    rows = [line for line in out.splitlines() if line.startswith(("exp-a ", "exp-b "))]
    assert len(rows) == 2 and all(" 3 " in row for row in rows)
    assert "invalid-1[batch_size=0]: bad" in out


def test_report_finds_the_latest_run_in_a_results_folder(runs_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(runs_dir, {"exp-a": TIGHT})
    assert main(["report", str(runs_dir.parent)]) == 0
    assert f"run {run.name}" in capsys.readouterr().out
    assert RunFolder.open(runs_dir).folder == run


def test_report_of_what_is_not_a_run_folder_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"llem: {tmp_path} is not a run folder") and "Traceback" not in err
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "no such run folder" in capsys.readouterr().err


def test_report_writes_plots_when_asked(runs_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("pytest_llem.report.plots")
    pytest.importorskip("matplotlib")
    run = make_run(runs_dir, {"exp-a": TIGHT, "exp-b": (2.0, 2.1, 1.9)})
    assert main(["report", str(run), "--plots", str(tmp_path / "plots")]) == 0
    written = [Path(line.removeprefix("plot: ")) for line in capsys.readouterr().out.splitlines() if "plot: " in line]
    assert written and all(path.is_file() for path in written)


def test_the_cycle_order_is_read_from_the_manifest(runs_dir: Path) -> None:
    run = RunFolder.open(make_run(runs_dir, {"exp-a": TIGHT, "exp-b": TIGHT}))
    assert run.cycle_order(STUDY) == "interleaved" and run.session().studies[STUDY].cycle_order == "interleaved"
    assert run.cycle_order("study_never.yaml") == "unknown"


# -- compare ----------------------------------------------------------------------------------------------------------


def test_compare_fails_on_a_regressed_experiment_and_names_it(
    runs_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save_baseline(make_run(runs_dir, {"exp-a": TIGHT, "exp-b": TIGHT}))
    worse = make_run(runs_dir, {"exp-a": [v * 1.3 for v in TIGHT], "exp-b": TIGHT})
    assert main(["compare", "main", str(worse)]) == 1
    out = capsys.readouterr().out
    assert f"{STUDY}::exp-a: energy_per_output_token_j: regressed" in out
    assert f"{STUDY}::exp-b: energy_per_output_token_j: unchanged" in out
    assert f"regressed: 1 of 2 compared experiments ({STUDY}::exp-a)" in out
    assert any(line.startswith("exp-a ") for line in out.splitlines())  # the table follows the verdicts


def test_compare_passes_an_unchanged_run(runs_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save_baseline(make_run(runs_dir, {"exp-a": TIGHT, "exp-b": TIGHT}))
    same = make_run(runs_dir, {"exp-a": TIGHT, "exp-b": TIGHT, "exp-new": TIGHT})
    assert main(["compare", "latest", str(same), "--fail", "energy_per_output_token_j:5%", "--fail", "10%"]) == 0
    out = capsys.readouterr().out
    assert f"{STUDY}::exp-new: not in baseline" in out
    assert "no regression in 2 compared experiments" in out


def test_a_run_folder_serves_as_baseline(runs_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = make_run(runs_dir, {"exp-a": TIGHT, "exp-b": TIGHT})
    worse = make_run(runs_dir, {"exp-a": TIGHT, "exp-b": [v * 1.3 for v in TIGHT]})
    assert main(["compare", str(before), str(worse)]) == 1
    out = capsys.readouterr().out
    assert (
        f"against baseline {before.name!r}" in out and f"regressed: 1 of 2 compared experiments ({STUDY}::exp-b)" in out
    )


def test_compare_refuses_other_hardware_unless_told(runs_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save_baseline(make_run(runs_dir, {"exp-a": TIGHT}), env=environment("NVIDIA H100"))
    run = make_run(runs_dir, {"exp-a": TIGHT}, env=environment("NVIDIA A100"))
    assert main(["compare", "main", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("llem: baseline 'main' was measured on NVIDIA H100") and "NVIDIA A100" in err
    assert main(["compare", "main", str(run), "--any-hardware"]) == 0
    assert "compared anyway (--any-hardware)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--fail", "joules:5%"], "llem: 'joules:5%': unknown metric 'joules'"),
        (["--fail", "lots"], "llem: 'lots': write METRIC:PCT"),
        (["--alpha", "2"], "the significance level must be between 0 and 0.5"),
    ],
)
def test_compare_rejects_bad_thresholds(
    runs_dir: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    run = make_run(runs_dir, {"exp-a": TIGHT})
    save_baseline(run)
    assert main(["compare", "main", str(run), *arguments]) == 2
    assert message in capsys.readouterr().err


def test_compare_with_an_unknown_baseline_lists_the_saved_ones(
    runs_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = make_run(runs_dir, {"exp-a": TIGHT})
    save_baseline(run)
    assert main(["compare", "nope", str(run)]) == 2
    assert "llem: no baseline 'nope'" in (err := capsys.readouterr().err) and "saved: main" in err


# -- merge ------------------------------------------------------------------------------------------------------------


def test_merge_joins_the_shards_of_one_study(
    runs_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = make_run(runs_dir, {"exp-a": TIGHT}, env=environment("NVIDIA H100"), skipped=["invalid-1[x]"])
    second = make_run(runs_dir, {"exp-b": TIGHT}, env=environment("NVIDIA H200"), skipped=["invalid-1[x]"])
    out = tmp_path / "merged"
    assert main(["merge", str(first), str(second), "-o", str(out)]) == 0
    assert f"merged 2 runs ({first.name}, {second.name}) into {out}" in capsys.readouterr().out

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["run_id"] == "merged" and manifest["status"] == "complete"
    assert manifest["merged_from"] == [first.name, second.name]
    assert len(manifest["items"]) == 7  # 3 + 3 cycles, the skipped config once
    assert len(list((out / "results").glob("*.json"))) == 6
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary[STUDY]["experiments"]) == {"exp-a", "exp-b"}
    assert json.loads((out / "env.json").read_text())["gpus"][0]["name"] == "NVIDIA H100"  # the first input's
    assert set(manifest["environments"]) == {first.name, second.name}  # the other one is kept too
    assert RunFolder.open(out).session().studies[STUDY].experiment_ids == ["exp-a", "exp-b"]


def test_merge_refuses_one_study_with_two_designs(
    runs_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = make_run(runs_dir, {"exp-a": TIGHT}, study_hash="aaaa")
    second = make_run(runs_dir, {"exp-b": TIGHT}, study_hash="bbbb")
    out = tmp_path / "merged"
    assert main(["merge", str(first), str(second), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"study {STUDY!r} has design hash aaaa in {first} but bbbb in {second}" in err
    assert not out.exists()


def test_merge_keeps_the_one_passed_copy_of_an_item(runs_dir: Path, tmp_path: Path) -> None:
    interrupted = make_run(runs_dir, {"exp-a": [1.0, None, None]})
    rest = make_run(runs_dir, {"exp-a": [None, 1.01, 0.99]})
    (tmp_path / "merged").mkdir()  # an empty folder may be merged into
    merged = merge([RunFolder.open(interrupted), RunFolder.open(rest)], tmp_path / "merged")
    assert [(e.cycle, e.status) for e in merged.entries] == [(1, "passed"), (2, "passed"), (3, "passed")]
    assert merged.status == "complete" and len(merged.results) == 3
    twice = make_run(runs_dir, {"exp-a": TIGHT})
    with pytest.raises(RunFolderError, match=r"exp-a\[cycle1\] \[hash1\] is in .*\(passed\), .*\(passed\)"):
        merge([RunFolder.open(interrupted), RunFolder.open(twice)], tmp_path / "again")
    with pytest.raises(RunFolderError, match="not empty"):
        merge([RunFolder.open(twice)], tmp_path / "merged")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".llem", "merged"]  # a refused merge leaves nothing


# -- the command itself -----------------------------------------------------------------------------------------------


def test_llem_without_a_command_prints_its_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: llem") and "report" in err and "compare" in err and "merge" in err
    assert main(["frobnicate"]) == 2
    assert main(["--help"]) == 0


def test_the_module_runs_as_a_script_without_heavy_imports(runs_dir: Path) -> None:
    run = make_run(runs_dir, {"exp-a": TIGHT})
    done = subprocess.run(
        [sys.executable, "-m", "pytest_llem.cli", "report", str(run)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and "exp-a" in done.stdout
    code = (
        "import sys, pytest_llem.cli; print([m for m in ('torch', 'scipy', 'zeus', 'matplotlib') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_compare_that_compares_nothing_is_not_a_pass(runs_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save_baseline(make_run(runs_dir, {"exp-a": TIGHT}))
    other = make_run(runs_dir, {"exp-other": TIGHT})
    assert main(["compare", "latest", str(other)]) == 2
    captured = capsys.readouterr()
    assert "no regression in 0 compared experiments; 1 baseline experiments not in this run" in captured.out
    assert "llem: no experiment of run" in captured.err


def test_energy_over_other_devices_is_not_compared_but_speed_still_is() -> None:
    def cycles(cpu_j: float | None, tokens_per_s: float) -> list[ItemResult]:
        made = []
        for c, jitter in enumerate((0.99, 1.0, 1.01), start=1):
            r = result("exp-a", c, 0.5 * jitter, STUDY, "hash1")
            changes = {"gpu_energy_j": {0: 40.0 * jitter}, "cpu_energy_j": cpu_j, "tokens_per_s": tokens_per_s * jitter}
            metrics = r.metrics.model_copy(update=changes)
            made.append(r.model_copy(update={"metrics": metrics}))
        return made

    baseline = baselines.build("main", cycles(10.0, 50.0), "run1", None)  # GPU + CPU (one worker)
    thresholds = [gate.Threshold(None, 5.0), gate.Threshold("tokens_per_s", 5.0)]
    (judged,) = baselines.judge_results(baseline, cycles(None, 30.0), thresholds, 0.05)  # GPU only (several workers)
    energy, speed = judged.verdicts or []
    assert energy.metric == "energy_per_output_token_j" and energy.outcome == "inconclusive"
    assert energy.reason == "not comparable: the baseline measured 1 GPU + CPU, this run 1 GPU"
    assert speed.outcome == "regressed"  # tokens/s does not depend on what the meter could see
    (same,) = baselines.judge_results(baseline, cycles(10.0, 50.0), thresholds, 0.05)
    assert [v.outcome for v in same.verdicts or []] == ["unchanged", "unchanged"]


def test_compare_says_which_experiments_need_more_cycles_and_how_many(
    runs_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save_baseline(make_run(runs_dir, {"exp-a": TIGHT, "exp-b": (1.0, 1.3, 0.8)}))
    run = make_run(runs_dir, {"exp-a": TIGHT, "exp-b": (1.05, 0.85, 1.25)})
    assert main(["compare", "main", str(run)]) == 0  # inconclusive passes, as a gate item does
    out = capsys.readouterr().out
    assert f"{STUDY}::exp-a: energy_per_output_token_j: unchanged" in out
    needing = out.split("inconclusive, more cycles would decide (1):\n", 1)[1].splitlines()[0]
    assert needing.startswith(f"  {STUDY}::exp-b: energy_per_output_token_j: about ")
    assert int(needing.split("about ")[1].split()[0]) > 3 and "cycles per side would likely decide it" in needing
