"""Prompts for an experiment: the seeded synthetic generator or a ``.jsonl`` file."""

from __future__ import annotations

import json
import random
from pathlib import Path

from ..config.models import DatasetConfig
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


def jsonl_prompts(path: Path, n: int) -> list[str]:
    """The first ``n`` prompts of a ``.jsonl`` file whose lines carry a ``prompt`` or ``text`` field."""
    if not path.is_file():
        raise DatasetError(f"dataset file not found: {path}")
    prompts: list[str] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}, line {number}: not valid JSON ({exc.msg})") from None
            text = next((record[f] for f in PROMPT_FIELDS if isinstance(record, dict) and f in record), None)
            if not isinstance(text, str):
                raise DatasetError(f"{path}, line {number}: needs a string field 'prompt' or 'text'")
            prompts.append(text)
            if len(prompts) == n:
                return prompts
    raise DatasetError(f"{path} holds {len(prompts)} prompt(s) but the experiment asks for n={n}")


def load_prompts(dataset: DatasetConfig, n: int, *, seed: int, base_dir: Path | None = None) -> list[str]:
    """The experiment's prompts; a relative dataset path is looked up beside the study file, then in the cwd."""
    if dataset.path is None:
        return synthetic_prompts(n, dataset.input_len, dataset.seed if dataset.seed is not None else seed)
    path = Path(dataset.path).expanduser()
    if not path.is_absolute() and base_dir is not None and (base_dir / path).exists():
        path = base_dir / path
    return jsonl_prompts(path, n)
