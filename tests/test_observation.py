"""Machine identity: `observation()` decides reclaimable / name conflict from the lease
row and this machine's identity (supervisor/observation.py, supervisor/identity.py).

Real processes stand in for the recorded holder: a live `sleep`, and the pid of one
that has exited. No database: the rows are built by hand.
"""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from supervisor.identity import Identity, ProcessRef, process_alive, process_start_time
from supervisor.lease import LeaseSnapshot
from supervisor.observation import observation

pytestmark = pytest.mark.timeout(30)

NOW = datetime(2024, 1, 1, tzinfo=UTC)
ME = dataclasses.replace(Identity.for_this_process("node-a"), host="host-1",
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
    ev = observation(row(pid=dead.pid, started=dead.started), ME)
    assert ev.reclaimable == dead and ev.name_conflict is None and not ev.mine


def test_host_name_proves_nothing(dead: ProcessRef) -> None:
    """A cloned VM or container: same host name, another machine identity. Its pid means
    nothing here (not even that it is dead): a live row is a conflict, never a takeover."""
    ev = observation(row(pid=dead.pid, started=dead.started, machine="boot:b2 pidns:1"), ME)
    assert ev.reclaimable is None
    assert ev.name_conflict is not None and "another machine" in ev.name_conflict
    # a row recorded without an identity (an older version) is no better
    ev = observation(row(pid=dead.pid, started=dead.started, machine=None), ME)
    assert ev.reclaimable is None and ev.name_conflict is not None


def test_same_identity_under_another_host_name_is_still_this_machine(dead: ProcessRef) -> None:
    ev = observation(row(pid=dead.pid, started=dead.started, host="renamed"), ME)
    assert ev.reclaimable == dead


def test_live_process_of_this_machine_is_a_conflict(live: ProcessRef) -> None:
    ev = observation(row(pid=live.pid, started=live.started), ME)
    assert ev.reclaimable is None
    assert ev.name_conflict is not None and "this machine" in ev.name_conflict


def test_reused_pid_is_another_process(live: ProcessRef) -> None:
    """The recorded process is (pid, start time): a live pid with another start time is
    a new process that reuses the number; the recorded one is gone."""
    ev = observation(row(pid=live.pid, started=live.started + 1), ME)
    assert ev.reclaimable == ProcessRef(live.pid, live.started + 1)
    assert not process_alive(live.pid, live.started + 1)
    assert process_alive(live.pid, live.started)
    assert process_alive(live.pid, None)  # not recorded: by pid only


def test_expired_row_of_another_identity_is_no_conflict(dead: ProcessRef) -> None:
    """Not live any more: the normal takeover rule (W on the standby's clock) applies."""
    ev = observation(row(pid=dead.pid, started=dead.started, machine="boot:b2 pidns:1",
                         live=False), ME)
    assert ev.reclaimable is None and ev.name_conflict is None and ev.expired


def test_other_machine_name_is_neither(live: ProcessRef, dead: ProcessRef) -> None:
    for ref in (live, dead):
        ev = observation(row("node-b", pid=ref.pid, started=ref.started), ME)
        assert ev.reclaimable is None and ev.name_conflict is None and ev.holder == "node-b"


def test_our_own_row_is_mine(live: ProcessRef) -> None:
    ev = observation(row(pid=live.pid, started=live.started, instance=ME.instance), ME)
    assert ev.mine and ev.reclaimable is None and ev.name_conflict is None


def test_free_row() -> None:
    snap = dataclasses.replace(row(pid=1, started=1), holder=None, instance=None)
    ev = observation(snap, ME)
    assert ev.free and ev.reclaimable is None and ev.name_conflict is None
