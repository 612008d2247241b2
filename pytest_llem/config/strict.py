"""The base of every config section (unknown keys are errors, and a validated section is never changed), and the
error a rule across fields raises: an invalid combination, which the grid turns into a skipped config."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationInfo
from pydantic_core import PydanticCustomError

from .platform import Platform, detect_platform

INVALID_COMBINATION = "invalid_combination"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def invalid_combination(message: str) -> PydanticCustomError:
    """An error that makes a configuration a skipped config rather than a broken file."""
    return PydanticCustomError(INVALID_COMBINATION, message)


def context_platform(info: ValidationInfo) -> Platform:
    """The platform validation runs for: the one the grid passes in its context, else this machine's."""
    context = info.context or {}
    platform: Platform = context.get("platform") or detect_platform()
    return platform
