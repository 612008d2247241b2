"""pytest-xdist with one worker per GPU set: energy counters are per device, so two items on one GPU would pollute each
other's readings. The controller deals the visible GPUs out in sets of ``--llem-gpus-per-worker``; each worker (and
every process it starts) sees only its set through ``CUDA_VISIBLE_DEVICES``. CPU packages are shared by all workers,
so with more than one worker their RAPL energy is not measured (null, with that reason)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from .energy.meter import CPU_SHARED_ENV, GpuDevice

GPUS_INPUT = "llem_gpus"  # workerinput key: the worker's CUDA_VISIBLE_DEVICES
SHARED_INPUT = "llem_workers"  # workerinput key: how many workers share the CPUs
SKIPPED_DIRS = {"node_modules", "__pycache__", "build", "dist", "site-packages"}


_runs_studies_key = pytest.StashKey[bool]()


def runs_studies(config: pytest.Config) -> bool:
    """Whether this session's paths hold a study file: only then does pytest-llem deal GPUs to xdist workers (the
    plugin is loaded in every pytest run; `pytest -n 8` on a project's unit tests is none of its business). Walked
    once per session: the controller, `-n auto` and the scheduler all ask."""
    if _runs_studies_key not in config.stash:
        config.stash[_runs_studies_key] = _paths_hold_studies(config)
    return config.stash[_runs_studies_key]


def _paths_hold_studies(config: pytest.Config) -> bool:
    from .items import is_study_file

    for argument in config.args or [str(config.invocation_params.dir)]:
        path = Path(argument.split("::")[0])
        if path.is_file():
            if is_study_file(path):
                return True
            continue
        for folder, subfolders, files in os.walk(path):
            subfolders[:] = [d for d in subfolders if not d.startswith(".") and d not in SKIPPED_DIRS]
            if any(is_study_file(Path(folder) / name) for name in files):
                return True
    return False


def gpu_sets(gpus: list[GpuDevice], per_worker: int) -> list[list[int]]:
    """Disjoint sets of ``per_worker`` GPUs (physical indices) in the order the driver lists them; a remainder too
    small for a set stays idle."""
    indices = [gpu.physical_index for gpu in gpus]
    return [indices[i : i + per_worker] for i in range(0, len(indices) - per_worker + 1, per_worker)]


def _per_worker(config: pytest.Config) -> int:
    value = config.getoption("llem_gpus_per_worker")
    if value is None:
        return 1
    if value < 1:
        raise pytest.UsageError(f"pytest-llem: --llem-gpus-per-worker must be 1 or more, not {value}")
    return int(value)


def _visible_sets(config: pytest.Config) -> tuple[list[GpuDevice], list[list[int]]]:
    from .energy.zeus import visible_gpus  # Zeus only when xdist is asked for

    gpus, _ = visible_gpus()
    return gpus, gpu_sets(gpus, _per_worker(config))


class XdistController:
    """Registered on the controller of an xdist session: checks the worker count against the GPUs and hands each
    worker its set."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.sets: list[list[int]] = []

    @pytest.hookimpl(tryfirst=True)  # before xdist starts the workers
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        workers = self.config.getoption("numprocesses", None) or 0
        gpus, self.sets = _visible_sets(self.config)
        if gpus and workers > len(self.sets):
            per_worker = _per_worker(self.config)
            raise pytest.UsageError(
                f"pytest-llem: -n {workers} needs {workers} sets of {per_worker} GPU(s), but this machine shows "
                f"{len(gpus)} GPU(s) ({', '.join(str(g.physical_index) for g in gpus)}): pass -n {len(self.sets)} "
                "(or -n auto), or fewer --llem-gpus-per-worker"
            )

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput[SHARED_INPUT] = node.workerinput.get("workercount", 1)
        position = int(str(node.workerinput["workerid"]).removeprefix("gw"))
        if position < len(self.sets):  # sessionstart refused more workers than sets where there are GPUs
            node.workerinput[GPUS_INPUT] = ",".join(str(i) for i in self.sets[position])


def auto_workers(config: pytest.Config) -> int | None:
    """``-n auto``: one worker per GPU set where there are GPUs; None lets xdist decide (CPU count) otherwise."""
    if not runs_studies(config):
        return None
    gpus, sets = _visible_sets(config)
    return len(sets) if gpus else None


def narrow_worker(config: pytest.Config) -> None:
    """In an xdist worker, before anything (a conftest, Zeus, CUDA) looks at the GPUs: see only this worker's set,
    and note whether the CPUs are shared."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None:
        return
    if GPUS_INPUT in workerinput:
        os.environ["CUDA_VISIBLE_DEVICES"] = workerinput[GPUS_INPUT]
        if "HIP_VISIBLE_DEVICES" in os.environ:  # ROCm (and Zeus's AMD path) read it before CUDA_VISIBLE_DEVICES
            os.environ["HIP_VISIBLE_DEVICES"] = workerinput[GPUS_INPUT]
        # The sets hold the driver's indices (NVML numbers GPUs in PCI bus order); CUDA's default order is "fastest
        # first", which on a mixed machine would hand the worker another GPU than the one its meter reads.
        os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    if int(workerinput.get(SHARED_INPUT, 1)) > 1:
        os.environ[CPU_SHARED_ENV] = str(workerinput[SHARED_INPUT])


def configure_controller(config: pytest.Config) -> None:
    controller = not hasattr(config, "workerinput") and not config.option.collectonly
    if config.getoption("numprocesses", None) and controller and runs_studies(config):
        config.pluginmanager.register(XdistController(config), "llem-xdist-controller")
