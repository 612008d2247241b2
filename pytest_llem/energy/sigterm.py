"""SIGTERM (a CI cancel, a preemption) while GPU settings are applied: raised in the main thread as ``Terminated`` so
that they are restored on the way out, and pytest stops as it does on Ctrl-C."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any


class Terminated(KeyboardInterrupt):
    """SIGTERM reached pytest while GPU settings were applied (a CI cancel, a preemption): raised in the main thread so
    that they are restored on the way out, and pytest stops as it does on Ctrl-C."""


class SigtermGuard:
    """SIGTERM while GPU settings are applied: ``raise_it`` makes it a ``Terminated`` in the main thread, ``hold``
    keeps one for later while they are restored, ``release`` puts the previous handler back and hands it what was
    held. Nothing changes outside the main thread (where Python runs signal handlers)."""

    def __init__(self) -> None:
        self._previous: Any = None
        self._installed = False
        self._held = False

    def raise_it(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        self._previous = signal.signal(signal.SIGTERM, self._raise)
        self._installed = True

    def _raise(self, number: int, frame: FrameType | None) -> None:
        raise Terminated("SIGTERM: the GPU settings are being restored before pytest stops")

    def _hold(self, number: int, frame: FrameType | None) -> None:
        self._held = True

    def hold(self) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._hold)

    def release(self) -> None:
        if not self._installed:
            return
        self._installed = False
        signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)
        if self._held:
            signal.raise_signal(signal.SIGTERM)
