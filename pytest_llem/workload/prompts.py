"""Prompt texts from the seeded synthetic generator or a local file (ShareGPT: sharegpt.py)."""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..config.dataset import DatasetConfig
from ..errors import DatasetError

# Common English words: synthetic prompts read like text, so tokenizers split them the way they split real prompts.
_VOCABULARY = (
    "the of and to in is that for it as was with be by on not he this are or his from at which but have an they "
    "you were her she there been one all we their has would when if so no will more about can said them some could "
    "into its time only new other then these two may first any like now my such make over our even most after also "
    "did many before must through back years where much your way well down should because each just those people "
    "how too little state good very world still own see men work long here get both between life being under never "
    "day same another know while last might great old year off come since against go came right used take three "
    "energy model token power memory batch device kernel cache latency throughput measure window cycle study"
).split()

PROMPT_FIELDS = ("prompt", "text")


def synthetic_prompts(n: int, input_len: int, seed: int) -> list[str]:
    """``n`` distinct prompts of ``input_len`` words each, the same for the same seed on every machine."""
    rng = random.Random(seed)
    return [f"Prompt {i}: " + " ".join(rng.choice(_VOCABULARY) for _ in range(input_len)) for i in range(n)]


def file_prompts(path: Path, n: int, field: str | None = None) -> list[str]:
    """The first ``n`` prompts of a ``.json`` (a list of records or strings), ``.jsonl``, ``.csv`` or ``.parquet``
    file: each record's ``field``, or its ``prompt`` / ``text`` field when none is named."""
    if not path.is_file():
        raise DatasetError(f"dataset file not found: {path}")
    fields = (field,) if field else PROMPT_FIELDS
    wanted = f"a string field {' or '.join(repr(f) for f in fields)}"
    prompts: list[str] = []
    for where, record in _records(path):
        text = record if isinstance(record, str) and not field else None
        if isinstance(record, dict):
            text = next((record[f] for f in fields if f in record), None)
        if not isinstance(text, str):
            raise DatasetError(f"{path}, {where}: needs {wanted}")
        prompts.append(text)
        if len(prompts) == n:
            return prompts
    raise DatasetError(f"{path} holds {len(prompts)} prompt(s) but the experiment asks for n={n}")


def _records(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, record) for each record of the file, read lazily where the format allows."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    yield f"line {number}", _json(line, path, f"line {number}")
    elif suffix == ".json":
        data = _json(path.read_text(encoding="utf-8"), path, "its content")
        if not isinstance(data, list):
            raise DatasetError(f"{path}: expected a JSON list of records")
        yield from ((f"record {i}", record) for i, record in enumerate(data))
    elif suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as handle:
            yield from ((f"row {i}", row) for i, row in enumerate(csv.DictReader(handle), start=2))
    else:
        try:
            import pyarrow.parquet as parquet
        except ImportError:
            raise DatasetError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from None
        yield from ((f"row {i}", row) for i, row in enumerate(parquet.read_table(path).to_pylist(), start=1))


def _json(text: str, path: Path, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}, {where}: not valid JSON ({exc.msg})") from None


def dataset_path(dataset: DatasetConfig, base_dir: Path | None) -> Path:
    """A relative dataset path is looked up beside the study file, then in the cwd."""
    assert dataset.path is not None
    path = Path(dataset.path).expanduser()
    if not path.is_absolute() and base_dir is not None and (base_dir / path).exists():
        path = base_dir / path
    return path
