"""GPU deployment settings (the power limit, locked graphics clocks): set through Zeus's device layer on the GPUs an
item uses, read back, and restored to what they were, by the process that outlives the item's child (pytest's).

Before anything changes, what it was goes into a journal file (``<results dir>/gpu-settings/<host>-<pid>.json``); a
GPU's entry keeps the earliest value recorded for it (the machine's own, even after a restore was refused) and goes once
restored. A session killed before it could restore (SIGKILL, a lost machine) leaves its journal: the next item on those
GPUs on this host restores from it first (or refuses to run), and ``llem doctor --restore`` puts the GPUs back from it.
A SIGTERM to pytest while settings are applied is raised as KeyboardInterrupt, so that they are restored on the way out.

Zeus is imported inside the functions: importing this module costs nothing (the plugin imports it at start).
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .gpu_journal import Change, GpuSettingsError, Journal, restored, rewrite
from .meter import GpuScope
from .sigterm import SigtermGuard

NEEDS_RIGHT = "setting GPU power limits and clocks needs root, or Zeus's zeusd (ZEUSD_SOCK_PATH set to its socket)"


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


# -- Zeus's device layer ----------------------------------------------------------------------------------------------


def zeus_gpus() -> Any:
    """Zeus's GPU manager, or GpuSettingsSkipped saying why there is none."""
    from zeus.device import gpu as zeus_gpu
    from zeus.device.exception import ZeusBaseGPUError

    try:
        gpus = zeus_gpu.get_gpus()
    except (ZeusBaseGPUError, ValueError, ImportError) as exc:
        raise GpuSettingsSkipped(f"gpu: no GPU to set ({type(exc).__name__}: {exc})") from None
    except Exception as exc:  # zeusd's client, anything else: one line, not a traceback
        raise _refusal(exc, "reach the GPUs") from None
    if len(gpus) == 0:
        raise GpuSettingsSkipped("gpu: no GPU to set (none is visible to this process)")
    return gpus


def physical_index_of(gpus: Any, index: int) -> int:
    return int(getattr(gpus.gpus[index], "gpu_index", index))


def _refusal(exc: Exception, what: str) -> GpuSettingsError:
    """The driver's (or zeusd's) no, or any other error on the way, in one line naming what is missing."""
    from zeus.device.exception import ZeusdError
    from zeus.device.gpu.common import ZeusGPUInvalidArgError, ZeusGPUNoPermissionError, ZeusGPUNotSupportedError

    if isinstance(exc, GpuSettingsError):
        return exc
    if type(exc).__module__.split(".")[0] in ("httpx", "httpcore"):  # Zeus's zeusd client: the daemon is down or gone
        sock = os.environ.get("ZEUSD_SOCK_PATH")
        return GpuSettingsError(
            f"zeusd did not answer ({type(exc).__name__}: {exc}; ZEUSD_SOCK_PATH={sock}), so could not {what}"
        )
    if isinstance(exc, ZeusGPUNoPermissionError):
        return GpuSettingsError(f"{NEEDS_RIGHT}: {what} was refused ({exc})")
    if isinstance(exc, ZeusdError):
        return GpuSettingsError(f"zeusd refused to {what}: {exc}")
    if isinstance(exc, ZeusGPUNotSupportedError):
        return GpuSettingsSkipped(f"the driver cannot {what} on this GPU ({exc})")
    if isinstance(exc, ZeusGPUInvalidArgError):
        return GpuSettingsSkipped(f"the driver refused to {what}: out of the GPU's range ({exc})")
    return GpuSettingsError(f"could not {what}: {type(exc).__name__}: {' '.join(str(exc).split())}")


