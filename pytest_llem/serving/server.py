"""The OpenAI-compatible server a serving item loads: one it starts (a command, on a free 127.0.0.1 port, in the
item's process group) or one already running at a URL. Either way the item gets a base URL and a model name.

The server's output goes to a file, whose end is the failure message when it does not come up. Stopping it is
SIGTERM, then SIGKILL for it and everything it started, so the port and the devices are free for the next item.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import LlemError

POLL_S = 0.5
STOP_GRACE_S = 30.0
LOG_TAIL_LINES = 25


class ServerError(LlemError):
    """The server did not come up, or answered in a way no OpenAI-compatible server does."""


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    model_name: str  # as the server names the model in /v1/models


def on_this_machine(url: str) -> bool:
    """Whether ``url``'s host is this machine (loopback, its name, one of its addresses): the devices measured here
    are the server's only then."""
    host = urllib.parse.urlsplit(url).hostname or ""
    if host in ("localhost", socket.gethostname(), socket.getfqdn()):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback or host in _own_addresses()
    except ValueError:
        return False


def _own_addresses() -> set[str]:
    try:
        return {str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None)}
    except OSError:
        return set()


def free_port() -> int:
    """A port nobody listens on now (the kernel's choice); the server binds it a moment later."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _get(url: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 is never behind a proxy
    try:
        with opener.open(url, timeout=timeout_s) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def reset_prefix_cache(base_url: str) -> str | None:
    """Empty the server's prefix cache (vLLM's ``POST /reset_prefix_cache``, served in its dev mode), so that the
    warm-up's prompts, which the load sends again, are prefilled in the load as in a cold run. None when done, else
    why not."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(base_url.rstrip("/") + "/reset_prefix_cache", data=b"", method="POST")
    try:
        with opener.open(request, timeout=30.0) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError as exc:
        return f"POST /reset_prefix_cache failed ({exc})"
    return None if status == 200 else f"POST /reset_prefix_cache answered HTTP {status}"


def served_model(base_url: str, wanted: str | None = None) -> str:
    """The model name to put in requests: ``wanted`` if the server lists it, else the only (first) one it lists."""
    try:
        status, body = _get(base_url.rstrip("/") + "/v1/models")
        names = [entry["id"] for entry in json.loads(body)["data"]] if status == 200 else []
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ServerError(f"{base_url}/v1/models did not answer as an OpenAI-compatible server does ({exc})") from None
    if not names:
        raise ServerError(f"{base_url}/v1/models lists no model (HTTP {status})")
    return wanted if wanted is not None and wanted in names else str(names[0])


def external(url: str, wanted: str | None = None) -> Endpoint:
    """A server already running at ``url``: it must list a model."""
    return Endpoint(url.rstrip("/"), served_model(url, wanted))


# Linux: the server gets SIGTERM (and stops its engine) when the item's process dies, however it dies: a killed
# pytest kills its items (runner/child.py), and their servers must not outlive them. Asked for in a small launcher
# that then becomes the server (exec keeps it), not in a preexec_fn, which is unsafe while the item runs threads.
_LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    "try:\n    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG\n"
    "except (OSError, AttributeError):\n    pass\n"
    "if os.getppid() != int(sys.argv[1]):\n    sys.exit(1)  # the item died before the request took effect\n"
    "os.execvp(sys.argv[2], sys.argv[2:])"
)


def stopping_with_this_process(argv: Sequence[str]) -> list[str]:
    """``argv`` behind the launcher: it runs as ``argv`` would, and gets SIGTERM when this process dies."""
    return [sys.executable, "-c", _LAUNCHER, str(os.getpid()), *argv]


class StartedServer:
    """A server this item starts with ``argv`` (which must make it listen on ``port``) and stops at ``__exit__``."""

    def __init__(self, argv: Sequence[str], port: int, log_path: Path, startup_timeout_s: float, env: dict[str, str]):
        self.argv = list(argv)
        self.port = port
        self.log_path = log_path
        self.startup_timeout_s = startup_timeout_s
        self.env = env
        self.base_url = f"http://127.0.0.1:{port}"
        self._process: subprocess.Popen[bytes] | None = None
        self._started: set[int] = set()  # every process the server was seen to start
        self.startup_s: float | None = None

    def __enter__(self) -> StartedServer:
        started = time.perf_counter()
        with open(self.log_path, "wb") as log:  # the child keeps its own copy of the descriptor
            self._process = subprocess.Popen(
                stopping_with_this_process(self.argv), stdout=log, stderr=subprocess.STDOUT, env=self.env
            )
        try:
            self._wait_healthy(started)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.perf_counter() - started
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wait_healthy(self, started: float) -> None:
        assert self._process is not None
        while True:
            self._started |= set(_descendants(self._process.pid))
            code = self._process.poll()
            if code is not None:
                raise ServerError(
                    f"the server exited with code {code} before it was ready; its output ends:\n{self.tail()}"
                )
            try:
                status, _ = _get(f"{self.base_url}/health", timeout_s=2.0)
            except OSError:
                status = 0
            if status == 200:
                return
            waited = time.perf_counter() - started
            if waited > self.startup_timeout_s:
                raise ServerError(
                    f"the server was not ready after {waited:.0f} s (serving.startup_timeout_seconds); its output "
                    f"ends:\n{self.tail()}"
                )
            time.sleep(POLL_S)

    def tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no output)"
        return "\n".join(lines[-LOG_TAIL_LINES:]) or "(no output)"

    def stop(self) -> None:
        """SIGTERM and a grace period, then SIGKILL for the server and every process it started."""
        process, self._process = self._process, None
        if process is None:
            return
        started = self._started | set(_descendants(process.pid))
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for pid in started:  # also when the server itself had died: what it started may live on
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _descendants(pid: int) -> list[int]:
    """Every process ``pid`` started (vLLM's engine core and workers), found before it is asked to stop."""
    try:
        import psutil
    except ImportError:  # then the item's process group is what ends them (runner/isolation.py)
        return []
    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []
