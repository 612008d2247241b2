"""The ``dataset:`` section: where an experiment's prompts come from and how long its outputs are."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StrictInt, TypeAdapter, field_validator, model_validator
from pydantic_core import PydanticCustomError

from .strict import _Strict

DATASET_FILE_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet")
OutputLen = Literal["reference", "natural"] | Annotated[StrictInt, Field(ge=1)]
_OUTPUT_LEN_NUMBER: TypeAdapter[int] = TypeAdapter(Annotated[StrictInt, Field(ge=1)])


class DatasetConfig(_Strict):
    """Prompts: ``name: synthetic`` (the seeded generator; the default), ``name: sharegpt`` (the ShareGPT V3
    conversations vLLM's benchmarks use), or a local file (``path``, ``field``).

    ``output_len`` — how many tokens each prompt generates: ``reference`` (its reference completion's length, EOS
    ignored: sharegpt's default), ``natural`` (until EOS, capped by ``max_output_tokens``) or a number (exactly that
    many); unset elsewhere: ``max_output_tokens`` and the ``decoder`` settings decide."""

    name: Literal["synthetic", "sharegpt"] | None = None
    path: str | None = None
    field: str | None = Field(None, min_length=1, description="file: the field holding each prompt")
    input_len: StrictInt = Field(64, ge=1, description="synthetic prompts: words per prompt")
    seed: StrictInt | None = Field(None, description="the sample's seed (default: the experiment's random_seed)")
    output_len: OutputLen | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        if data == "synthetic":
            return {}
        if data == "sharegpt":
            return {"name": data}
        if isinstance(data, str):
            return {"path": data}
        if isinstance(data, dict) and data.get("name") == "synthetic":  # one spelling of the default, one identity
            return {key: value for key, value in data.items() if key != "name"}
        return data

    @field_validator("output_len", mode="wrap")
    @classmethod
    def _policy_or_count(cls, value: Any, handler: Any) -> Any:
        """One error naming what is allowed, not one per member of the union."""
        if value is None or value in ("reference", "natural"):
            return value
        if isinstance(value, str) and not value.strip().lstrip("+-").isdigit():  # '3' is refused as a number below
            raise PydanticCustomError(
                "output_len", "must be reference, natural or a number of tokens, not '{value}'", {"value": value}
            )
        return _OUTPUT_LEN_NUMBER.validate_python(value)

    @field_validator("path")
    @classmethod
    def _known_format(cls, value: str | None) -> str | None:
        if value is not None and not value.lower().endswith(DATASET_FILE_SUFFIXES):
            raise PydanticCustomError(
                "dataset_path",
                "expected sharegpt, synthetic, or a {suffixes} file, got {value}",
                {"value": repr(value), "suffixes": "/".join(DATASET_FILE_SUFFIXES)},
            )
        return value

    @model_validator(mode="after")
    def _one_source(self) -> DatasetConfig:
        if self.name is not None and self.path is not None:
            raise PydanticCustomError("dataset_source", "give name or path, not both")
        if self.field is not None and self.path is None:
            raise PydanticCustomError("dataset_field", "field names the prompt field of a file: it needs path")
        if self.output_len == "reference" and self.source != "sharegpt":
            raise PydanticCustomError(
                "dataset_output_len", "output_len: reference needs reference completions: only sharegpt has them"
            )
        return self

    @property
    def source(self) -> Literal["synthetic", "sharegpt", "file"]:
        return "file" if self.path is not None else (self.name or "synthetic")

    @property
    def synthetic(self) -> bool:
        return self.source == "synthetic"

    @property
    def output_policy(self) -> OutputLen | None:
        """``output_len`` in force: as written, else ``reference`` for sharegpt, else None (the decoder decides)."""
        if self.output_len is not None:
            return self.output_len
        return "reference" if self.source == "sharegpt" else None
