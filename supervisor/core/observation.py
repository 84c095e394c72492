"""Translate a lease row into the core's terms: mine, reclaimable, or a name conflict.

The only judgement made here is about processes on *this* machine identity
(supervisor.node.machine): a row held under our machineName by another process is

- *reclaimable* when it was recorded by this machine identity (same boot, same
  PID namespace) and that process (pid and start time) provably no longer exists
  (`alive`, i.e. `supervisor.node.machine.process_alive`: signal 0 says ESRCH,
  or /proc shows a zombie or a reused pid): our own dead predecessor, whose node died with it;
- a *name conflict* when it is live and recorded by another machine identity (a
  cloned host, a container, another PID namespace) or by a process of this
  machine that is alive or cannot be seen (another user's process behind
  hidepid / ProtectProc=invisible is alive): two supervisors share one
  machineName. Never a takeover.

Pure: the looking at a process is the caller's `alive` function (one signal 0 and one
`/proc/<pid>/stat` read at most, in production).
"""

from __future__ import annotations

from collections.abc import Callable

from supervisor.core.identity import Identity, ProcessRef
from supervisor.core.messages import LeaseObserved, SeenVersion
from supervisor.core.row import LeaseSnapshot

#: `alive(pid, started)`: False only when that process provably no longer exists
#: (`supervisor.node.machine.process_alive`).
Alive = Callable[[int, int | None], bool]


def observation(snapshot: LeaseSnapshot, identity: Identity, alive: Alive) -> LeaseObserved:
    """The core's view of `snapshot`, as seen by `identity`; `alive` judges a process of
    this machine (pure: the caller's function does the looking)."""
    mine = snapshot.instance is not None and snapshot.instance == identity.instance
    reclaimable: ProcessRef | None = None
    conflict: str | None = None
    if not mine and not snapshot.free and snapshot.holder == identity.machine_name:
        same_machine = identity.same_machine(snapshot.holder_machine)
        pid = snapshot.holder_pid
        if same_machine and pid is not None and not alive(pid, snapshot.holder_started):
            reclaimable = ProcessRef(pid, snapshot.holder_started)
        elif snapshot.live:
            where = (f"this machine (pid {pid})" if same_machine
                     else f"another machine: host {snapshot.holder_host!r}, pid {pid}, "
                          f"identity {snapshot.holder_machine or 'unknown'!r}")
            conflict = (f"machineName {identity.machine_name!r} is held by another live "
                        f"supervisor on {where}; every host needs its own machineName")
    version = snapshot.version
    return LeaseObserved(
        version=SeenVersion(version.epoch, version.instance, version.renewed_at),
        free=snapshot.free, expired=snapshot.expired, holder=snapshot.holder, mine=mine,
        reclaimable=reclaimable, name_conflict=conflict, exists=snapshot.exists,
        server=snapshot.server, server_uptime=snapshot.server_uptime,
        row_server=snapshot.row_server,
        handover_requested=snapshot.handover_requested_at is not None,
        paused=snapshot.paused,
        reserved_for_other=(snapshot.reserved_for
                            if snapshot.reserved_for not in (None, identity.machine_name)
                            else None),
    )
