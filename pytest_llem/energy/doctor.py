"""What this machine can measure, and how to get the rest: the facts behind ``llem doctor``.

The devices are asked of the layers the meter itself uses (Zeus's device layer and its RAPL folder), so the answer is
the meter's. torch and vLLM are imported in child processes under a timeout: a broken install can neither hang nor
crash the diagnosis, and this process never starts CUDA. Zeus is imported inside the functions: importing this
module costs nothing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from ..backends.probe import ImportCheck, ImportProbes, torch_line, vllm_line

ZEUSD_ENVS = ("ZEUSD_SOCK_PATH", "ZEUSD_HOST_PORT")  # Zeus reads RAPL (and GPUs) through its daemon when either is set
DEFAULT_IMPORT_TIMEOUT_S = 120.0
ZEUS_MISSING = "zeus is not installed: pytest-llem measures nothing without it"
DEFAULT_RAPL_DIR = "/sys/class/powercap/intel-rapl"  # Zeus's; read from Zeus itself whenever it is installed
CPU_SHARE_NOTE = "left out under pytest -n N with N > 1, where the workers share the CPUs"

# -- GPUs ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuFinding:
    index: int  # as CUDA numbers it in this process (after CUDA_VISIBLE_DEVICES)
    physical_index: int  # as the driver (nvidia-smi) numbers it
    name: str | None
    energy_counter: bool | None  # Zeus's supports_get_total_energy_consumption; None: the driver would not say
    power_limit_w: float | None


@dataclass(frozen=True)
class GpuCheck:
    gpus: tuple[GpuFinding, ...]
    interface: str | None  # NVML, AMD SMI
    problem: str | None  # why there is none, in the meter's words
    cuda_visible_devices: str | None
    visibility: str  # how Zeus reads CUDA_VISIBLE_DEVICES

    def lines(self) -> list[str]:
        lines = [f"GPUs via {self.interface}: {len(self.gpus)}" if self.gpus else f"GPUs: none: {self.problem}"]
        for gpu in self.gpus:
            counter = {True: "yes", False: "no (Zeus samples power instead)", None: "unknown"}[gpu.energy_counter]
            limit = f"{gpu.power_limit_w:g} W" if gpu.power_limit_w is not None else "unknown"
            lines.append(
                f"  GPU {gpu.physical_index} (CUDA {gpu.index}): {gpu.name or 'unnamed'}, energy counter {counter}, "
                f"power limit {limit}"
            )
        shown = " unset" if self.cuda_visible_devices is None else f"={self.cuda_visible_devices!r}"
        lines.append(f"CUDA_VISIBLE_DEVICES{shown}: {self.visibility}")
        return lines


def describe_visibility(value: str | None) -> str:
    """How Zeus's NVIDIA layer reads ``CUDA_VISIBLE_DEVICES``: integer indices only, in the order given."""
    if value is None:
        return "Zeus sees every GPU the driver lists"
    entries = [entry.strip() for entry in value.split(",")]
    if not value.strip():
        return "set but empty: Zeus refuses it (unset it, or list GPU indices)"
    if value.startswith("MIG"):
        return (
            "MIG instances: NVML cannot measure a MIG slice, so Zeus measures no GPU "
            "(name the whole GPU by its index to measure the whole GPU)"
        )
    if not all(entry.lstrip("-").isdigit() for entry in entries):
        return (
            "not a list of GPU indices (UUIDs?): Zeus reads integer indices only, so GPU energy is not measured "
            "(use the indices `nvidia-smi -L` prints)"
        )
    indices = [int(entry) for entry in entries]
    if any(index < 0 for index in indices):
        return "a negative index hides the GPUs from CUDA; Zeus cannot open GPU -1 and measures none"
    mapping = ", ".join(f"GPU {physical} as CUDA {cuda}" for cuda, physical in enumerate(indices))
    return f"Zeus sees only these, in this order: {mapping}"


def check_gpus() -> GpuCheck:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        from zeus.device import gpu as zeus_gpu

        from .zeus import GPU_INTERFACES, visible_gpus
    except ImportError as exc:
        return GpuCheck((), None, f"{ZEUS_MISSING} ({exc})", visible, describe_visibility(visible))
    devices, problem = visible_gpus()
    if not devices:
        return GpuCheck((), None, problem, visible, describe_visibility(visible))
    gpus = zeus_gpu.get_gpus()  # the manager visible_gpus just opened (Zeus keeps one)
    findings = tuple(
        GpuFinding(d.index, d.physical_index, d.name, _energy_counter(gpus, d.index), d.power_limit_w) for d in devices
    )
    interface = GPU_INTERFACES.get(type(gpus).__name__, type(gpus).__name__)
    return GpuCheck(findings, interface, None, visible, describe_visibility(visible))


