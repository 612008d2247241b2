"""``--llem-shard=I/N``: a deterministic share of a session's work, so a CI matrix or a SLURM job array runs one shard
per job. The unit is an experiment (every cycle of it and its gate together) or, for other tests, the test (and its
gate); units are dealt round-robin in collection order, so shards are disjoint, their union is everything, and each
gets about as many experiments. ``llem merge`` joins the shards' run folders."""

from __future__ import annotations

import re

import pytest

from .gating import GateItem
from .items import ExperimentItem

SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


def parse_shard(text: str) -> tuple[int, int]:
    match = SHARD.fullmatch(text)
    index, count = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    if not 1 <= index <= count:
        raise pytest.UsageError(f"pytest-llem: --llem-shard: {text!r} is not I/N with 1 <= I <= N (e.g. 2/4)")
    return index, count


def unit_of(item: pytest.Item) -> str:
    """What must stay together: an experiment's cycles and gate; a test and its gate."""
    if isinstance(item, ExperimentItem):
        return f"{item.study}::{item.experiment_id}"
    if isinstance(item, GateItem):
        return item.nodeid.removesuffix("[gate]")
    return item.nodeid


def shard_items(items: list[pytest.Item], index: int, count: int) -> tuple[list[pytest.Item], list[pytest.Item]]:
    """(kept, dropped) for shard ``index`` of ``count`` (1-based)."""
    position: dict[str, int] = {}
    for item in items:
        position.setdefault(unit_of(item), len(position))
    kept = [item for item in items if position[unit_of(item)] % count == index - 1]
    dropped = [item for item in items if position[unit_of(item)] % count != index - 1]
    return kept, dropped


def check_option(config: pytest.Config) -> None:
    """A bad --llem-shard is refused at start."""
    if config.getoption("llem_shard") is not None:
        parse_shard(config.getoption("llem_shard"))


def apply(config: pytest.Config, items: list[pytest.Item]) -> None:
    text = config.getoption("llem_shard")
    if text is None:
        return
    kept, dropped = shard_items(items, *parse_shard(text))
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = kept


def finish(session: pytest.Session) -> None:
    """A shard that holds nothing (more shards than experiments) is not a failure of its CI job: exit 0, not 5.
    Under xdist the controller cannot tell it from an empty session (the workers collected), so there too."""
    config = session.config
    text = config.getoption("llem_shard")
    if text is None or session.exitstatus != pytest.ExitCode.NO_TESTS_COLLECTED:
        return
    session.exitstatus = pytest.ExitCode.OK
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"pytest-llem: shard {text} holds no items (more shards than units of work)")
