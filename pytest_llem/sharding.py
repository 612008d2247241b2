"""``--llem-shard=I/N``: a deterministic share of a session's work, so a CI matrix or a SLURM job array runs one shard
per job. The unit is an experiment (every cycle of it and its gate together) or, for other tests, the test (and its
gate); units are dealt round-robin in collection order, so shards are disjoint, their union is everything, and each
gets about as many experiments. ``llem merge`` joins the shards' run folders."""

from __future__ import annotations

import pytest

from . import runs
from .scheduling import parse_shard, unit_of_nodeid

SPLIT = "llem_shard_split"  # workeroutput key under xdist: (kept, dropped)
split_key = pytest.StashKey[tuple[int, int]]()  # how many items the shard kept, and left to the others


def shard_items(items: list[pytest.Item], index: int, count: int) -> tuple[list[pytest.Item], list[pytest.Item]]:
    """(kept, dropped) for shard ``index`` of ``count`` (1-based)."""
    position: dict[str, int] = {}
    for item in items:
        position.setdefault(unit_of_nodeid(item.nodeid), len(position))
    kept = [item for item in items if position[unit_of_nodeid(item.nodeid)] % count == index - 1]
    dropped = [item for item in items if position[unit_of_nodeid(item.nodeid)] % count != index - 1]
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
    config.stash[split_key] = (len(kept), len(dropped))
    if hasattr(config, "workeroutput"):  # xdist's controller collects nothing: it learns this from the workers
        config.workeroutput[SPLIT] = [len(kept), len(dropped)]


def worker_finished(config: pytest.Config, workeroutput: dict[str, object]) -> None:
    split = workeroutput.get(SPLIT)
    if isinstance(split, list) and len(split) == 2:  # every worker collected the same items: any one tells
        config.stash[split_key] = (int(split[0]), int(split[1]))


def finish(session: pytest.Session) -> None:
    """A shard that holds nothing because the split gave its share to the others (more shards than experiments) is
    not a failure of its CI job: exit 0, not 5, and an empty run folder for ``llem merge``. A session that collected
    nothing at all (a wrong path, a ``-k`` matching nothing) keeps exit 5."""
    config = session.config
    text = config.getoption("llem_shard")
    if text is None or session.exitstatus != pytest.ExitCode.NO_TESTS_COLLECTED:
        return
    kept, dropped = config.stash.get(split_key, (0, 0))
    if kept or not dropped:  # the shard had items (a -k left none of them), or there was nothing to split
        return
    session.exitstatus = pytest.ExitCode.OK
    runs.record_empty_shard(config)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"pytest-llem: shard {text} holds no items: the split gave every unit to other shards")
