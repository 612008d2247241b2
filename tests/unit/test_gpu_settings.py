"""GPU settings (power limit, locked clocks) through Zeus's device layer, on fake GPUs that record every set and reset
and draw min(load, limit): set on the item's GPUs, read back, restored however the item ends, journaled before any
change so that ``llem doctor --restore`` can put back what a killed session left."""

from __future__ import annotations

import json
import os
import signal
import socket

import httpx
import pytest
from zeus.device.gpu.common import ZeusGPUNotSupportedError

from pytest_llem.cli import main
from pytest_llem.energy.gpu_journal import JOURNALS, GpuSettingsError, Journal
from pytest_llem.energy.gpu_restore import restore_journals
from pytest_llem.energy.gpu_settings import (
    NEEDS_RIGHT,
    Applied,
    GpuSettingsSkipped,
    Wanted,
    applied,
    restore_left_behind,
)
from pytest_llem.energy.meter import EVERY_GPU, GpuScope
from pytest_llem.energy.opening import open_meter
from pytest_llem.results.environment import Environment, GpuFingerprint
from tests.zeus_fakes import FakeClock, FakeDriver, FakeGPUs, install, uninstall

FIRST = GpuScope((0,), "the model is placed on cuda:0")
GONE = 2**22 + 12345  # above any pid_max: a session that is gone (SIGKILL)


