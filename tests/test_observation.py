"""Machine identity: `observation()` decides reclaimable / name conflict from the lease
row and this machine's identity (supervisor/core/observation.py, supervisor/node/machine.py).

Real processes stand in for the recorded holder: a live `sleep`, and the pid of one
that has exited. No database: the rows are built by hand. What cannot be seen is
alive: a process that /proc hides (a directory without its entry, an unreadable
entry, or, as root, a second user behind a hidepid=invisible /proc, the way the
shipped unit's ProtectProc=invisible shows it) is never reclaimable.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from supervisor.core.identity import ProcessRef
from supervisor.core.observation import observation
from supervisor.lease import LeaseSnapshot
from supervisor.node.machine import process_alive, process_start_time, this_process
from tests.harness.users import User, run_as

pytestmark = pytest.mark.timeout(30)

NOW = datetime(2024, 1, 1, tzinfo=UTC)
ME = dataclasses.replace(this_process("node-a"), host="host-1",
                         machine="boot:b1 pidns:4026531836")


@pytest.fixture
def live() -> Iterator[ProcessRef]:
    """A live process of this machine (pid and start time)."""
    proc = subprocess.Popen(["sleep", "60"])
    try:
        started = process_start_time(proc.pid)
        assert started is not None
        yield ProcessRef(proc.pid, started)
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def dead() -> ProcessRef:
    """A process of this machine that has exited (and been reaped)."""
    proc = subprocess.Popen(["true"])
    started = process_start_time(proc.pid) or 12345
    proc.wait()
    assert process_start_time(proc.pid) is None
    return ProcessRef(proc.pid, started)


def row(holder: str | None = "node-a", *, pid: int, started: int | None, host: str = "host-1",
        machine: str | None = ME.machine, live: bool = True,
        instance: str = "their-instance") -> LeaseSnapshot:
    renewed = NOW - timedelta(seconds=0.5 if live else 30)
    return LeaseSnapshot(
        lease_name="l", exists=True, holder=holder, holder_host=host, holder_pid=pid,
        instance=instance, epoch=3, acquired_at=renewed, renewed_at=renewed,
        expires_at=renewed + timedelta(seconds=2), handover_requested_at=None, db_now=NOW,
        expired=not live, holder_machine=machine, holder_started=started, server="s",
        server_uptime=3600.0, row_server="s")


def test_dead_predecessor_of_this_machine_identity_is_reclaimable(dead: ProcessRef) -> None:
    ev = observation(row(pid=dead.pid, started=dead.started), ME, process_alive)
    assert ev.reclaimable == dead and ev.name_conflict is None and not ev.mine


def test_host_name_proves_nothing(dead: ProcessRef) -> None:
    """A cloned VM or container: same host name, another machine identity. Its pid means
    nothing here (not even that it is dead): a live row is a conflict, never a takeover."""
    ev = observation(row(pid=dead.pid, started=dead.started, machine="boot:b2 pidns:1"), ME,
                     process_alive)
    assert ev.reclaimable is None
    assert ev.name_conflict is not None and "another machine" in ev.name_conflict
    # a row recorded without an identity (an older version) is no better
    ev = observation(row(pid=dead.pid, started=dead.started, machine=None), ME, process_alive)
    assert ev.reclaimable is None and ev.name_conflict is not None


def test_same_identity_under_another_host_name_is_still_this_machine(dead: ProcessRef) -> None:
    ev = observation(row(pid=dead.pid, started=dead.started, host="renamed"), ME, process_alive)
    assert ev.reclaimable == dead


def test_live_process_of_this_machine_is_a_conflict(live: ProcessRef) -> None:
    ev = observation(row(pid=live.pid, started=live.started), ME, process_alive)
    assert ev.reclaimable is None
    assert ev.name_conflict is not None and "this machine" in ev.name_conflict


def test_reused_pid_is_another_process(live: ProcessRef) -> None:
    """The recorded process is (pid, start time): a live pid with another start time is
    a new process that reuses the number; the recorded one is gone."""
    ev = observation(row(pid=live.pid, started=live.started + 1), ME, process_alive)
    assert ev.reclaimable == ProcessRef(live.pid, live.started + 1)
    assert not process_alive(live.pid, live.started + 1)
    assert process_alive(live.pid, live.started)
    assert process_alive(live.pid, None)  # not recorded: by pid only


def test_expired_row_of_another_identity_is_no_conflict(dead: ProcessRef) -> None:
    """Not live any more: the normal takeover rule (W on the standby's clock) applies."""
    ev = observation(row(pid=dead.pid, started=dead.started, machine="boot:b2 pidns:1",
                         live=False), ME, process_alive)
    assert ev.reclaimable is None and ev.name_conflict is None and ev.expired


def test_other_machine_name_is_neither(live: ProcessRef, dead: ProcessRef) -> None:
    for ref in (live, dead):
        ev = observation(row("node-b", pid=ref.pid, started=ref.started), ME, process_alive)
        assert ev.reclaimable is None and ev.name_conflict is None and ev.holder == "node-b"


def test_our_own_row_is_mine(live: ProcessRef) -> None:
    ev = observation(row(pid=live.pid, started=live.started, instance=ME.instance), ME,
                     process_alive)
    assert ev.mine and ev.reclaimable is None and ev.name_conflict is None


def test_free_row() -> None:
    snap = dataclasses.replace(row(pid=1, started=1), holder=None, instance=None)
    ev = observation(snap, ME, process_alive)
    assert ev.free and ev.reclaimable is None and ev.name_conflict is None


# ------------------------------------------------------------------ unknown means alive


def test_a_process_proc_does_not_show_is_alive(live: ProcessRef, dead: ProcessRef,
                                               tmp_path: Path) -> None:
    """Signal 0 says the process exists; /proc has no entry for it (hidepid) or an
    unreadable one: it is alive, and its row a conflict, never reclaimable."""
    fake = tmp_path / "proc"
    fake.mkdir()
    assert process_alive(live.pid, live.started, proc_root=str(fake))  # no entry: hidden
    (fake / str(live.pid)).mkdir()
    (fake / str(live.pid) / "stat").mkdir()  # unreadable (EISDIR)
    assert process_alive(live.pid, live.started, proc_root=str(fake))
    assert process_alive(live.pid, None, proc_root=str(fake))
    # a process that signal 0 does not find is gone, whatever a /proc shows of it
    (fake / str(dead.pid)).mkdir()
    (fake / str(dead.pid) / "stat").write_text(f"{dead.pid} (x) S " + "0 " * 16
                                               + f"{dead.started} 0\n")
    assert not process_alive(dead.pid, dead.started, proc_root=str(fake))


def test_a_zombie_is_gone() -> None:
    proc = subprocess.Popen(["sleep", "0.1"])
    try:
        started = process_start_time(proc.pid)
        assert started is not None
        assert process_alive(proc.pid, started)

        def state() -> str:
            text = Path(f"/proc/{proc.pid}/stat").read_text()
            return text[text.rfind(")") + 2:].split()[0]

        end = time.monotonic() + 5
        while state() != "Z":  # exited, not reaped (Popen reaps only when asked)
            assert time.monotonic() < end, "sleep 0.1 did not exit"
            time.sleep(0.01)
        assert not process_alive(proc.pid, started)
        ev = observation(row(pid=proc.pid, started=started), ME, process_alive)
        assert ev.reclaimable == ProcessRef(proc.pid, started)
    finally:
        proc.wait()


def _seen_from_the_second_user(ref: ProcessRef) -> dict[str, Any]:
    """In the child of `run_as`: what this user sees of the root-owned process `ref`."""
    try:
        os.kill(ref.pid, 0)
        probe = "ok"
    except PermissionError:
        probe = "EPERM"
    except ProcessLookupError:
        probe = "ESRCH"
    ev = observation(row(pid=ref.pid, started=ref.started), ME, process_alive)
    return {"listed": str(ref.pid) in os.listdir("/proc"), "probe": probe,
            "alive": process_alive(ref.pid, ref.started),
            "reclaimable": ev.reclaimable is not None, "conflict": ev.name_conflict}


def test_another_users_hidden_holder_is_a_conflict(live: ProcessRef,
                                                   other_user: User) -> None:
    """The holder runs as root (started by hand), this supervisor as the service user
    behind ProtectProc=invisible: /proc hides the holder and signal 0 says EPERM. It
    is alive: a machine-name conflict, never a reclaim."""
    seen = run_as(other_user, lambda: _seen_from_the_second_user(live))
    assert not seen["listed"] and seen["probe"] == "EPERM", seen  # else no test
    assert seen["alive"] and not seen["reclaimable"], seen
    assert seen["conflict"] is not None and "this machine" in seen["conflict"], seen


def test_another_users_process_is_alive_though_it_cannot_be_signalled(
        live: ProcessRef, other_user: User) -> None:
    """EPERM from signal 0 is a live process of someone else (here /proc shows it)."""
    seen = run_as(other_user, lambda: _seen_from_the_second_user(live), hide_proc=False)
    assert seen["listed"] and seen["probe"] == "EPERM", seen
    assert seen["alive"] and not seen["reclaimable"] and seen["conflict"], seen
