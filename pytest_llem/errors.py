"""One small hierarchy of errors that users cause or meet; none of them imports pytest."""

from __future__ import annotations

from pathlib import Path


class LlemError(Exception):
    """Base class: an error pytest-llem explains in the user's words, never as a traceback."""


class ConfigError(LlemError, ValueError):
    """A study or experiment file that cannot be used as written.

    ``file`` names the study, ``key`` the dotted key path inside it (``sweep.precision``,
    ``experiments[2].pytorch.batch_size``), ``message`` what is wrong and what is allowed.
    """

    def __init__(self, message: str, *, file: Path | str | None = None, key: str | None = None) -> None:
        self.message = message
        self.file = Path(file) if file is not None else None
        self.key = key
        super().__init__(self._render())

    def _render(self) -> str:
        where = [str(self.file)] if self.file is not None else []
        if self.key:
            where.append(self.key)
        return ": ".join([*where, self.message])


class ModelNotFoundError(LlemError):
    """The model named by an experiment cannot be found: no such folder or built-in, or not cached while offline."""


class DatasetError(LlemError):
    """The prompts an experiment asks for cannot be produced (missing file, too few prompts, bad lines)."""


class BackendUnavailableError(LlemError):
    """The backend's library is not installed here; items of that backend are skipped with the install hint."""


class PhaseError(LlemError):
    """Work inside one phase of an item (load, warmup, generate) failed; ``phase`` says which."""

    def __init__(self, phase: str, cause: BaseException) -> None:
        self.phase = phase
        self.cause = cause
        super().__init__(f"{phase} failed: {type(cause).__name__}: {cause}")


class EnergyUnavailableError(LlemError):
    """Energy was demanded (``meter: zeus``, a GPU index) but cannot be measured as asked."""


class MeasurementWarningError(LlemError):
    """Under ``--llem-strict``, a measurement that raised validity warnings fails its item."""


def last_frame(error: BaseException) -> str:
    """``file:line`` where ``error`` was raised (the innermost frame of its traceback), or ""."""
    frame = error.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    return f"{frame.tb_frame.f_code.co_filename}:{frame.tb_lineno}" if frame else ""