def _energy_counter(gpus: object, index: int) -> bool | None:
    try:
        return bool(gpus.supports_get_total_energy_consumption(index))  # type: ignore[attr-defined]
    except Exception:  # the driver's own error: the counter's presence is then unknown, not absent
        return None


# -- RAPL ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RaplZone:
    path: str  # inside the RAPL folder: intel-rapl:0, intel-rapl:0/intel-rapl:0:0
    name: str | None
    problem: str | None  # why energy_uj cannot be read; None: readable

    @property
    def readable(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class RaplCheck:
    folder: str
    zones: tuple[RaplZone, ...]
    measured: str | None  # what Zeus measures through RAPL ("1 CPU package + DRAM"); None: nothing
    problem: str | None
    remedy: str | None

    def lines(self) -> list[str]:
        if self.measured is not None:
            via = _zeusd() or "energy_uj"
            head = f"RAPL ({self.folder}): Zeus measures {self.measured} (read through {via})"
        else:
            head = f"RAPL ({self.folder}): not measured: {self.problem}"
        lines = [head]
        for zone in self.zones:
            state = "readable" if zone.readable else zone.problem
            lines.append(f"  {zone.path} ({zone.name or 'no name'}): energy_uj {state}")
        if self.remedy:
            lines.append(f"  remedy: {self.remedy}")
        return lines


def rapl_zones(folder: Path) -> list[RaplZone]:
    """Every zone under a powercap folder (packages and their sub-zones), with whether its counter reads."""
    zones = []
    for package in _zone_dirs(folder):
        zones.append(_zone(folder, package))
        zones += [_zone(folder, sub) for sub in _zone_dirs(package)]
    return zones


def _zone_dirs(folder: Path) -> list[Path]:
    def order(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in path.name.split(":")[1:] if part.isdigit())

    try:
        found = [path for path in folder.iterdir() if path.name.startswith("intel-rapl:") and path.is_dir()]
    except OSError:
        return []
    return sorted(found, key=order)


def _zone(folder: Path, zone: Path) -> RaplZone:
    try:
        name: str | None = (zone / "name").read_text().strip()
    except OSError:
        name = None
    return RaplZone(str(zone.relative_to(folder)), name, _counter_problem(zone / "energy_uj"))


def _counter_problem(path: Path) -> str | None:
    """Read the counter as Zeus does; the error type says why it cannot be read."""
    try:
        float(path.read_text().strip())
    except FileNotFoundError:
        return "absent"
    except PermissionError:
        return "not readable by this user (permission denied)"
    except OSError as exc:
        return f"unreadable ({exc.strerror or type(exc).__name__})"
    except ValueError:
        return "holds no number"
    return None


def _zeusd() -> str | None:
    for name in ZEUSD_ENVS:
        if os.environ.get(name):
            return f"zeusd ({name}={os.environ[name]})"
    return None


def check_rapl() -> RaplCheck:
    try:
        from zeus.device import cpu as zeus_cpu
        from zeus.device.cpu import rapl
        from zeus.device.cpu.common import ZeusCPUNoPermissionError
        from zeus.device.exception import ZeusBaseCPUError
    except ImportError as exc:
        folder = Path(DEFAULT_RAPL_DIR)
        return RaplCheck(str(folder), tuple(rapl_zones(folder)), None, f"{ZEUS_MISSING} ({exc})", "pip install zeus")

    # Zeus's own choice: its RAPL folder, else the one a container may mount at /zeus_sys.
    folder = Path(rapl.RAPL_DIR if os.path.exists(rapl.RAPL_DIR) else rapl.CONTAINER_RAPL_DIR)
    if not folder.exists():
        folder = Path(rapl.RAPL_DIR)
    zones = tuple(rapl_zones(folder))
    try:
        cpus = zeus_cpu.get_cpus()
        measured = _measured(cpus) if len(cpus) else None
        error: Exception | None = None
    except (ZeusBaseCPUError, OSError, ValueError) as exc:
        measured, error = None, exc
    if measured is not None:
        return RaplCheck(str(folder), zones, measured, None, None)
    problem, remedy = _rapl_problem(folder, zones, error, ZeusCPUNoPermissionError)
    return RaplCheck(str(folder), zones, None, problem, remedy)


def _measured(cpus: object) -> str:
    count = len(cpus)  # type: ignore[arg-type]
    dram = any(cpus.supports_get_dram_energy_consumption(i) for i in range(count))  # type: ignore[attr-defined]
    return f"{count} CPU package{'s' if count > 1 else ''}{' + DRAM' if dram else ''}"


def _rapl_problem(
    folder: Path, zones: Sequence[RaplZone], error: Exception | None, permission_error: type[Exception]
) -> tuple[str, str | None]:
    zeusd = _zeusd()
    if zeusd and error is not None and not isinstance(error, permission_error):
        return f"{zeusd} did not serve RAPL ({error})", "start zeusd with CPU access, or fix the socket's path"
    if isinstance(error, permission_error) or any(z.problem and "permission" in z.problem for z in zones):
        return (
            "energy_uj is root-only here",
            "give this user read access to the zones' energy_uj (as root: chmod a+r "
            f"{folder}/intel-rapl:*/energy_uj {folder}/intel-rapl:*/intel-rapl:*/energy_uj; again after each boot), "
            "or run Zeus's zeusd daemon and set ZEUSD_SOCK_PATH to its socket",
        )
    if not folder.exists():
        return (
            "absent: no RAPL on this CPU, or a VM or container that does not expose it",
            "on bare metal, modprobe intel_rapl_common; in a container, mount the host's /sys/class/powercap at "
            "/zeus_sys/class/powercap (Zeus looks there)",
        )
    if error is not None:
        return f"Zeus could not read it ({type(error).__name__}: {error})", None
    return "no CPU package zone with an energy counter", None


# -- the whole report ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceReport:
    """The energy sources: what decides what ``energy_j`` covers and the doctor's exit status."""

    gpus: GpuCheck
    rapl: RaplCheck

    @property
    def ok(self) -> bool:
        return bool(self.gpus.gpus) or self.rapl.measured is not None

    def coverage(self) -> str:
        parts = []
        if self.gpus.gpus:
            named = ", ".join(f"GPU {gpu.physical_index} ({gpu.name or 'unnamed'})" for gpu in self.gpus.gpus)
            scope = "of these, each item measures the GPUs its engine uses, or energy.gpu_indices"
            parts.append(f"{named} via {self.gpus.interface} ({scope})")
        if self.rapl.measured is not None:
            parts.append(f"{self.rapl.measured} via RAPL ({CPU_SHARE_NOTE})")
        if not parts:
            return (
                "energy_j here: null in every result (nothing to measure); time, tokens and latencies are still "
                "measured"
            )
        missing = [
            label
            for label, absent in (("no GPU", not self.gpus.gpus), ("no CPU/DRAM", self.rapl.measured is None))
            if absent
        ]
        return "energy_j here: " + " + ".join(parts) + (f"; {', '.join(missing)}" if missing else "")


@dataclass(frozen=True)
class DoctorReport:
    devices: DeviceReport
    torch: ImportCheck | None  # None: not checked
    vllm: ImportCheck | None
    zeus_version: str | None

    @property
    def ok(self) -> bool:
        return self.devices.ok

    def lines(self) -> list[str]:
        version = f"Zeus {self.zeus_version}" if self.zeus_version else "Zeus"
        lines = [f"llem doctor: what this machine can measure ({version})"]
        lines += self.devices.gpus.lines()
        lines += self.devices.rapl.lines()
        if self.torch is not None:
            lines.append(torch_line(self.torch, len(self.devices.gpus.gpus)))
        if self.vllm is not None:
            lines.append(vllm_line(self.vllm))
        lines.append(self.devices.coverage())
        return lines


def check_devices() -> DeviceReport:
    return DeviceReport(check_gpus(), check_rapl())


def diagnose(import_timeout_s: float | None = DEFAULT_IMPORT_TIMEOUT_S) -> DoctorReport:
    """Everything ``llem doctor`` says; ``import_timeout_s`` None leaves out the torch and vLLM imports."""
    probes = ImportProbes(("torch", "vllm") if import_timeout_s is not None else ())
    devices = check_devices()
    imports = probes.results(import_timeout_s) if import_timeout_s is not None else {}
    return DoctorReport(devices, imports.get("torch"), imports.get("vllm"), _zeus_version())


def _zeus_version() -> str | None:
    for distribution in ("zeus", "zeus-ml"):
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return None
