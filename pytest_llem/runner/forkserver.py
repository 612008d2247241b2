"""The forkserver isolated items are forked from: started on first use with the session's preloads, kept for later
sessions of the same process that want the same preloads (pytester's, an IDE's: each start costs seconds of imports),
replaced for one that wants others, and stopped (and waited for) when the process exits, so no process the plugin
started outlives the ``pytest`` command.

multiprocessing leaves the server running until its parent exits; it then notices the closed "alive" pipe and shuts
down on its own, a second or two after pytest has returned (it unloads torch). Stopping it here takes milliseconds:
it holds nothing but imports, and the items it forked are gone by the end of the session.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import os
import signal
import time
from collections.abc import Collection
from multiprocessing import util
from multiprocessing.context import ForkServerContext
from typing import Any

# Imported once in the forkserver (see preload.py for what and why), plus a backend's own when the session runs it.
PRELOAD = ["pytest_llem.runner.child", "pytest_llem.runner.preload"]
BACKEND_PRELOAD = {"vllm": "pytest_llem.runner.preload_vllm"}
STOP_TIMEOUT_S = 5.0

_context: ForkServerContext | None = None
_preloads: list[str] = []  # what the running server (ours) imported
_stop_at_exit = False  # whether stop_forkserver is registered to run when the process exits
_owns_server = False  # whether this module started the running server (not someone else in this process)
_owns_tracker = False  # whether starting it started multiprocessing's resource tracker too


def forkserver(backends: Collection[str] = ()) -> ForkServerContext:
    """A running forkserver with exactly the preloads of ``backends`` (the session's)."""
    global _context, _preloads, _stop_at_exit, _owns_server, _owns_tracker
    wanted = PRELOAD + [BACKEND_PRELOAD[b] for b in sorted(backends) if b in BACKEND_PRELOAD]
    if _context is not None and wanted != _preloads:
        stop_forkserver()  # an earlier session's server: its imports are not this session's
    if _context is None:
        context = multiprocessing.get_context("forkserver")
        assert isinstance(context, ForkServerContext)
        context.set_forkserver_preload(wanted)
        server, tracker = _server(), _tracker()
        server_was_running, tracker_was_running = server._forkserver_pid is not None, tracker._fd is not None
        server.ensure_running()  # and the resource tracker, if this process had none
        _owns_server, _owns_tracker = not server_was_running, not tracker_was_running
        _context, _preloads = context, wanted
        if not _stop_at_exit:  # before multiprocessing's own exit handler (atexit runs handlers last-in, first-out)
            atexit.register(stop_forkserver)
            _stop_at_exit = True
    return _context


def _server() -> Any:
    """multiprocessing's forkserver handle, whose private state (pid, "alive" pipe, socket address) we read and reset:
    Python 3.11 has no public way to stop the server."""
    from multiprocessing import forkserver as server_module

    return server_module._forkserver


def _tracker() -> Any:
    """multiprocessing's resource tracker handle (private state: pid and pipe)."""
    from multiprocessing import resource_tracker

    return resource_tracker._resource_tracker


def _reap(pid: int, timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for our child ``pid`` to exit; whether it did (or was not ours to wait for)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return True
        if done:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


def _end(pid: int, timeout_s: float, kill: bool) -> None:
    """Stop our child ``pid``, whose pipe the caller has just closed: SIGKILL at once (``kill``) or after ``timeout_s``;
    reaped either way, so it is not left as a zombie."""
    if not kill and _reap(pid, timeout_s):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    _reap(pid, timeout_s)


def stop_forkserver(timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Stop the forkserver ``forkserver()`` started (or multiprocessing restarted for it), and the resource tracker if
    starting it started that too; wait for both (the tracker at most ``timeout_s``, then SIGKILL). The next
    ``forkserver()`` starts a fresh server with that session's preloads. A no-op when this module started none."""
    global _context, _owns_server, _owns_tracker
    owns_server, owns_tracker = _owns_server, _owns_tracker
    _context, _owns_server, _owns_tracker = None, False, False
    if owns_server:
        server = _server()
        with server._lock:
            pid, alive_fd, address = server._forkserver_pid, server._forkserver_alive_fd, server._forkserver_address
            server._forkserver_pid = server._forkserver_alive_fd = server._forkserver_address = None
            if alive_fd is not None:
                os.close(alive_fd)
            if pid is not None:
                # Its own way out (on the closed pipe) unloads torch for seconds, to no purpose: it holds only imports.
                _end(pid, timeout_s, kill=True)
            if address is not None and not util.is_abstract_socket_namespace(address):
                with contextlib.suppress(OSError):
                    os.unlink(address)
    if owns_tracker:
        tracker = _tracker()
        with tracker._lock:
            pid, fd = tracker._pid, tracker._fd
            tracker._pid = tracker._fd = None
            if fd is not None:
                os.close(fd)  # it ignores SIGTERM: the end of its pipe tells it to clean up and exit
            if pid is not None:
                _end(pid, timeout_s, kill=False)
