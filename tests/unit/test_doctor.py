"""``llem doctor`` over real Zeus: fake GPUs at Zeus's device layer, a fake powercap folder as Zeus's RAPL folder, and
real child processes for the imports it tries."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

from pytest_llem.backends.probe import probe_imports
from pytest_llem.cli import main as llem
from pytest_llem.energy.doctor import check_devices, check_gpus, describe_visibility
from tests.zeus_fakes import FakeGPU, FakeGPUs

ZEUSD = ("ZEUSD_SOCK_PATH", "ZEUSD_HOST_PORT")


@pytest.fixture
def powercap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Zeus's RAPL folder moved to an empty temp path (absent until a test makes zones) and no GPU at Zeus's device
    layer; Zeus's singletons and caches are as before afterwards."""
    import zeus.device.cpu
    import zeus.device.gpu
    from zeus.device.cpu import rapl
    from zeus.device.gpu.common import EmptyGPUs

    folder = tmp_path / "powercap" / "intel-rapl"
    monkeypatch.setattr(rapl, "RAPL_DIR", str(folder))
    monkeypatch.setattr(rapl, "CONTAINER_RAPL_DIR", str(tmp_path / "zeus_sys"))
    monkeypatch.setattr(zeus.device.cpu, "_cpus", None)  # Zeus opens RAPL afresh from the folder above
    monkeypatch.setattr(zeus.device.gpu, "_gpus", EmptyGPUs())  # what zeus_fakes.install(None, ...) installs
    for name in (*ZEUSD, "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(name, raising=False)
    rapl.rapl_is_available.cache_clear()
    yield folder
    rapl.rapl_is_available.cache_clear()


def make_zones(folder: Path, energy_uj: int = 123_456_789) -> None:
    """A package zone with a DRAM sub-zone, laid out as the kernel's powercap driver does."""
    for path, name in (("intel-rapl:0", "package-0"), ("intel-rapl:0/intel-rapl:0:0", "dram")):
        zone = folder / path
        zone.mkdir(parents=True)
        (zone / "name").write_text(f"{name}\n")
        (zone / "energy_uj").write_text(f"{energy_uj}\n")
        (zone / "max_energy_range_uj").write_text("262143328850\n")


def doctor(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    code = llem(["doctor", "--timeout", "0", *args])  # 0: the torch and vLLM imports are tested on their own
    return code, capsys.readouterr().out.splitlines()


def test_nothing_to_measure_exits_1_naming_each_reason_and_its_remedy(
    powercap: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines = doctor(capsys)
    assert code == 1
    assert "GPUs: none: no GPU visible to this process" in lines
    assert "CUDA_VISIBLE_DEVICES unset: Zeus sees every GPU the driver lists" in lines
    assert f"RAPL ({powercap}): not measured: absent: no RAPL on this CPU, or a VM or container" in "\n".join(lines)
    (remedy,) = [line for line in lines if line.startswith("  remedy: ")]
    assert "modprobe intel_rapl_common" in remedy and "/zeus_sys/class/powercap" in remedy
    assert lines[-1].startswith("energy_j here: null in every result (nothing to measure)")


def test_fake_gpus_exit_0_named_with_their_counter_and_power_limit(
    powercap: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import zeus.device.gpu

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")
    monkeypatch.setattr(
        zeus.device.gpu, "_gpus", FakeGPUs([300.0, 10.0, 250.0], names=["NVIDIA H200", "x", "NVIDIA H100"])
    )
    code, lines = doctor(capsys)
    assert code == 0
    assert lines[1:4] == [
        "GPUs via FakeGPUs: 2",
        "  GPU 2 (CUDA 0): NVIDIA H100, energy counter yes, power limit 700 W",
        "  GPU 0 (CUDA 1): NVIDIA H200, energy counter yes, power limit 700 W",
    ]
    assert "CUDA_VISIBLE_DEVICES='2,0': Zeus sees only these, in this order: GPU 2 as CUDA 0, GPU 0 as CUDA 1" in lines
    assert lines[-1].startswith("energy_j here: GPU 2 (NVIDIA H100), GPU 0 (NVIDIA H200) via FakeGPUs")
    assert lines[-1].endswith("; no CPU/DRAM")


class PreVoltaGPU(FakeGPU):
    """A GPU without NVML's energy counter (older than Volta): Zeus integrates sampled power instead."""

    def supports_get_total_energy_consumption(self) -> bool:
        return False


def test_a_gpu_without_an_energy_counter_is_still_a_source_and_says_so(
    powercap: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import zeus.device.gpu

    gpus = FakeGPUs([100.0, 100.0], limit_w=250.0)
    gpus._gpus[1] = PreVoltaGPU(1, 100.0, name="Tesla P100", limit_w=250.0)
    monkeypatch.setattr(zeus.device.gpu, "_gpus", gpus)
    found = check_gpus()
    assert [gpu.energy_counter for gpu in found.gpus] == [True, False]
    assert "  GPU 1 (CUDA 1): Tesla P100, energy counter no (Zeus samples power instead), power limit 250 W" in (
        found.lines()
    )
    assert check_devices().ok


def test_readable_rapl_exits_0_naming_its_zones(powercap: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_zones(powercap)
    code, lines = doctor(capsys)
    assert code == 0
    start = lines.index(f"RAPL ({powercap}): Zeus measures 1 CPU package + DRAM (read through energy_uj)")
    assert lines[start + 1 : start + 3] == [
        "  intel-rapl:0 (package-0): energy_uj readable",
        "  intel-rapl:0/intel-rapl:0:0 (dram): energy_uj readable",
    ]
    assert not any(line.startswith("  remedy:") for line in lines)
    assert lines[-1].startswith("energy_j here: 1 CPU package + DRAM via RAPL (left out under pytest -n N")
    assert lines[-1].endswith("; no GPU")


# Zeus and the doctor, in a process of their own (started without capabilities when the tests run as root), on a RAPL
# folder given on the command line. It says first whether it can read a mode-000 file at all (a capable root can).
UNPRIVILEGED = """
import json, sys
from pathlib import Path
from zeus.device.cpu import rapl
rapl.RAPL_DIR = sys.argv[1]
rapl.CONTAINER_RAPL_DIR = sys.argv[1] + "-absent"
try:
    Path(sys.argv[1], "intel-rapl:0", "energy_uj").read_text()
    reads_anything = True
except PermissionError:
    reads_anything = False
from pytest_llem.energy.doctor import check_rapl
print(json.dumps({"reads_anything": reads_anything, "lines": check_rapl().lines()}))
"""


DROP_REFUSED = 97  # the child's exit status when the kernel refuses to drop its capabilities


def drop_capabilities() -> None:
    """In the child before exec: empty the capability bounding set, so that the program it runs as root has no
    capabilities (prctl PR_CAPBSET_DROP for each one)."""
    libc = ctypes.CDLL(None, use_errno=True)
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    for capability in range(last + 1):
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # 24: PR_CAPBSET_DROP
            os._exit(DROP_REFUSED)


def test_a_root_only_counter_is_named_with_both_remedies(tmp_path: Path) -> None:
    folder = tmp_path / "intel-rapl"
    make_zones(folder)
    for counter in folder.rglob("energy_uj"):
        counter.chmod(0)  # as /sys makes it since the PLATYPUS attack: root only
    # Root reads any file through CAP_DAC_OVERRIDE: the child runs without capabilities, so the kernel checks the mode
    # bits as it does for a user without access to the counters.
    drop = {"preexec_fn": drop_capabilities} if os.geteuid() == 0 else {}
    env = {k: v for k, v in os.environ.items() if k not in ZEUSD}
    proc = subprocess.run(
        [sys.executable, "-c", UNPRIVILEGED, str(folder)], capture_output=True, text=True, env=env, cwd="/", **drop
    )
    if proc.returncode == DROP_REFUSED:
        pytest.skip("this container does not let a process give up its capabilities")
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    if found["reads_anything"]:
        pytest.skip("this user reads mode-000 files (CAP_DAC_OVERRIDE): the permission branch cannot happen here")
    lines = found["lines"]
    assert lines[0] == f"RAPL ({folder}): not measured: energy_uj is root-only here"
    assert lines[1:3] == [
        "  intel-rapl:0 (package-0): energy_uj not readable by this user (permission denied)",
        "  intel-rapl:0/intel-rapl:0:0 (dram): energy_uj not readable by this user (permission denied)",
    ]
    assert lines[3].startswith(
        f"  remedy: give this user read access to the zones' energy_uj (as root: chmod a+r {folder}"
    )
    assert lines[3].endswith("or run Zeus's zeusd daemon and set ZEUSD_SOCK_PATH to its socket")


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (None, "Zeus sees every GPU the driver lists"),
        ("1", "Zeus sees only these, in this order: GPU 1 as CUDA 0"),
        ("", "set but empty: Zeus refuses it"),
        ("MIG-5c8e1a2b-0000-0000-0000-000000000000", "MIG instances: NVML cannot measure a MIG slice"),
        ("GPU-5c8e1a2b-0000-0000-0000-000000000000", "not a list of GPU indices (UUIDs?): Zeus reads integer indices"),
        ("-1", "a negative index hides the GPUs from CUDA"),
    ],
)
def test_cuda_visible_devices_is_read_as_zeus_reads_it(value: str | None, says: str) -> None:
    assert describe_visibility(value).startswith(says)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


MODULES = {
    "llem_fine": "__version__ = '1.2.3'\n",
    "llem_broken": "raise ImportError('libfoo.so.1: cannot open shared object file')\n",
    "llem_crashes": "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n",
    "llem_hangs": (
        "import os, subprocess, time\n"
        "helper = subprocess.Popen(['sleep', '600'])\n"
        "open(os.environ['LLEM_PIDS'], 'w').write(f'{os.getpid()} {helper.pid}')\n"
        "time.sleep(600)\n"
    ),
}


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name, text in MODULES.items():
        (tmp_path / f"{name}.py").write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))  # find_spec looks here
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # the child processes too
    monkeypatch.setenv("LLEM_PIDS", str(tmp_path / "pids"))
    return tmp_path


def test_imports_that_fail_crash_or_are_missing_are_reported_not_suffered(modules: Path) -> None:
    found = probe_imports(["llem_fine", "llem_broken", "llem_crashes", "llem_not_here"], timeout_s=120)
    assert (found["llem_fine"].status, found["llem_fine"].detail) == ("imports", "1.2.3")
    assert (found["llem_broken"].status, found["llem_broken"].detail) == (
        "fails",
        "ImportError: libfoo.so.1: cannot open shared object file",
    )
    assert (found["llem_crashes"].status, found["llem_crashes"].detail) == ("crashed", "killed by SIGSEGV")
    assert found["llem_not_here"].status == "not installed"


def test_an_import_that_hangs_is_killed_with_what_it_started(modules: Path) -> None:
    (found,) = probe_imports(["llem_hangs"], timeout_s=3).values()
    assert (found.status, found.detail) == ("timed out", "did not finish importing in 3 s")
    pids = modules / "pids"
    if pids.exists():  # written once the import got that far (it does within 3 s on any usual machine)
        assert not any(alive(int(pid)) for pid in pids.read_text().split())


def test_doctor_imports_torch_and_vllm_only_in_child_processes(
    powercap: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = {name for name in ("torch", "vllm") if name in sys.modules}
    code = llem(["doctor", "--timeout", "900"])  # waits only as long as the imports take: generous on a slow machine
    lines = capsys.readouterr().out.splitlines()
    assert code == 1  # no device: the imports do not decide the exit status
    (torch_line,) = [line for line in lines if line.startswith("torch")]
    assert torch_line.startswith(f"torch {metadata.version('torch')}: a ")  # a CPU-only build / a CUDA 12.4 build
    assert any(line.startswith("vLLM") for line in lines)
    assert {name for name in ("torch", "vllm") if name in sys.modules} == before


def test_doctor_refuses_a_negative_timeout(capsys: pytest.CaptureFixture[str]) -> None:
    assert llem(["doctor", "--timeout", "-1"]) == 2
    assert "expected seconds >= 0, got '-1'" in capsys.readouterr().err
