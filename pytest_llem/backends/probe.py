"""Whether the backends' libraries import, and which build of torch is installed: each module imported in its own
child process under a timeout, so a broken install can neither hang nor crash the caller, and the caller never starts
CUDA (``llem doctor``)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

# Imports the module named in argv[1] and prints what the diagnosis needs on one marked line. torch.cuda is never
# called: reading torch.version says which build it is without starting CUDA.
_PROBE = """
import importlib, json, sys
module = importlib.import_module(sys.argv[1])
facts = {"version": str(getattr(module, "__version__", "") or "")}
if sys.argv[1] == "torch":
    facts.update(cuda=module.version.cuda, hip=getattr(module.version, "hip", None))
print("LLEM-PROBE " + json.dumps(facts), flush=True)
"""
_PROBE_MARK = "LLEM-PROBE "


@dataclass(frozen=True)
class ImportCheck:
    module: str
    status: str  # imports | not installed | fails | timed out | crashed
    detail: str  # the version, or why not
    facts: dict[str, object]
    seconds: float | None = None

    @property
    def imports(self) -> bool:
        return self.status == "imports"


class ImportProbes:
    """Each module imported in its own child process, all started at once (they run while the devices are looked
    at); a module that is not installed is not started at all."""

    def __init__(self, modules: Sequence[str]) -> None:
        self.modules = tuple(modules)
        self.started = time.monotonic()
        self._processes: dict[str, subprocess.Popen[str]] = {}
        for module in self.modules:
            if importlib.util.find_spec(module) is not None:
                self._processes[module] = subprocess.Popen(
                    [sys.executable, "-c", _PROBE, module],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    start_new_session=True,  # its own group: a timeout kills whatever the import started too
                )

    def results(self, timeout_s: float) -> dict[str, ImportCheck]:
        """Wait at most ``timeout_s`` from the start for every import; kill what is still importing then."""
        deadline = self.started + timeout_s
        checks = {}
        for module in self.modules:
            process = self._processes.get(module)
            if process is None:
                checks[module] = ImportCheck(module, "not installed", "", {})
            else:
                checks[module] = self._collect(module, process, deadline, timeout_s)
        return checks

    def _collect(self, module: str, process: subprocess.Popen[str], deadline: float, timeout_s: float) -> ImportCheck:
        try:
            out, err = process.communicate(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            return ImportCheck(module, "timed out", f"did not finish importing in {timeout_s:g} s", {})
        seconds = time.monotonic() - self.started
        marked = [line[len(_PROBE_MARK) :] for line in out.splitlines() if line.startswith(_PROBE_MARK)]
        if process.returncode == 0 and marked:
            facts = json.loads(marked[-1])
            return ImportCheck(module, "imports", str(facts.get("version") or ""), facts, seconds)
        if process.returncode < 0:
            name = signal.Signals(-process.returncode).name
            return ImportCheck(module, "crashed", f"killed by {name}", {}, seconds)
        last = next((line.strip() for line in reversed(err.splitlines()) if line.strip()), "")
        return ImportCheck(module, "fails", last[:300] or f"exit {process.returncode}", {}, seconds)


def probe_imports(modules: Sequence[str], timeout_s: float) -> dict[str, ImportCheck]:
    return ImportProbes(modules).results(timeout_s)


def torch_line(torch: ImportCheck, gpu_count: int) -> str:
    if not torch.imports:
        detail = f": {torch.detail}" if torch.detail else ""
        return f"torch: {torch.status}{detail} (the pytorch backend cannot run)"
    cuda, hip = torch.facts.get("cuda"), torch.facts.get("hip")
    if cuda is None and hip is None:
        build = "a CPU-only build (torch.version.cuda is None)"
        where = (
            f": the pytorch backend runs on the CPU although the driver lists {gpu_count} GPU(s); "
            "install a CUDA build of torch"
            if gpu_count
            else ": the pytorch backend runs on the CPU"
        )
    else:
        build = f"a CUDA {cuda} build" if cuda is not None else f"a ROCm {hip} build"
        where = f"; the driver lists {gpu_count} GPU(s)" if gpu_count else "; no GPU visible: it runs on the CPU"
    return f"torch {torch.detail}: {build}{where}"


def vllm_line(vllm: ImportCheck) -> str:
    if vllm.imports:
        return f"vLLM {vllm.detail}: imports ({vllm.seconds:.0f} s)"
    if vllm.status == "not installed":
        return "vLLM: not installed (vllm items are skipped with the install hint)"
    return f"vLLM: {vllm.status}: {vllm.detail} (vllm items will fail)"
