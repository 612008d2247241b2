"""Study text shared by the plugin tests: the smallest real run (tiny-llama, 4 prompts, 4 tokens each), and the fake
GPUs a temp project installs at Zeus's device layer."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

ZEUS_FAKES = Path(__file__).parent / "zeus_fakes.py"

# The pytest process and every item's process see the same fake GPUs, each drawing constant watts.
_FAKE_GPUS_CONFTEST = """
import zeus_fakes


def install_fakes():
    zeus_fakes.install(zeus_fakes.FakeGPUs(WATTS), None)


def pytest_configure(config):
    install_fakes()


def pytest_llem_child_setup():
    return [install_fakes]


def pytest_unconfigure(config):
    zeus_fakes.uninstall()
"""


def fake_gpus(pytester: pytest.Pytester, watts: Sequence[float]) -> None:
    """Give a temp project fake GPUs drawing ``watts`` (one GPU per value), in its conftest."""
    pytester.makepyfile(zeus_fakes=ZEUS_FAKES.read_text())
    pytester.makeconftest(_FAKE_GPUS_CONFTEST.replace("WATTS", repr([float(w) for w in watts])))


FAST = """
model: builtin:tiny-llama
precision: fp32
n: 4
max_output_tokens: 4
decoder: {preset: deterministic, min_new_tokens: 4}
baseline: {enabled: false}  # 30 s of idle per session where a GPU or RAPL is readable
"""

# A backend that misbehaves on purpose, chosen per experiment by random_seed (5: stops pytest itself when told by
# KILL_PYTEST / INTERRUPT_PYTEST). Registered through the plugin hook,
# defined in the temp project's conftest: the child processes import it from there.
CRASHY_CONFTEST = """
import ctypes
import os
import signal
import subprocess
import time
from pathlib import Path

from pytest_llem.backends.pytorch import PyTorchBackend

MODES = {1: "segv", 2: "kill", 3: "hang", 4: "raise", 5: "stop pytest"}


class Crashy(PyTorchBackend):
    def load(self, config, model):
        self.mode = MODES.get(config.random_seed)
        if self.mode == "hang":  # before loading anything: how soon it hangs depends on no machine's speed
            helper = subprocess.Popen(["sleep", "600"])  # a grandchild that must not outlive the item
            Path("pids.txt").write_text(f"{os.getpid()} {helper.pid}")
            time.sleep(600)
        super().load(config, model)

    def generate(self, prepared):
        if self.mode == "segv":
            ctypes.string_at(0)
        if self.mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.mode == "raise":
            raise RuntimeError("boom on purpose")
        if self.mode == "stop pytest" and os.environ.get("KILL_PYTEST"):
            os.kill(os.getpid(), signal.SIGKILL)  # with isolation none, this process is pytest itself
        if self.mode == "stop pytest" and os.environ.get("INTERRUPT_PYTEST"):
            raise KeyboardInterrupt  # what Ctrl-C does
        return super().generate(prepared)


def pytest_llem_backends():
    return {"crashy": Crashy}
"""


# The crashy backend's study head: every item fast; the caller adds execution and the random_seed sweep.
CRASHY_HEAD = """
model: builtin:tiny-llama
backend: crashy
precision: fp32
n: 2
max_output_tokens: 2
warmup: {enabled: false}
baseline: {enabled: false}
"""


# A backend test double for windows whose length matters (energy = power x time, no short-window warning): the pytorch
# backend, real inference, then a sleep that makes every timed window at least WINDOW_S long on purpose — well over the
# GPU energy counter's ~100 ms period however fast the machine, and long enough that a scheduling hiccup of a few ms
# on a busy one is small against it. Pasted into a temp project's conftest (item processes import it from there), which
# registers it: ``def pytest_llem_backends(): return {"padded": Padded}``.
PADDED_BACKEND = """
import time

from pytest_llem.backends.pytorch import PyTorchBackend

WINDOW_S = 0.3
EXTRA_S = 0.0  # slept after inference whatever it took: a part of the window that no prefill pass has


class Padded(PyTorchBackend):
    def generate(self, prepared):
        started = time.perf_counter()
        generated = super().generate(prepared)
        time.sleep(max(0.0, WINDOW_S - (time.perf_counter() - started)) + EXTRA_S)
        return generated
"""
