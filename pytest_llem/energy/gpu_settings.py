"""GPU deployment settings (the power limit, locked graphics clocks): set through Zeus's device layer on the GPUs an
item uses, read back, and restored to what they were, by the process that outlives the item's child (pytest's).

Before anything changes, what it was goes into a journal file (``<results dir>/gpu-settings/<host>-<pid>.json``); it
is removed once restored. A session killed before it could restore (SIGKILL, a lost machine) leaves its journal, and
``llem doctor --restore`` puts the GPUs back from it.

Zeus is imported inside the functions: importing this module costs nothing (the plugin imports it at start).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import LlemError
from .meter import GpuScope

JOURNALS = "gpu-settings"
NEEDS_RIGHT = "setting GPU power limits and clocks needs root, or Zeus's zeusd (ZEUSD_SOCK_PATH set to its socket)"


class GpuSettingsError(LlemError):
    """The settings could not be applied or restored (no right, zeusd said no, …): the item fails."""


class GpuSettingsSkipped(GpuSettingsError):
    """The settings cannot apply on this machine (no GPU, a value outside what the GPU allows): the item is skipped."""


@dataclass(frozen=True)
class Wanted:
    """What a study asks of the item's GPUs (``gpu:``); None leaves a setting as it is."""

    power_limit_w: int | None = None
    locked_clocks_mhz: tuple[int, int] | None = None

    @property
    def anything(self) -> bool:
        return self.power_limit_w is not None or self.locked_clocks_mhz is not None


@dataclass
class Change:
    """One GPU, as the journal keeps it: what to put back. ``power_limit_mw``: the limit before (None: not changed);
    ``clocks_locked``: its clocks were (or were about to be) locked, so they are reset."""

    physical_index: int
    power_limit_mw: int | None = None
    clocks_locked: bool = False


@dataclass(frozen=True)
class InForce:
    """The settings the item's GPUs had while it ran, read back before and after it (by physical index). Zeus reads no
    locked clocks back: ``locked_clocks_mhz`` is the range the driver accepted."""

    gpus: tuple[int, ...]
    power_limit_w: float | None
    locked_clocks_mhz: tuple[int, int] | None
    unavailable: dict[str, str] = field(default_factory=dict)

    def metrics(self) -> dict[str, Any]:
        """The ``Metrics`` fields."""
        return {
            "gpu_settings_gpus": list(self.gpus),
            "gpu_power_limit_w": self.power_limit_w,
            "gpu_locked_clocks_mhz": list(self.locked_clocks_mhz) if self.locked_clocks_mhz else None,
        }


# -- the journal ------------------------------------------------------------------------------------------------------


class Journal:
    """This process's journal file (one per process: under pytest-xdist each worker changes only its own GPUs)."""

    def __init__(self, folder: Path | None) -> None:
        self.path = folder / f"{socket.gethostname()}-{os.getpid()}.json" if folder is not None else None

    def write(self, changes: Sequence[Change]) -> None:
        if self.path is None:
            return
        document = {"host": socket.gethostname(), "pid": os.getpid(), "written_at": time.time(),
                    "gpus": [asdict(c) for c in changes]}  # fmt: skip
        _write_atomically(self.path, document)

    def remove(self) -> None:
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


