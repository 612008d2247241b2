"""The run folder's store and the pacer, as library code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_llem.config.models import ExecutionConfig
from pytest_llem.files import write_json
from pytest_llem.results.store import ItemEntry, RunFolderError, RunStore, latest_run
from pytest_llem.runner.gaps import Pacer


def test_write_json_replaces_whole_files_and_leaves_no_temporaries(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "file.json"
    write_json(target, {"a": 1})
    write_json(target, {"a": 2, "b": [1, 2]})
    assert json.loads(target.read_text()) == {"a": 2, "b": [1, 2]}
    assert [p.name for p in target.parent.iterdir()] == ["file.json"]
    with pytest.raises(TypeError):
        write_json(target, {"not json": object()})
    assert json.loads(target.read_text()) == {"a": 2, "b": [1, 2]}  # a failed write leaves the old file whole
    assert [p.name for p in target.parent.iterdir()] == ["file.json"]


def test_a_resumed_store_keeps_passed_items_and_reruns_the_rest(tmp_path: Path) -> None:
    first = RunStore.create(tmp_path)
    entries = [ItemEntry(f"s.yaml::e[cycle{c}]", "s.yaml", "h1", "e", c) for c in (1, 2)]
    first.register(entries, {"s.yaml": "sequential"})
    first.started(entries[0].nodeid)
    first.finished(entries[0].nodeid, "passed")
    first.started(entries[1].nodeid)  # killed here
    assert latest_run(tmp_path) == first.folder

    again = RunStore.resume(tmp_path, None)
    assert again.folder == first.folder
    assert again.previous_result(("h1", "e", 1)) is None  # passed, but its result file is missing: it runs again
    assert again.cycle_orders == {"s.yaml": "sequential"}
    again.register([ItemEntry(f"s.yaml::e[cycle{c}]", "s.yaml", "h1", "e", c) for c in (1, 2, 3)], {})
    assert {e.cycle: e.status for e in again.items.values()} == {1: "passed", 2: "pending", 3: "pending"}
    assert again.resume_conflict("s.yaml", "h1") is None
    assert "the study changed since (design hash h1 → h2)" in (again.resume_conflict("s.yaml", "h2") or "")
    assert again.resume_conflict("other.yaml", "h9") is None  # a study the run never had simply runs


def test_resuming_what_does_not_exist_says_what_does(tmp_path: Path) -> None:
    with pytest.raises(RunFolderError, match="no run to resume"):
        RunStore.resume(tmp_path, None)
    made = RunStore.create(tmp_path)
    with pytest.raises(RunFolderError, match=f"no run 'nope' in .*; runs: {made.run_id}"):
        RunStore.resume(tmp_path, "nope")


def test_gaps_owed_between_items_and_cycles() -> None:
    slept: list[float] = []
    pacer = Pacer(sleep=slept.append)
    execution = ExecutionConfig(config_gap_seconds=2.5, cycle_gap_seconds=4.0)
    announced: list[str] = []
    interleaved = [("s", "x", 1), ("s", "y", 1), ("s", "x", 2), ("s", "y", 2), ("t", "x", 1)]  # t: a new study
    waited = [pacer.wait(*item, execution, announced.append) for item in interleaved]
    assert waited == [0.0, 2.5, 4.0, 2.5, 0.0]
    assert sum(slept) == pytest.approx(9.0) and max(slept) <= 1.0  # one-second steps, for the countdown
    assert announced[:3] == ["config gap: 3 s ", "config gap: 2 s ", "config gap: 1 s "]
    sequential = [("s", "x", 1), ("s", "x", 2), ("s", "y", 1), ("s", "y", 2)]
    pacer = Pacer(sleep=slept.append)
    assert [pacer.wait(*item, execution) for item in sequential] == [0.0, 4.0, 2.5, 4.0]
    assert Pacer(sleep=slept.append).wait("s", "x", 1, ExecutionConfig()) == 0.0


def test_an_item_failing_in_setup_and_teardown_is_one_failed_cycle() -> None:
    import json as _json

    from pytest_llem.items import ITEM_PROPERTY, record_report
    from pytest_llem.results.session import SessionResults

    session = SessionResults()
    identity = [(ITEM_PROPERTY, _json.dumps({"study": "s.yaml", "experiment_id": "e", "cycle": 1}))]
    for when in ("setup", "teardown"):
        report = pytest.TestReport(
            "s.yaml::e[cycle1]", ("s.yaml", 0, "e"), {}, "failed", "boom", when, user_properties=identity
        )
        record_report(session, report)
    assert session.failures[("s.yaml", "e")] == 1