@pytest.fixture
def gpus(monkeypatch: pytest.MonkeyPatch):
    """``gpus(n, load_w=..., root=...)``: n fake GPUs (700 W default limit, 100-700 W allowed), installed in Zeus."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)

    def make(count: int = 2, load_w: float = 900.0, root: bool = True, clock=None, driver=None) -> FakeGPUs:
        fakes = FakeGPUs(
            [load_w] * count,
            limit_w=700.0,
            driver=driver or FakeDriver(root=root),
            **({"clock": clock} if clock else {}),
        )
        install(fakes, None)
        return fakes

    yield make
    uninstall()


def limits(fakes: FakeGPUs) -> dict[int, float]:
    return {i: gpu.limit_w for i, gpu in fakes.physical.items()}


def test_the_limit_is_set_on_the_items_gpus_only_read_back_and_the_previous_one_restored(gpus, tmp_path) -> None:
    fakes = gpus(2)
    fakes.physical[0].set_power_management_limit(650_000)  # the machine's own setting, not the default, comes back
    journal = tmp_path / JOURNALS
    with applied(Wanted(power_limit_w=300), FIRST, journal) as settings:
        assert limits(fakes) == {0: 300.0, 1: 700.0}
        [written] = journal.glob("*.json")
        assert json.loads(written.read_text())["gpus"] == [
            {"physical_index": 0, "power_limit_mw": 650_000, "clocks_locked": False}
        ]
        in_force = settings.in_force()
    assert limits(fakes) == {0: 650.0, 1: 700.0}
    assert (in_force.gpus, in_force.power_limit_w, in_force.unavailable) == ((0,), 300.0, {})
    assert fakes.driver.calls == [
        ["set_power_limit", 0, 650_000],
        ["set_power_limit", 0, 300_000],
        ["set_power_limit", 0, 650_000],
    ]
    assert list(journal.glob("*.json")) == []  # restored: nothing left for doctor


def test_energy_follows_the_limit(gpus, monkeypatch) -> None:
    clock = FakeClock().patch(monkeypatch)
    gpus(1, load_w=900.0, clock=clock)
    readings = {}
    for limit in (300, 500):
        with applied(Wanted(power_limit_w=limit), EVERY_GPU, None):
            meter = open_meter("auto")
            meter.begin("w")
            clock.sleep(0.5)
            readings[limit] = meter.end("w").gpu_energy_j[0]
    assert readings == {300: pytest.approx(150.0), 500: pytest.approx(250.0)}


@pytest.mark.parametrize("ending", [RuntimeError("the item failed"), KeyboardInterrupt()])
def test_a_failing_or_interrupted_item_still_restores(gpus, tmp_path, ending) -> None:
    fakes = gpus(2)
    with pytest.raises(type(ending)), applied(Wanted(power_limit_w=250, locked_clocks_mhz=(900, 1400)), EVERY_GPU,
                                              tmp_path):  # fmt: skip
        assert limits(fakes) == {0: 250.0, 1: 250.0}
        assert [g.locked_clocks_mhz for g in fakes.physical.values()] == [[900, 1400], [900, 1400]]
        raise ending
    assert limits(fakes) == {0: 700.0, 1: 700.0}
    assert [g.locked_clocks_mhz for g in fakes.physical.values()] == [None, None]
    assert fakes.driver.calls[-4:] == [
        ["set_power_limit", 0, 700_000],
        ["reset_gpu_locked_clocks", 0],
        ["set_power_limit", 1, 700_000],
        ["reset_gpu_locked_clocks", 1],
    ]
    assert list(tmp_path.glob("*.json")) == []


def test_a_limit_outside_the_allowed_range_is_a_skip_naming_the_range_and_changes_nothing(gpus, tmp_path) -> None:
    fakes = gpus(1)
    with pytest.raises(GpuSettingsSkipped) as raised, applied(Wanted(power_limit_w=900), EVERY_GPU, tmp_path):
        pass
    assert str(raised.value) == "gpu.power_limit_w: 900 W is outside what GPU 0 allows (100-700 W)"
    assert fakes.driver.calls == [] and list(tmp_path.glob("*.json")) == []


def test_clocks_outside_what_the_gpu_supports_are_a_skip_naming_the_range(gpus, tmp_path) -> None:
    fakes = gpus(1)
    expected = r"\[100, 1500\] MHz is outside what GPU 0 allows \(210-1980 MHz\)"
    with pytest.raises(GpuSettingsSkipped, match=expected), applied(Wanted(None, (100, 1500)), EVERY_GPU, tmp_path):
        pass
    assert fakes.driver.calls == []


def test_without_the_right_the_item_fails_in_one_line_saying_what_is_missing(gpus, tmp_path) -> None:
    fakes = gpus(1, root=False)
    with pytest.raises(GpuSettingsError) as raised, applied(Wanted(power_limit_w=300), EVERY_GPU, tmp_path):
        pass
    assert not isinstance(raised.value, GpuSettingsSkipped)
    message = str(raised.value)
    assert message.startswith(NEEDS_RIGHT) and "set GPU 0's power limit to 300 W was refused" in message
    assert "\n" not in message
    assert limits(fakes) == {0: 700.0} and list(tmp_path.glob("*.json")) == []


def test_clocks_refused_without_the_right_leave_nothing_to_restore(gpus, tmp_path) -> None:
    fakes = gpus(1, root=False)
    assert fakes.physical[0].locked_clocks_mhz is None
    with pytest.raises(GpuSettingsError) as raised, applied(Wanted(None, (900, 1400)), EVERY_GPU, tmp_path):
        pass
    assert "restoring failed too" not in str(raised.value) and "lock GPU 0's graphics clocks" in str(raised.value)
    assert list(tmp_path.glob("*.json")) == []


def test_no_gpu_to_set_is_a_skip(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    install(None, None)
    try:
        with pytest.raises(GpuSettingsSkipped, match=r"^gpu: no GPU to set"), applied(Wanted(300), EVERY_GPU, tmp_path):
            pass
    finally:
        uninstall()


def test_a_process_given_one_gpu_sets_only_that_one(gpus, monkeypatch, tmp_path) -> None:
    """Under pytest-xdist each worker sees its own GPUs through CUDA_VISIBLE_DEVICES: CUDA 0 there is GPU 1."""
    driver = FakeDriver()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    fakes = FakeGPUs([900.0, 900.0], driver=driver)
    install(fakes, None)
    with applied(Wanted(power_limit_w=400), FIRST, tmp_path) as settings:
        assert settings.in_force().gpus == (1,)
    assert [call[1] for call in driver.calls] == [1, 1]


def test_a_limit_changed_during_the_item_is_not_reported_as_in_force(gpus, tmp_path) -> None:
    fakes = gpus(1)
    with applied(Wanted(power_limit_w=300), EVERY_GPU, tmp_path) as settings:
        fakes.physical[0].set_power_management_limit(450_000)  # someone else, mid-item
        in_force = settings.in_force()
    assert in_force.power_limit_w is None
    assert in_force.unavailable == {
        "gpu_power_limit_w": "the limit read back was not one value throughout the item "
        "(GPU 0: 300 W before, 450 W after)"
    }


def test_a_restore_that_fails_keeps_the_journal_and_names_doctor(gpus, tmp_path) -> None:
    fakes = gpus(1)
    with pytest.raises(GpuSettingsError, match=r"llem doctor --restore"), applied(Wanted(300), EVERY_GPU, tmp_path):
        fakes.driver.set_root(False)  # the right is gone before the end
    assert len(list(tmp_path.glob("*.json"))) == 1


def test_doctor_restore_puts_back_what_a_killed_session_left(gpus, tmp_path, capsys) -> None:
    fakes = gpus(2)
    journals = tmp_path / ".llem" / JOURNALS
    Applied(fakes, [0, 1], Wanted(power_limit_w=300, locked_clocks_mhz=(900, 1400)), Journal(journals)).apply()
    journal = next(journals.glob("*.json"))
    document = json.loads(journal.read_text())
    journal.write_text(json.dumps({**document, "pid": GONE}))  # a session that is gone (SIGKILL)
    assert limits(fakes) == {0: 300.0, 1: 300.0}
    assert main(["doctor", "--restore", str(tmp_path / ".llem")]) == 0
    assert limits(fakes) == {0: 700.0, 1: 700.0}
    assert [g.locked_clocks_mhz for g in fakes.physical.values()] == [None, None]
    assert not journal.exists()
    out = capsys.readouterr().out
    assert "restored GPU 0: power limit 700 W, clocks unlocked; GPU 1: power limit 700 W, clocks unlocked" in out
    assert main(["doctor", "--restore", str(tmp_path / ".llem")]) == 0
    assert "nothing to restore" in capsys.readouterr().out


def test_doctor_leaves_a_running_sessions_journal_and_one_it_cannot_restore(gpus, tmp_path) -> None:
    fakes = gpus(1)
    folder = tmp_path / JOURNALS
    folder.mkdir()
    entry = [{"physical_index": 0, "power_limit_mw": 700_000, "clocks_locked": False}]
    running = {"host": socket.gethostname(), "pid": os.getppid(), "gpus": entry}
    (folder / "running.json").write_text(json.dumps(running))
    (folder / "elsewhere.json").write_text(
        json.dumps({"host": socket.gethostname(), "pid": GONE, "gpus": [{**entry[0], "physical_index": 5}]})
    )
    lines, complete = restore_journals(tmp_path)
    assert not complete
    assert any("still running" in line for line in lines)
    assert any("GPU 5 not visible here; left in place" in line for line in lines)
    assert sorted(p.name for p in folder.glob("*.json")) == ["elsewhere.json", "running.json"]
    assert fakes.driver.calls == []


def journal_of(path, pid: int, *entries: tuple[int, int | None, bool], host: str | None = None):
    """A journal as a session writes it: (physical index, limit before in mW, clocks locked) per GPU."""
    path.parent.mkdir(parents=True, exist_ok=True)
    gpus = [{"physical_index": i, "power_limit_mw": mw, "clocks_locked": locked} for i, mw, locked in entries]
    path.write_text(json.dumps({"host": host or socket.gethostname(), "pid": pid, "written_at": 0, "gpus": gpus}))
    return path


def test_a_restore_refused_for_one_item_is_done_by_the_next_to_the_machines_own_settings(gpus, tmp_path) -> None:
    """Item A's restore is refused (the journal stays, saying 700 W); item B finds the GPU at A's 300 W: B journals
    nothing newer over it, and restores the machine's 700 W and A's unlocked clocks."""
    fakes = gpus(1)
    with pytest.raises(GpuSettingsError), applied(Wanted(300, (900, 1400)), EVERY_GPU, tmp_path):
        fakes.driver.set_root(False)
    fakes.driver.set_root(True)
    [journal] = tmp_path.glob("*.json")
    with applied(Wanted(power_limit_w=500), EVERY_GPU, tmp_path):
        assert limits(fakes) == {0: 500.0}
        assert json.loads(journal.read_text())["gpus"] == [
            {"physical_index": 0, "power_limit_mw": 700_000, "clocks_locked": True}
        ]
    assert limits(fakes) == {0: 700.0} and fakes.physical[0].locked_clocks_mhz is None
    assert list(tmp_path.glob("*.json")) == []


def test_a_journal_left_by_a_session_that_is_gone_is_restored_before_the_item_changes_anything(
    gpus, tmp_path, capsys
) -> None:
    fakes = gpus(2)
    fakes.physical[0].set_power_management_limit(300_000)  # what the killed session left
    fakes.physical[1].set_power_management_limit(400_000)
    left = journal_of(tmp_path / f"{socket.gethostname()}-{GONE}.json", GONE, (0, 700_000, False), (1, 650_000, True))
    with applied(Wanted(power_limit_w=500), FIRST, tmp_path):
        [own] = [p for p in tmp_path.glob("*.json") if p != left]
        assert json.loads(own.read_text())["gpus"][0]["power_limit_mw"] == 700_000
    assert limits(fakes) == {0: 700.0, 1: 400.0}  # GPU 1 is not this item's: its entry stays, for doctor
    assert json.loads(left.read_text())["gpus"] == [
        {"physical_index": 1, "power_limit_mw": 650_000, "clocks_locked": True}
    ]
    err = capsys.readouterr().err
    assert f"put back GPU 0: power limit 700 W, which a session that is gone (pid {GONE}) left changed" in err
    assert str(left) in err


def test_a_journal_left_by_a_session_that_is_gone_that_cannot_be_restored_refuses_the_item(gpus, tmp_path) -> None:
    fakes = gpus(1)
    fakes.physical[0].set_power_management_limit(300_000)
    left = journal_of(tmp_path / f"{socket.gethostname()}-{GONE}.json", GONE, (0, 700_000, False))
    fakes.driver.set_root(False)
    with pytest.raises(GpuSettingsError) as raised, applied(Wanted(power_limit_w=500), EVERY_GPU, tmp_path):
        pytest.fail("the item ran over settings a dead session left")
    message = str(raised.value)
    assert "\n" not in message and "llem doctor --restore" in message and str(left) in message
    assert not isinstance(raised.value, GpuSettingsSkipped)
    assert [p.name for p in tmp_path.glob("*.json")] == [left.name] and limits(fakes) == {0: 300.0}


def test_an_item_that_sets_nothing_first_puts_back_what_a_session_that_is_gone_left_on_its_gpus(
    gpus, tmp_path, capsys
) -> None:
    fakes = gpus(2)
    fakes.physical[0].set_power_management_limit(300_000)  # what the killed session left
    fakes.physical[1].set_power_management_limit(400_000)
    left = journal_of(tmp_path / f"{socket.gethostname()}-{GONE}.json", GONE, (0, 700_000, False), (1, 650_000, False))
    restore_left_behind(FIRST, tmp_path)
    assert limits(fakes) == {0: 700.0, 1: 400.0}  # GPU 1 is not this item's: its entry stays, for doctor
    assert [c["physical_index"] for c in json.loads(left.read_text())["gpus"]] == [1]
    assert f"put back GPU 0: power limit 700 W, which a session that is gone (pid {GONE})" in capsys.readouterr().err
    restore_left_behind(EVERY_GPU, tmp_path)
    assert limits(fakes) == {0: 700.0, 1: 650.0} and list(tmp_path.glob("*.json")) == []


def test_an_item_that_sets_nothing_touches_no_gpu_without_a_journal_left_behind(gpus, tmp_path) -> None:
    fakes = gpus(1)
    fakes.physical[0].set_power_management_limit(300_000)  # the machine's own: not this tool's to change
    before = fakes.driver.calls
    journal_of(tmp_path / f"{socket.gethostname()}-{os.getpid()}.json", os.getpid(), (0, 700_000, False))  # running
    restore_left_behind(EVERY_GPU, tmp_path)
    restore_left_behind(EVERY_GPU, tmp_path / "absent")
    assert limits(fakes) == {0: 300.0} and fakes.driver.calls == before


def test_doctor_leaves_another_hosts_journal_in_place_and_says_so(gpus, tmp_path, capsys) -> None:
    fakes = gpus(1)
    fakes.physical[0].set_power_management_limit(300_000)
    other = journal_of(tmp_path / JOURNALS / "node7-99.json", 99, (0, 700_000, False), host="node7")
    assert main(["doctor", "--restore", str(tmp_path)]) == 0
    assert f"{other}: written on host node7, not this one" in capsys.readouterr().out
    assert other.exists() and limits(fakes) == {0: 300.0}


def test_doctor_restore_without_the_results_folder_says_where_it_looked_and_fails(
    tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["doctor", "--restore"]) == 1
    assert str(tmp_path / ".llem") in capsys.readouterr().out
    assert main(["doctor", "--restore", str(tmp_path / "elsewhere")]) == 1
    assert f"{tmp_path / 'elsewhere'} does not exist" in capsys.readouterr().out


@pytest.mark.parametrize("call", ["power_limit_constraints", "get_power_limit"])
def test_a_limit_the_driver_cannot_read_is_a_skip(gpus, tmp_path, call) -> None:
    fakes = gpus(1)
    fakes.driver.fail(call, 0, ZeusGPUNotSupportedError("Not Supported"))
    with (
        pytest.raises(GpuSettingsSkipped, match=r"^the driver cannot .* GPU 0.*\(Not Supported\)$"),
        applied(Wanted(power_limit_w=300), EVERY_GPU, tmp_path),
    ):
        pass
    assert fakes.driver.calls == [] and list(tmp_path.glob("*.json")) == []


def test_a_zeusd_that_does_not_answer_fails_the_item_in_one_line(gpus, tmp_path) -> None:
    fakes = gpus(2)
    fakes.driver.fail("set_power_limit", 1, httpx.ConnectError("[Errno 111] Connection refused"))
    with pytest.raises(GpuSettingsError) as raised, applied(Wanted(power_limit_w=300), EVERY_GPU, tmp_path):
        pass
    message = str(raised.value)
    assert message.startswith("zeusd did not answer") and "Connection refused" in message and "\n" not in message
    assert limits(fakes) == {0: 700.0, 1: 700.0} and list(tmp_path.glob("*.json")) == []


def test_ctrl_c_between_two_gpus_sets_restores_the_first(gpus, tmp_path) -> None:
    fakes = gpus(2)
    fakes.driver.fail("set_power_limit", 1, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt), applied(Wanted(power_limit_w=300), EVERY_GPU, tmp_path):
        pytest.fail("the item ran")
    assert limits(fakes) == {0: 700.0, 1: 700.0} and list(tmp_path.glob("*.json")) == []


def test_sigterm_while_settings_are_applied_restores_them_and_puts_the_previous_handler_back(gpus, tmp_path) -> None:
    fakes = gpus(1)
    told: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda number, frame: told.append(number))
    try:
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"), applied(Wanted(300), EVERY_GPU, tmp_path):
            assert limits(fakes) == {0: 300.0}
            os.kill(os.getpid(), signal.SIGTERM)  # its handler runs before the next line
            pytest.fail("SIGTERM did not stop the item")
        assert limits(fakes) == {0: 700.0} and list(tmp_path.glob("*.json")) == []
        assert told == []
        os.kill(os.getpid(), signal.SIGTERM)  # the handler from before is back
        assert told == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_the_environment_of_an_item_carries_the_settings_in_force_and_its_fingerprint_tells_them_apart() -> None:
    base = Environment(
        hostname="h", python="3", platform="p", cpu_model=None, gpus_unavailable_reason=None, gpu_driver=None,
        rapl="absent", versions={}, git_commit=None, git_dirty=None,
        gpus=[GpuFingerprint(index=i, name="g", power_limit_w=700.0) for i in (0, 1)],
    )  # fmt: skip
    limited = base.with_gpu_settings([1], 300.0, [900, 1400])
    assert [(g.power_limit_w, g.locked_clocks_mhz) for g in limited.gpus] == [(700.0, None), (300.0, [900, 1400])]
    assert len({base.fingerprint, limited.fingerprint, base.with_gpu_settings([1], 500.0, None).fingerprint}) == 3
    assert base.with_gpu_settings([1], 700.0, None).fingerprint == base.fingerprint