def _check_range(gpus: Any, index: int, wanted: Wanted) -> None:
    physical = physical_index_of(gpus, index)
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
        self._done: dict[int, Change] = {}  # what this process restores: the changes made, and those inherited
        self._before: dict[int, float | None] = {}
        self._doing = "change the GPU settings"

    def apply(self) -> None:
        """Restore what a session that is gone left on these GPUs, check every GPU's range, journal what they have,
        then change them. However this ends early (a refusal, any error, Ctrl-C), what was changed is put back; an
        error is raised as one line (GpuSettingsSkipped where the GPU cannot take the settings)."""
        try:
            with warnings.catch_warnings():  # Zeus's SYS_ADMIN warning: a refusal is explained below, once
                warnings.simplefilter("ignore")
                self._doing = "put back what a session that is gone left changed"
                _restore_left_behind(self._gpus, self._indices, self._journal)
                for index in self._indices:
                    self._doing = f"read GPU {physical_index_of(self._gpus, index)}'s allowed power limits"
                    _check_range(self._gpus, index, self._wanted)
                recorded = []
                for index in self._indices:
                    self._doing = f"read GPU {physical_index_of(self._gpus, index)}'s power limit"
                    previous = (
                        self._gpus.get_power_management_limit(index) if self._wanted.power_limit_w is not None else None
                    )
                    locks = self._wanted.locked_clocks_mhz is not None
                    recorded.append(Change(physical_index_of(self._gpus, index), previous, locks))
                self._doing = "journal the GPU settings"
                earlier = {c.physical_index: c for c in self._journal.entries()}
                journaled = self._journal.record(recorded)  # before the first change: a SIGKILL may come at any time
                for index, change in zip(self._indices, recorded, strict=True):
                    self._changes[index] = journaled[change.physical_index]
                    if change.physical_index in earlier:  # left changed by an earlier item: restored with this one's
                        self._done[index] = Change(**asdict(earlier[change.physical_index]))
                for index in self._indices:
                    self._set(index)
                self._before = self._limits()
        except BaseException as exc:
            problems = self.restore()
            if not isinstance(exc, Exception):  # Ctrl-C, SIGTERM: on its way, with the GPUs restored
                if problems:
                    print(f"pytest-llem: {_unrestored(problems)}", file=sys.stderr)
                raise
            error = _refusal(exc, self._doing)
            if problems:
                raise GpuSettingsError(f"{error}; restoring failed too: {_unrestored(problems)}") from None
            raise error from None

    def _set(self, index: int) -> None:
        change = self._changes[index]
        done = self._done.setdefault(index, Change(change.physical_index))
        if self._wanted.power_limit_w is not None:
            self._doing = f"set GPU {change.physical_index}'s power limit to {self._wanted.power_limit_w} W"
            with _marked(done, "power_limit_mw", change.power_limit_mw):
                self._gpus.set_power_management_limit(index, self._wanted.power_limit_w * 1000)
        if self._wanted.locked_clocks_mhz is not None:
            low, high = self._wanted.locked_clocks_mhz
            self._doing = f"lock GPU {change.physical_index}'s graphics clocks to {low}-{high} MHz"
            with _marked(done, "clocks_locked", True):
                self._gpus.set_gpu_locked_clocks(index, low, high)

    def _limits(self) -> dict[int, float | None]:
        limits: dict[int, float | None] = {}
        for index in self._indices:
            try:
                limits[index] = self._gpus.get_power_management_limit(index) / 1000
            except Exception:  # unreadable: in_force says so
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
        """Put back what was changed; a GPU's journal entry goes once it is back. Returns what could not be restored.
        Again, it restores only what is still to restore."""
        problems = restore_changes(self._gpus, self._done)
        for index in [i for i in self._done if i not in problems]:
            del self._done[index]
        self._journal.forget(c.physical_index for i, c in self._changes.items() if i not in self._done)
        return list(problems.values())


@contextlib.contextmanager
def _marked(done: Change, setting: str, value: object) -> Iterator[None]:
    """To restore before the call that changes it: a Ctrl-C or SIGTERM in the call may come after the change. A call
    that refused changed nothing: the mark goes."""
    before = getattr(done, setting)
    setattr(done, setting, value)
    try:
        yield
    except Exception:
        setattr(done, setting, before)
        raise


def _watts(value: float | None) -> str:
    return "unreadable" if value is None else f"{value:g} W"


def _unrestored(problems: Sequence[str]) -> str:
    return f"the GPU settings could not be restored ({'; '.join(problems)}); `llem doctor --restore` puts them back"


