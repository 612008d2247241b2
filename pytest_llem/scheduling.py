"""Scheduling units: what must run together, under pytest-xdist and under ``--llem-shard``.

Under pytest-xdist, every cycle of an experiment and its gate run in one worker, in collection order.

Two reasons: the cycles of an experiment then run on one GPU set, so their spread is run-to-run noise and not the
difference between two GPUs; and its gate item runs after those cycles, in the process that holds their results.
xdist's default distribution (``load``) would scatter them. Other tests stay one unit each (a test and its ``[gate]``
together), so a mixed session is balanced as ``load`` would balance it."""

from __future__ import annotations

import re
from typing import Any

import pytest

SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")

# "<study>::<experiment>[cycle3]", "<study>::<experiment>[gate]", "<file>::<test>[gate]"
_ITEM_SUFFIX = re.compile(r"(\[cycle\d+\])?(\[gate\])?$")


def unit_of_nodeid(nodeid: str) -> str:
    """The scheduling unit of an item: the nodeid without its cycle or gate suffix."""
    return _ITEM_SUFFIX.sub("", nodeid, count=1)


def parse_shard(text: str) -> tuple[int, int]:
    """``--llem-shard=I/N`` as (I, N), 1-based."""
    match = SHARD.fullmatch(text)
    index, count = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    if not 1 <= index <= count:
        raise pytest.UsageError(f"pytest-llem: --llem-shard: {text!r} is not I/N with 1 <= I <= N (e.g. 2/4)")
    return index, count


def shard_label(config: pytest.Config) -> str | None:
    """This session's shard as the run folder records it ("2/4"), or None."""
    text = config.getoption("llem_shard")
    return None if text is None else "{}/{}".format(*parse_shard(text))


def takes_over(config: pytest.Config) -> bool:
    """Only xdist's default distribution is replaced, and only in sessions with llem work: an explicit
    ``--dist loadfile``/``loadscope`` already keeps experiments whole, and `pytest -n 8` on a project's unit tests is
    none of this plugin's business."""
    from .workers import runs_studies

    gated = config.getoption("llem_compare") is not None
    return config.getvalue("dist") == "load" and (gated or runs_studies(config))


def make_scheduler(config: pytest.Config, log: Any) -> Any:
    if not takes_over(config):
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ExperimentScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of_nodeid(nodeid)

    return ExperimentScheduling(config, log)
