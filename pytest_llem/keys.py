"""The session's state in ``config.stash``, under one key each: every pytest-facing module reads it from here."""

from __future__ import annotations

import pytest

from .measurement import MeasurementSession
from .results.session import SessionResults
from .results.store import RunStore

session_key = pytest.StashKey[SessionResults]()
store_key = pytest.StashKey[RunStore | None]()
measurement_key = pytest.StashKey[MeasurementSession]()