def _write_atomically(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w") as out:
            json.dump(document, out)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


# -- Zeus's device layer ----------------------------------------------------------------------------------------------


def _zeus_gpus() -> Any:
    """Zeus's GPU manager, or GpuSettingsSkipped saying why there is none."""
    from zeus.device import gpu as zeus_gpu
    from zeus.device.exception import ZeusBaseGPUError

    try:
        gpus = zeus_gpu.get_gpus()
    except (ZeusBaseGPUError, ValueError, ImportError) as exc:
        raise GpuSettingsSkipped(f"gpu: no GPU to set ({type(exc).__name__}: {exc})") from None
    if len(gpus) == 0:
        raise GpuSettingsSkipped("gpu: no GPU to set (none is visible to this process)")
    return gpus


def _physical(gpus: Any, index: int) -> int:
    return int(getattr(gpus.gpus[index], "gpu_index", index))


def _refusal(exc: Exception, what: str) -> GpuSettingsError:
    """The driver's (or zeusd's) no, in one line naming what is missing."""
    from zeus.device.exception import ZeusdError
    from zeus.device.gpu.common import ZeusGPUInvalidArgError, ZeusGPUNoPermissionError, ZeusGPUNotSupportedError

    if isinstance(exc, ZeusGPUNoPermissionError):
        return GpuSettingsError(f"{NEEDS_RIGHT}: {what} was refused ({exc})")
    if isinstance(exc, ZeusdError):
        return GpuSettingsError(f"zeusd refused to {what}: {exc}")
    if isinstance(exc, ZeusGPUNotSupportedError):
        return GpuSettingsSkipped(f"the driver cannot {what} on this GPU ({exc})")
    if isinstance(exc, ZeusGPUInvalidArgError):
        return GpuSettingsSkipped(f"the driver refused to {what}: out of the GPU's range ({exc})")
    return GpuSettingsError(f"could not {what}: {type(exc).__name__}: {exc}")


def _check_range(gpus: Any, index: int, wanted: Wanted) -> None:
    physical = _physical(gpus, index)
    if wanted.power_limit_w is not None:
        low, high = (v / 1000 for v in gpus.get_power_management_limit_constraints(index))
        if not low <= wanted.power_limit_w <= high:
            raise GpuSettingsSkipped(
                f"gpu.power_limit_w: {wanted.power_limit_w} W is outside what GPU {physical} allows "
                f"({low:g}-{high:g} W)"
            )
    if wanted.locked_clocks_mhz is not None:
        clocks = _graphics_clocks(gpus, index)
        low_mhz, high_mhz = wanted.locked_clocks_mhz
        if clocks and not (min(clocks) <= low_mhz and high_mhz <= max(clocks)):
            raise GpuSettingsSkipped(
                f"gpu.locked_clocks_mhz: [{low_mhz}, {high_mhz}] MHz is outside what GPU {physical} allows "
                f"({min(clocks)}-{max(clocks)} MHz)"
            )


def _graphics_clocks(gpus: Any, index: int) -> list[int]:
    """The graphics clocks the GPU supports at its highest memory clock; empty where it will not say (the driver then
    judges the range when it is set)."""
    from zeus.device.exception import ZeusBaseGPUError

    try:
        memory = max(gpus.get_supported_memory_clocks(index))
        return list(gpus.get_supported_graphics_clocks(index, memory))
    except (ZeusBaseGPUError, ValueError, TypeError):
        return []


# -- applying and restoring -------------------------------------------------------------------------------------------


class Applied:
    """The settings as applied on one item's GPUs; ``restore`` puts back what they were."""

    def __init__(self, gpus: Any, indices: Sequence[int], wanted: Wanted, journal: Journal) -> None:
        self._gpus = gpus
        self._indices = list(indices)
        self._wanted = wanted
        self._journal = journal
        self._changes: dict[int, Change] = {}  # what is journaled: every change about to be made
        self._done: dict[int, Change] = {}  # the changes made, which this process restores
        self._before: dict[int, float | None] = {}
        self._doing = "change the GPU settings"

    def apply(self) -> None:
        """Check every GPU's range, journal what they have, then change them; on any refusal put back what was
        changed and raise."""
        from zeus.device.exception import ZeusBaseGPUError

        for index in self._indices:
            _check_range(self._gpus, index, self._wanted)
        for index in self._indices:
            previous = self._gpus.get_power_management_limit(index) if self._wanted.power_limit_w is not None else None
            self._changes[index] = Change(
                _physical(self._gpus, index), previous, self._wanted.locked_clocks_mhz is not None
            )
        self._journal.write(list(self._changes.values()))  # before the first change: a SIGKILL may come at any time
        try:
            with warnings.catch_warnings():  # Zeus's SYS_ADMIN warning: a refusal is explained below, once
                warnings.simplefilter("ignore")
                for index in self._indices:
                    self._set(index)
        except ZeusBaseGPUError as exc:
            problems = self.restore()
            error = _refusal(exc, self._doing)
            if problems:
                raise GpuSettingsError(f"{error}; restoring failed too: {'; '.join(problems)}") from None
            raise error from None
        self._before = self._limits()

    def _set(self, index: int) -> None:
        change = self._changes[index]
        done = self._done[index] = Change(change.physical_index)
        if self._wanted.power_limit_w is not None:
            self._doing = f"set GPU {change.physical_index}'s power limit to {self._wanted.power_limit_w} W"
            self._gpus.set_power_management_limit(index, self._wanted.power_limit_w * 1000)
            done.power_limit_mw = change.power_limit_mw
        if self._wanted.locked_clocks_mhz is not None:
            low, high = self._wanted.locked_clocks_mhz
            self._doing = f"lock GPU {change.physical_index}'s graphics clocks to {low}-{high} MHz"
            self._gpus.set_gpu_locked_clocks(index, low, high)
            done.clocks_locked = True

    def _limits(self) -> dict[int, float | None]:
        from zeus.device.exception import ZeusBaseGPUError

        limits: dict[int, float | None] = {}
        for index in self._indices:
            try:
                limits[index] = self._gpus.get_power_management_limit(index) / 1000
            except ZeusBaseGPUError:
                limits[index] = None
        return limits

    def in_force(self) -> InForce:
        """Read the limits back after the item and compare them with those read before it: what held throughout."""
        physical = tuple(self._changes[i].physical_index for i in self._indices)
        # Zeus reads no locked clocks back: the range the driver accepted is what is reported.
        unavailable: dict[str, str] = {}
        limit: float | None = None
        after = self._limits()
        seen = {self._before.get(i) for i in self._indices} | {after.get(i) for i in self._indices}
        if len(seen) == 1 and None not in seen:
            limit = seen.pop()
        else:
            told = ", ".join(
                f"GPU {self._changes[i].physical_index}: {_watts(self._before.get(i))} before, "
                f"{_watts(after.get(i))} after"
                for i in self._indices
            )
            unavailable["gpu_power_limit_w"] = f"the limit read back was not one value throughout the item ({told})"
        return InForce(physical, limit, self._wanted.locked_clocks_mhz, unavailable)

    def restore(self) -> list[str]:
        """Put back what was changed; the journal goes when everything is back. Returns what could not be restored."""
        problems = _restore(self._gpus, self._done)
        if not problems:
            self._journal.remove()
        return problems


def _watts(value: float | None) -> str:
    return "unreadable" if value is None else f"{value:g} W"


def _restore(gpus: Any, changes: dict[int, Change]) -> list[str]:
    from zeus.device.exception import ZeusBaseGPUError

    problems = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for index, change in changes.items():
            try:
                if change.power_limit_mw is not None:
                    gpus.set_power_management_limit(index, change.power_limit_mw)
                if change.clocks_locked:
                    gpus.reset_gpu_locked_clocks(index)
            except ZeusBaseGPUError as exc:
                problems.append(f"GPU {change.physical_index}: {type(exc).__name__}: {exc}")
    return problems


def selected(gpus: Any, scope: GpuScope) -> list[int]:
    """The Zeus (CUDA) indices of ``scope`` this process sees."""
    visible = len(gpus)
    return list(range(visible)) if scope.indices is None else [i for i in scope.indices if i < visible]


@contextlib.contextmanager
def applied(wanted: Wanted, scope: GpuScope, journal_folder: Path | None) -> Iterator[Applied]:
    """Apply ``wanted`` on the GPUs of ``scope`` for the ``with`` block, and restore them when it ends however it
    ends (an exception, Ctrl-C). A restore that fails is an error naming ``llem doctor --restore``."""
    gpus = _zeus_gpus()
    indices = selected(gpus, scope)
    if not indices:
        raise GpuSettingsSkipped(f"gpu: no GPU to set ({scope.why}; this process sees {len(gpus)})")
    settings = Applied(gpus, indices, wanted, Journal(journal_folder))
    settings.apply()
    failed: BaseException | None = None
    try:
        yield settings
    except BaseException as exc:
        failed = exc
        raise
    finally:
        problems = settings.restore()
        if problems:
            message = (
                f"the GPU settings could not be restored ({'; '.join(problems)}); "
                "`llem doctor --restore` puts them back from the journal"
            )
            if failed is None:
                raise GpuSettingsError(message)
            warnings.warn(message, stacklevel=2)


# -- llem doctor --restore --------------------------------------------------------------------------------------------


def _alive_elsewhere(document: dict[str, Any]) -> bool:
    """The journal's session still runs (on this host): its settings are its own to restore."""
    if document.get("host") != socket.gethostname():
        return False
    pid = int(document.get("pid") or 0)
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def restore_journals(results_dir: Path) -> tuple[list[str], bool]:
    """Restore the GPUs of every journal under ``results_dir`` left by a session that is gone; (what was done, in
    lines; whether everything that was left is back)."""
    folder = results_dir / JOURNALS
    journals = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if not journals:
        return [f"GPU settings: nothing to restore (no journal in {folder})"], True
    lines: list[str] = []
    complete = True
    gpus: Any = None
    for path in journals:
        try:
            document = json.loads(path.read_text())
            changes = [Change(**entry) for entry in document["gpus"]]
        except (OSError, ValueError, TypeError, KeyError) as exc:
            lines.append(f"{path}: unreadable journal ({exc}); left in place")
            complete = False
            continue
        if _alive_elsewhere(document):
            lines.append(f"{path}: its session (pid {document['pid']}) is still running; it restores its own GPUs")
            continue
        if gpus is None:
            with _every_gpu():
                gpus = _zeus_gpus()
        by_physical = {_physical(gpus, i): i for i in range(len(gpus))}
        missing = [c.physical_index for c in changes if c.physical_index not in by_physical]
        if missing:
            lines.append(f"{path}: GPU {', '.join(map(str, missing))} not visible here; left in place")
            complete = False
            continue
        problems = _restore(gpus, {by_physical[c.physical_index]: c for c in changes})
        if problems:
            lines.append(f"{path}: could not restore {'; '.join(problems)}; left in place ({NEEDS_RIGHT})")
            complete = False
            continue
        path.unlink()
        lines.append(f"{path}: restored " + "; ".join(_restored(c) for c in changes))
    return lines, complete


def _restored(change: Change) -> str:
    what = []
    if change.power_limit_mw is not None:
        what.append(f"power limit {change.power_limit_mw / 1000:g} W")
    if change.clocks_locked:
        what.append("clocks unlocked")
    return f"GPU {change.physical_index}: " + ", ".join(what or ["nothing changed"])


@contextlib.contextmanager
def _every_gpu() -> Iterator[None]:
    """Journals name GPUs by the driver's index: doctor looks at every GPU, whatever CUDA_VISIBLE_DEVICES says."""
    before = os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    try:
        yield
    finally:
        if before is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = before
