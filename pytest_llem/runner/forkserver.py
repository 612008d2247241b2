"""The forkservers isolated items are forked from: one per kind of backend, each importing only what its items need.

Importing vLLM changes torch's process state (cuDNN attention off on CUDA, inductor's compile threads, environment
variables), so a pytorch item must never be forked from a server that imported it: its numbers would depend on
whether vLLM items shared its session. A server is started on the first item of its kind, kept for later sessions of
the same process (pytester's, an IDE's: each start costs seconds of imports), and stopped (and waited for) when the
process exits, so no process the plugin started outlives the ``pytest`` command.

multiprocessing has one forkserver per process, behind module-level functions; its ``ForkServer`` class runs any
number, but a forkserver ``Process`` asks the module-level ``connect_to_new_process`` for its fork. ``start`` points
that at the item's server while the process starts (a few microseconds, in the calling thread).
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterator
from multiprocessing import forkserver as server_module
from multiprocessing import resource_tracker, util
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess
from typing import Any

# Imported once in every forkserver (see preload.py for what and why), plus a backend's own in its kind's server.
PRELOAD = ("pytest_llem.runner.child", "pytest_llem.runner.preload")
BACKEND_PRELOAD = {"vllm": "pytest_llem.runner.preload_vllm"}
STOP_TIMEOUT_S = 5.0

_servers: dict[tuple[str, ...], Any] = {}  # multiprocessing ForkServers  # by preloads: one per kind of backend
_stop_at_exit = False  # whether stop_forkservers is registered to run when the process exits
_owns_tracker = False  # whether starting a server started multiprocessing's resource tracker too


def preloads(backend: str) -> tuple[str, ...]:
    """What the server of ``backend``'s kind imports."""
    extra = BACKEND_PRELOAD.get(backend)
    return PRELOAD + ((extra,) if extra else ())


def start(backend: str, target: Callable[..., Any], args: tuple[Any, ...], name: str) -> BaseProcess:
    """Start ``target(*args)`` in a process forked from the server of ``backend``'s kind."""
    server = _server(preloads(backend))
    context = multiprocessing.get_context("forkserver")
    assert isinstance(context, ForkServerContext)
    process = context.Process(target=target, args=args, name=name)
    with _forking_from(server):
        process.start()
    return process


def _server(wanted: tuple[str, ...]) -> Any:
    global _stop_at_exit, _owns_tracker
    server = _servers.get(wanted)
    if server is None:
        server = server_module.ForkServer()
        server.set_forkserver_preload(list(wanted))
        tracker_was_running = _tracker()._fd is not None
        server.ensure_running()  # and the resource tracker, if this process had none
        _owns_tracker = _owns_tracker or not tracker_was_running
        _servers[wanted] = server
        if not _stop_at_exit:  # before multiprocessing's own exit handler (atexit runs handlers last-in, first-out)
            atexit.register(stop_forkservers)
            _stop_at_exit = True
    return server


@contextlib.contextmanager
def _forking_from(server: Any) -> Iterator[None]:
    module_default = server_module.connect_to_new_process
    server_module.connect_to_new_process = server.connect_to_new_process
    try:
        yield
    finally:
        server_module.connect_to_new_process = module_default


def _tracker() -> Any:
    """multiprocessing's resource tracker handle (private state: pid and pipe; Python 3.11 cannot stop it)."""
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


def _stop_server(server: Any, timeout_s: float) -> None:
    """Through its private state (pid, "alive" pipe, socket address): Python 3.11 has no public way to stop it."""
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


def stop_forkservers(timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Stop every server ``start`` started, and the resource tracker if starting them started that too; wait for
    each (the tracker at most ``timeout_s``, then SIGKILL). A later ``start`` starts a fresh server."""
    global _owns_tracker
    servers, owns_tracker = list(_servers.values()), _owns_tracker
    _servers.clear()
    _owns_tracker = False
    for server in servers:
        _stop_server(server, timeout_s)
    if owns_tracker:
        tracker = _tracker()
        with tracker._lock:
            pid, fd = tracker._pid, tracker._fd
            tracker._pid = tracker._fd = None
            if fd is not None:
                os.close(fd)  # it ignores SIGTERM: the end of its pipe tells it to clean up and exit
            if pid is not None:
                _end(pid, timeout_s, kill=False)
