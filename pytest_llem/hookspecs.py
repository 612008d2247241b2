"""Hooks other plugins and conftest files implement to extend pytest-llem."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


@pytest.hookspec
def pytest_llem_backends() -> dict[str, Callable[[], Any]]:  # type: ignore[empty-body]
    """Add backends: return ``{name: factory}`` where ``factory()`` makes an object with the ``Backend`` protocol
    (``pytest_llem.backends.base``). Studies may then say ``backend: <name>``.

    The factory must be importable by module and qualified name (a module-level class or function, a conftest's
    included): isolated items import it again in their child process.
    """


@pytest.hookspec
def pytest_llem_child_setup() -> list[Callable[[], None]]:  # type: ignore[empty-body]
    """Functions to call first thing in every isolated child process (before its work starts), e.g. to configure
    logging or, in tests, to install fake devices. Same importability rule as backend factories."""
