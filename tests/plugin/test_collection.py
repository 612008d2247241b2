"""Collection of study files into items, as a user sees it (pytester runs pytest inside a temp folder)."""

from __future__ import annotations

import re

import pytest

TINY = """
model: builtin:tiny-llama
precision: fp32
n: 2
max_output_tokens: 2
"""


def item_names(result: pytest.RunResult) -> list[str]:
    return [line.split("::", 1)[1] for line in result.outlines if "::" in line and not line.startswith(" ")]


def test_study_yaml_and_yml_are_collected_other_yaml_is_not(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", study_a=TINY)
    pytester.makefile(".yml", study_b=TINY)
    pytester.makefile(".yaml", config=TINY, notastudy=TINY)
    result = pytester.runpytest("--collect-only", "-q", "--llem-cycles=1")
    result.assert_outcomes()
    assert sorted(line.split("::")[0] for line in result.outlines if "::" in line) == ["study_a.yaml", "study_b.yml"]


def test_items_follow_cycle_order_and_are_named_by_experiment_and_cycle(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", study_x=TINY + "sweep:\n  pytorch.batch_size: [1, 2]\n")
    sequential = pytester.runpytest("--collect-only", "-q", "--llem-cycles=2", "--llem-cycle-order=sequential")
    assert item_names(sequential) == [
        "pytorch-1[cycle1]",
        "pytorch-1[cycle2]",
        "pytorch-2[cycle1]",
        "pytorch-2[cycle2]",
    ]
    interleaved = pytester.runpytest("--collect-only", "-q", "--llem-cycles=2")
    assert item_names(interleaved) == [
        "pytorch-1[cycle1]",
        "pytorch-2[cycle1]",
        "pytorch-1[cycle2]",
        "pytorch-2[cycle2]",
    ]


def test_shuffled_order_is_a_permutation_per_cycle_and_seeded(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", study_x=TINY + "sweep:\n  n: [1, 2, 3, 4, 5]\n")
    args = ["--collect-only", "-q", "--llem-cycles=3", "--llem-cycle-order=shuffled"]
    first = item_names(pytester.runpytest(*args, "--llem-shuffle-seed=1"))
    again = item_names(pytester.runpytest(*args, "--llem-shuffle-seed=1"))
    other = item_names(pytester.runpytest(*args, "--llem-shuffle-seed=2"))
    assert first == again != other
    for k in range(3):
        assert sorted(first[5 * k : 5 * k + 5]) == sorted(f"pytorch-{n}[cycle{k + 1}]" for n in range(1, 6))


MULTI = """
model: builtin:tiny-llama
backend: [pytorch, vllm]
n: 2
max_output_tokens: 2
sweep:
  precision: [fp32, bf16]
  pytorch.batch_size: [1, 2]
"""


def test_backend_keyword_selects_exactly_that_backends_items(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", study_multi=MULTI)
    every = item_names(pytester.runpytest("--collect-only", "-q", "--llem-cycles=1"))
    vllm = item_names(pytester.runpytest("--collect-only", "-q", "--llem-cycles=1", "-k", "vllm"))
    torch = item_names(pytester.runpytest("--collect-only", "-q", "--llem-cycles=1", "-k", "pytorch"))
    assert sorted(vllm + torch) == sorted(every)
    assert vllm == ["vllm-fp32[cycle1]", "vllm-bf16[cycle1]"]
    assert len(torch) == 4 and all(name.startswith("pytorch-") for name in torch)
    marked = item_names(pytester.runpytest("--collect-only", "-q", "--llem-cycles=1", "-m", "vllm"))
    assert marked == vllm


def test_header_says_configs_cycles_items_and_skips_per_study(pytester: pytest.Pytester) -> None:
    pytester.makefile(
        ".yaml",
        study_multi=MULTI + "experiments:\n  - {backend: pytorch, pytorch: {load_in_4bit: true, load_in_8bit: true}}\n",
    )
    result = pytester.runpytest("--collect-only", "--llem-cycles=2")
    result.stdout.re_match_lines([r"study_multi\.yaml \[[0-9a-f]{16}\]: 6 configs x 2 cycles = 12 items \(1 skipped\)"])


def test_skipped_config_is_one_skipped_item_with_its_reason(pytester: pytest.Pytester) -> None:
    pytester.makefile(
        ".yaml", study_s=TINY + "experiments:\n  - {}\n  - {pytorch: {load_in_4bit: true, load_in_8bit: true}}\n"
    )
    result = pytester.runpytest("-rs", "--llem-cycles=3", "-k", "invalid")
    result.assert_outcomes(skipped=1, deselected=3)
    result.stdout.fnmatch_lines(
        ["SKIPPED [[]1[]] study_s.yaml*: invalid config: pytorch: load_in_4bit and load_in_8bit are both true*"]
    )
    assert result.ret == 0


@pytest.mark.parametrize(
    ("ini", "execution", "options", "expected"),
    [
        ("", "", [], (3, "interleaved")),
        ("llem_cycles = 2\nllem_cycle_order = sequential", "", [], (2, "sequential")),
        ("llem_cycles = 2", "execution: {n_cycles: 4}", [], (4, "interleaved")),
        (
            "llem_cycles = 2",
            "execution: {n_cycles: 4, cycle_order: sequential}",
            ["--llem-cycles=1"],
            (1, "sequential"),
        ),
    ],
)
def test_execution_precedence_command_line_study_ini_defaults(
    pytester: pytest.Pytester, ini: str, execution: str, options: list[str], expected: tuple[int, str]
) -> None:
    pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makefile(".yaml", study_p=TINY + "sweep:\n  n: [1, 2]\n" + execution + "\n")
    names = item_names(pytester.runpytest("--collect-only", "-q", *options))
    cycles, order = expected
    assert len(names) == 2 * cycles
    if cycles > 1:
        second = "pytorch-1[cycle2]" if order == "sequential" else "pytorch-2[cycle1]"
        assert names[1] == second


BAD_INPUTS = {
    "syntax": ("model: [unclosed\n", r"invalid YAML at line \d+"),
    "list_document": ("- model: x\n", r"a study must be a mapping of keys, got a list"),
    "unknown_key": (TINY + "precison: fp16\n", r"precison: unknown key 'precison' \(did you mean 'precision'\?\)"),
    "wrong_type": (TINY + "max_input_tokens: lots\n", r"max_input_tokens: input should be a valid integer"),
    "empty_sweep": (TINY + "sweep:\n  n: []\n", r"sweep\.n: empty list"),
    "missing_base": (TINY + "base: nowhere.yaml\n", r"base: file not found: .*nowhere\.yaml"),
    "unlisted_backend": (
        TINY + "backend: pytorch\nsweep:\n  vllm.engine.max_num_seqs: [1]\n",
        r"sweep\.vllm\.engine\.max_num_seqs: is scoped to backend vllm",
    ),
    "all_invalid": (TINY + "pytorch: {load_in_4bit: true, load_in_8bit: true}\n", r"nothing to run"),
    "bad_execution": (TINY + "execution: {n_cycles: 0}\n", r"execution\.n_cycles: input should be greater than"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_clean_collection_error_and_other_studies_still_collect(
    pytester: pytest.Pytester, case: str
) -> None:
    text, message = BAD_INPUTS[case]
    pytester.makefile(".yaml", study_bad=text, study_good=TINY)
    result = pytester.runpytest("--collect-only", "--llem-cycles=1")
    output = result.stdout.str()
    assert "ERROR collecting study_bad.yaml" in output
    assert re.search(r"^study_bad\.yaml: " + message, output, re.MULTILINE), output
    assert "Traceback" not in output and "pytest_llem/" not in output
    assert "study_good.yaml" in output and "pytorch[cycle1]" in output
    result.assert_outcomes(errors=1)


def test_continue_on_collection_errors_runs_the_good_study(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", study_bad="precison: fp16\n", study_good=TINY + "warmup: {enabled: false}\n")
    result = pytester.runpytest("--llem-cycles=1", "--continue-on-collection-errors")
    result.assert_outcomes(passed=1, errors=1)


def test_a_bad_option_value_is_one_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", study_a=TINY, study_b=TINY)
    result = pytester.runpytest("--collect-only", "--llem-cycles=0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*pytest-llem: --llem-cycles: input should be greater than or equal to 1*"])


def test_backend_marker_also_selects_that_backends_invalid_configs(pytester: pytest.Pytester) -> None:
    contradiction = "{backend: vllm, precision: fp16, vllm: {beam_search: {beam_width: 2}, sampling: {n: 1}}}"
    pytester.makefile(".yaml", study_m=MULTI + f"experiments:\n  - {contradiction}\n")
    marked = item_names(pytester.runpytest("--collect-only", "-q", "--llem-cycles=1", "-m", "vllm"))
    assert marked == ["vllm-fp32[cycle1]", "vllm-bf16[cycle1]", "invalid-1[vllm-fp16]"]
