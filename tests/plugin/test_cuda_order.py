"""Nothing of ours initialises CUDA in an item's process before its backend loads: on a GPU, a process that did cannot
fork vLLM's engine ("Cannot re-initialize CUDA in forked subprocess"). torch's CUDA entry points that may initialise
the driver (``is_available``, ``device_count``, ``init``, ``_lazy_init``) are recorded in each item's process from its
first moment (``pytest_llem_child_setup``), with the moment its engine starts loading, under meter zeus with a fake GPU
(whose window sync once asked ``torch.cuda.is_available()``, during the idle baseline). The ``llem_energy`` fixture's
windows, in the pytest process, ask nothing either. On CPU these calls are harmless, so the order is what is checked.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests import studies

FAKES = Path(__file__).parent.parent / "zeus_fakes.py"
HAS_VLLM = importlib.util.find_spec("vllm") is not None
WATCHED = ("is_available", "device_count", "init", "_lazy_init")

CONFTEST = f"""
import json
import os
import sys
from pathlib import Path

import zeus_fakes
from pytest_llem.backends.pytorch import PyTorchBackend

LOG = Path(__file__).parent / "cuda_calls.jsonl"
WATCHED = {WATCHED!r}


def note(what):
    with LOG.open("a") as handle:
        handle.write(json.dumps([os.getpid(), what]) + "\\n")


class Recorded(PyTorchBackend):
    def load(self, config, model):
        note("load")
        super().load(config, model)


def pytest_llem_backends():
    return {{"recorded": Recorded}}


def wrap(owner, name, label):
    original = getattr(owner, name)

    def recorded(*args, **kwargs):
        note(label)
        return original(*args, **kwargs)

    setattr(owner, name, recorded)


def record_cuda_calls():
    import torch

    note(("environ", os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK")))
    for name in WATCHED:  # torch.cuda's own functions call each other through these module names too
        wrap(torch.cuda, name, "torch.cuda." + name)
    vllm = sys.modules.get("vllm")  # imported by the forkserver for a session with vLLM items (importing it here
    if vllm is None:  # would record its own import-time calls)
        return
    original = vllm.LLM.__init__

    def building(self, *args, **kwargs):  # a vLLM item's engine starts here (and may fork)
        note("load")
        original(self, *args, **kwargs)

    vllm.LLM.__init__ = building


def install_fakes():
    zeus_fakes.install(zeus_fakes.FakeGPUs([100.0]), None)


def pytest_configure(config):
    install_fakes()


def pytest_llem_child_setup():
    return [install_fakes, record_cuda_calls]


def pytest_unconfigure(config):
    zeus_fakes.uninstall()
"""

# The fixture's windows run in the pytest process: recorded inside the test, around the window only.
FIXTURE_TEST = f"""
import time

import torch


def test_window(llem_energy, monkeypatch):
    calls = []
    for name in {WATCHED!r}:
        original = getattr(torch.cuda, name)
        monkeypatch.setattr(torch.cuda, name, lambda *a, _o=original, _n=name, **k: calls.append(_n) or _o(*a, **k))
    with llem_energy.measure("w"):
        time.sleep(0.2)
    assert calls == []
"""

HEAD = studies.FAST.replace("baseline: {enabled: false}", "warmup: {enabled: false}") + "energy: {meter: zeus}\n"
VLLM_ITEM = """
  - id: vllm-item
    backend: vllm
    dataset: {input_len: 24}
    max_input_tokens: 32
    vllm: {sampling: {ignore_eos: true}}
    baseline: {enabled: true, duration_seconds: 5.5}  # its own idle measurement: the pytorch item's is cached by
                                                      # duration
"""


def calls_by_process(pytester: pytest.Pytester) -> dict[int, list]:
    by_pid: dict[int, list] = {}
    for line in (pytester.path / "cuda_calls.jsonl").read_text().splitlines():
        pid, what = json.loads(line)
        by_pid.setdefault(pid, []).append(what)
    return by_pid


@pytest.mark.parametrize("baseline", [True, False], ids=["baseline", "no-baseline"])
def test_no_cuda_call_before_the_backend_loads(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory, baseline: bool
) -> None:
    """With the baseline (the call came from there) a vLLM item too when vLLM is installed: its engine is the one
    that forks, and its item must get vLLM's import-time environment back before any work, not at load."""
    monkeypatch.delenv("PYTORCH_NVML_BASED_CUDA_CHECK", raising=False)  # only vLLM's import may set it, in the server
    with_vllm = baseline and HAS_VLLM
    study = HEAD + f"baseline: {{enabled: {str(baseline).lower()}, duration_seconds: 5}}\nexperiments:\n"
    study += "  - {id: pytorch-item, backend: recorded}\n" + (VLLM_ITEM if with_vllm else "")
    if with_vllm:
        monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
        monkeypatch.setenv("VLLM_CACHE_ROOT", str(tmp_path_factory.mktemp("vllm-cache")))
    pytester.makepyfile(zeus_fakes=FAKES.read_text(), test_fx=FIXTURE_TEST)
    pytester.makeconftest(CONFTEST)
    pytester.makefile(".yaml", study_c=study)
    result = pytester.runpytest_subprocess("--llem-cycles=1", "-p", "no:cacheprovider")

    # The items' processes are those that ran the setup (it notes the environment first); vLLM's engine processes,
    # forked later, note their calls under their own pids.
    processes = {pid: calls for pid, calls in calls_by_process(pytester).items() if isinstance(calls[0], list)}
    assert len(processes) == (2 if with_vllm else 1)
    recorded_after = []
    for calls in processes.values():
        loaded = calls.index("load")
        assert [c for c in calls[:loaded] if isinstance(c, str)] == []  # no torch.cuda call before the engine loads
        recorded_after += [c for c in calls[loaded + 1 :] if isinstance(c, str)]
    assert "torch.cuda.is_available" in recorded_after  # the recording works: the pytorch backend asks at load
    # vLLM's import-time environment, set again in its item's process before the setup functions ran; not in a
    # pytorch item's
    environs = sorted(calls[0][1] or "" for calls in processes.values())
    assert environs == (["", "1"] if with_vllm else [""])
    result.assert_outcomes(passed=3 if with_vllm else 2)  # the items and the fixture's test (its own check)
