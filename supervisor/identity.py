"""Who contends for the lease: machine and process identity (design.md, "The lease").

A host name is not an identity: cloned VMs and containers share host names (and
`machineName = ${HOSTNAME}` is the default). The *machine identity* is the
kernel's `boot_id` plus this process's PID namespace (`/proc/self/ns/pid`), plus
`/etc/machine-id` where it exists. Two supervisors share it only when they see
the same processes, so only then may one judge whether the other's process is
alive. A *process* is (pid, start time): the start time (clock ticks since
boot, `/proc/<pid>/stat` field 22) tells a reused pid from the recorded one.

Everything here reads small files under /proc and /etc once (at start) or one
`/proc/<pid>/stat` (a liveness check); nothing touches a network file system.
"""

from __future__ import annotations

import hashlib
import os
import socket
import uuid
from dataclasses import dataclass


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def machine_identity() -> str:
    """`boot:<boot_id> pidns:<inode>[ mid:<hash>]` for this process.

    Falls back to a random value when /proc is unreadable, which makes this
    process unlike any other (the safe answer: no same-machine shortcut).
    """
    boot_id = _read("/proc/sys/kernel/random/boot_id")
    try:
        pidns = os.readlink("/proc/self/ns/pid").removeprefix("pid:").strip("[]")
    except OSError:
        pidns = None
    if boot_id is None or pidns is None:
        return f"unknown:{uuid.uuid4().hex}"
    parts = [f"boot:{boot_id}", f"pidns:{pidns}"]
    machine_id = _read("/etc/machine-id")
    if machine_id is not None:
        parts.append("mid:" + hashlib.sha256(machine_id.encode()).hexdigest()[:12])
    return " ".join(parts)


def process_start_time(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot; None when there is no such
    process (or it is a zombie, i.e. already dead)."""
    text = _read(f"/proc/{pid}/stat")
    if text is None:
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ')'
    fields = text[text.rfind(")") + 2:].split()
    try:
        state, start = fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None
    return None if state in ("Z", "X") else start


def process_alive(pid: int, started: int | None) -> bool:
    """True when process `pid` with start time `started` still exists.

    A pid that now belongs to another process (different start time) counts as
    dead. `started` None (not recorded) compares by pid only. When /proc cannot
    be read at all the answer is True (cannot tell: assume alive, the safe side).
    """
    now = process_start_time(pid)
    if now is None:
        return _read("/proc/self/stat") is None
    return started is None or now == started


@dataclass(frozen=True)
class ProcessRef:
    """One process on one machine: a pid and its start time (None: not recorded)."""

    pid: int
    started: int | None


@dataclass(frozen=True)
class Identity:
    """One contender: the Corda `machineName`, this host, this process."""

    machine_name: str
    host: str  # gethostname(): shown to operators, never trusted
    pid: int
    instance: str  # uuid4 hex, new for every process
    machine: str = ""  # machine_identity()
    started: int | None = None  # this process's start time (clock ticks since boot)

    @classmethod
    def for_this_process(cls, machine_name: str) -> Identity:
        pid = os.getpid()
        return cls(machine_name, socket.gethostname(), pid, uuid.uuid4().hex,
                   machine_identity(), process_start_time(pid))

    def same_machine(self, machine: str | None) -> bool:
        """True when `machine` (from a lease row) names this machine identity."""
        return bool(machine) and machine == self.machine

    def is_me(self, pid: int | None, started: int | None) -> bool:
        return pid == self.pid and started == self.started
