"""The ``gpu:`` section: deployment settings of the GPUs an item uses, set before it and restored after it."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StrictInt, field_validator
from pydantic_core import PydanticCustomError

from .strict import _Strict


class GpuConfig(_Strict):
    """Deployment settings of the GPUs an item uses (the GPUs its energy is measured on), set before the item and
    restored after it (energy/gpu_settings.py). None leaves a setting as the machine has it."""

    power_limit_w: StrictInt | None = Field(None, gt=0, description="power limit of each GPU, whole watts")
    locked_clocks_mhz: tuple[Annotated[StrictInt, Field(gt=0)], Annotated[StrictInt, Field(gt=0)]] | None = Field(
        None, description="[min, max] graphics clocks, MHz"
    )

    @field_validator("locked_clocks_mhz")
    @classmethod
    def _ordered(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and value[0] > value[1]:
            raise PydanticCustomError(
                "clock_range", "must be [min, max] with min <= max, not {value}", {"value": list(value)}
            )
        return value

    @property
    def sets_anything(self) -> bool:
        return self.power_limit_w is not None or self.locked_clocks_mhz is not None
