"""Collection that scales: a runaway sweep is one clean collection error, the limit is an ini key, and study-wide facts
travel once per study, not once per item (in memory and in test reports, with and without xdist)."""

from __future__ import annotations

import json

import pytest

from pytest_llem.items import ITEM_PROPERTY, STUDY_PROPERTY, ExperimentItem

TINY = """
model: builtin:tiny-llama
precision: fp32
n: 2
max_output_tokens: 2
"""
RUNAWAY = (
    TINY
    + "sweep:\n"
    + "".join(
        f"  {key}: [{', '.join(str(v) for v in range(1, 31))}]\n"
        for key in ("n", "random_seed", "max_input_tokens", "max_output_tokens", "decoder.top_k", "pytorch.batch_size")
    )
)
# Half of the configs are invalid on every machine (a compile mode without torch_compile): they are skipped at setup,
# so a run reports every one of them without running inference.
HALF_INVALID = TINY + "sweep:\n  random_seed: [{seeds}]\n  pytorch.torch_compile_mode: [null, default]\n"


def test_a_runaway_sweep_is_one_collection_error_and_other_studies_still_collect(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", study_runaway=RUNAWAY, study_good=TINY)
    result = pytester.runpytest("--collect-only", "-q", "--llem-cycles=1")
    output = result.stdout.str()
    result.assert_outcomes(errors=1)
    assert "ERROR collecting study_runaway.yaml" in output and "Traceback" not in output
    result.stdout.re_match_lines(
        [r"study_runaway\.yaml: sweep: expands to 729,000,000 experiments \(30 \(n\) × 30 \(random_seed\) × .*"]
    )
    assert "llem_max_experiments" in output
    assert "study_good.yaml::pytorch[cycle1]" in output


def test_the_ini_key_sets_the_limit(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", study_s=TINY + "sweep:\n  random_seed: [1, 2, 3, 4, 5, 6]\n")
    pytester.makeini("[pytest]\nllem_max_experiments = 5\n")
    refused = pytester.runpytest("--collect-only", "-q", "--llem-cycles=1")
    refused.assert_outcomes(errors=1)
    refused.stdout.fnmatch_lines(["study_s.yaml: sweep: expands to 6 experiments*limit of 5 per study*"])
    pytester.makeini("[pytest]\nllem_max_experiments = 6\n")
    pytester.runpytest("--collect-only", "-q", "--llem-cycles=1").assert_outcomes()
    pytester.makeini("[pytest]\nllem_max_experiments = many\n")
    bad = pytester.runpytest("--collect-only", "-q")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*pytest-llem: llem_max_experiments (ini): expected a positive integer, not 'many'*"])


def test_items_share_their_studys_facts_instead_of_carrying_copies(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", study_s=TINY + "sweep:\n  random_seed: [1, 2, 3]\n")
    items, _ = pytester.inline_genitems("--llem-cycles=2")
    experiments = [item for item in items if isinstance(item, ExperimentItem)]
    assert len(experiments) == 6
    assert len({id(item.overview) for item in experiments}) == 1
    assert len({id(item.execution) for item in experiments}) == 1
    assert all(not item.user_properties for item in experiments)  # nothing per item until it reports
    assert experiments[0].overview.experiment_ids == ["pytorch-1", "pytorch-2", "pytorch-3"]


REPORT_LOG = """
import json

WRITER = True

def pytest_configure(config):
    global WRITER
    WRITER = not hasattr(config, "workerinput")  # under xdist: what the controller received

def pytest_runtest_logreport(report):
    if not WRITER:
        return
    with open("reports.jsonl", "a") as out:
        out.write(json.dumps([report.nodeid, report.when, report.user_properties]) + "\\n")
"""


def reported(pytester: pytest.Pytester) -> list[tuple[str, str, dict[str, str]]]:
    lines = (pytester.path / "reports.jsonl").read_text().splitlines()
    return [(nodeid, when, dict(props)) for nodeid, when, props in map(json.loads, lines)]


@pytest.mark.parametrize("workers", [None, 2], ids=["one process", "xdist"])
def test_reports_carry_the_study_once_per_worker_and_a_small_entry_per_item(
    pytester: pytest.Pytester, workers: int | None
) -> None:
    """What crosses from a worker to the controller must not grow with the study: a report of a 40-config study is as
    small as one of a 4-config study, and the study's overview is sent at most once per worker."""
    pytester.makeconftest(REPORT_LOG)
    sizes = {}
    for seeds in (2, 20):
        pytester.makefile(".yaml", study_s=HALF_INVALID.replace("{seeds}", ", ".join(str(s) for s in range(seeds))))
        (pytester.path / "reports.jsonl").unlink(missing_ok=True)
        args = ["--llem-cycles=1", "-k", "invalid"]
        result = pytester.runpytest(*args, *(["-n", str(workers)] if workers else []))
        result.assert_outcomes(skipped=seeds)
        reports = reported(pytester)
        assert len(reports) == 2 * seeds  # setup (skipped) and teardown of each invalid config
        entries = [json.loads(props[ITEM_PROPERTY]) for _, _, props in reports]
        assert all(entry["nodeid"] == nodeid for entry, (nodeid, _, _) in zip(entries, reports, strict=True))
        overviews = [props[STUDY_PROPERTY] for _, _, props in reports if STUDY_PROPERTY in props]
        assert len(overviews) <= (workers or 0)  # in one process the session already knows its studies
        if workers:
            assert json.loads(overviews[0])["n_cycles"] == 1 and len(json.loads(overviews[0])["skipped"]) == seeds
        sizes[seeds] = max(len(json.dumps(props)) for _, _, props in reports if STUDY_PROPERTY not in props)
        manifest = json.loads(next((pytester.path / ".llem" / "runs").glob("*/manifest.json")).read_text())
        assert sum(entry["status"] == "skipped" for entry in manifest["items"]) == seeds
        for run in (pytester.path / ".llem" / "runs").iterdir():  # the next round starts from an empty results dir
            for path in sorted(run.rglob("*"), reverse=True):
                path.unlink() if path.is_file() else path.rmdir()
            run.rmdir()
    assert sizes[20] - sizes[2] <= 4  # the entry grows by the digits of an id, not by the study