def restore_changes(gpus: Any, changes: dict[int, Change]) -> dict[int, str]:
    """Put back ``changes`` (by Zeus index); what could not be, by Zeus index."""
    problems = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for index, change in changes.items():
            try:
                if change.power_limit_mw is not None:
                    gpus.set_power_management_limit(index, change.power_limit_mw)
                if change.clocks_locked:
                    gpus.reset_gpu_locked_clocks(index)
            except Exception as exc:  # a refusal, a zeusd that is down: said, and the journal stays
                problems[index] = f"GPU {change.physical_index}: {type(exc).__name__}: {' '.join(str(exc).split())}"
    return problems


def selected(gpus: Any, scope: GpuScope) -> list[int]:
    """The Zeus (CUDA) indices of ``scope`` this process sees."""
    visible = len(gpus)
    return list(range(visible)) if scope.indices is None else [i for i in scope.indices if i < visible]


def _restore_left_behind(gpus: Any, indices: Sequence[int], journal: Journal) -> None:
    """A session on this host that is gone left these GPUs changed: put them back first (and say so in the item's
    log), or refuse in one line naming doctor."""
    mine = {physical_index_of(gpus, i): i for i in indices}
    with journal.locked():
        for path, document, changes in journal.left_behind():
            covered = {mine[c.physical_index]: c for c in changes if c.physical_index in mine}
            if not covered:
                continue
            problems = restore_changes(gpus, covered)
            if problems:
                raise GpuSettingsError(
                    f"a session that is gone (pid {document.get('pid')}) left GPU settings changed and they could "
                    f"not be put back ({'; '.join(problems.values())}); `llem doctor --restore` puts them back "
                    f"from {path}"
                )
            rewrite(path, document, [c for c in changes if c.physical_index not in mine])
            put_back = "; ".join(restored(c) for c in covered.values())
            print(
                f"pytest-llem: put back {put_back}, which a session that is gone (pid {document.get('pid')}) left "
                f"changed ({path})",
                file=sys.stderr,  # in this item's captured log
            )


def restore_left_behind(scope: GpuScope, journal_folder: Path | None) -> None:
    """Before an item that sets nothing: put back what a session that is gone left changed on its GPUs, so that it
    does not run under another session's settings. Free (no Zeus) unless such a journal exists."""
    journal = Journal(journal_folder)
    if next(journal.left_behind(), None) is None:
        return
    try:
        gpus = zeus_gpus()
    except GpuSettingsSkipped:  # no GPU visible here: nothing of this item runs under those settings
        return
    with warnings.catch_warnings():  # Zeus's SYS_ADMIN warning: a refusal is explained in the error
        warnings.simplefilter("ignore")
        _restore_left_behind(gpus, selected(gpus, scope), journal)


@contextlib.contextmanager
def applied(wanted: Wanted, scope: GpuScope, journal_folder: Path | None) -> Iterator[Applied]:
    """Apply ``wanted`` on the GPUs of ``scope`` for the ``with`` block, and restore them when it ends however it
    ends (an exception, Ctrl-C, SIGTERM: raised as ``Terminated`` meanwhile). A restore that fails is an error naming
    ``llem doctor --restore``."""
    gpus = zeus_gpus()
    indices = selected(gpus, scope)
    if not indices:
        raise GpuSettingsSkipped(f"gpu: no GPU to set ({scope.why}; this process sees {len(gpus)})")
    settings = Applied(gpus, indices, wanted, Journal(journal_folder))
    sigterm = SigtermGuard()
    failed: BaseException | None = None
    try:
        sigterm.raise_it()
        settings.apply()
        yield settings
    except BaseException as exc:
        failed = exc
        raise
    finally:
        sigterm.hold()  # a SIGTERM now waits for the restore, then goes to the handler from before
        try:
            problems = settings.restore()
        finally:
            sigterm.release()
        if problems:
            if failed is None:
                raise GpuSettingsError(_unrestored(problems))
            if not isinstance(failed, GpuSettingsError):  # apply's own error already says so
                warnings.warn(_unrestored(problems), stacklevel=2)
