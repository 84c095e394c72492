"""This machine and its processes: machine identity, process liveness, this process
as a contender (docs/design.md, "The lease"). Reads /proc and /etc; the values it
makes (`Identity`, `ProcessRef`) live in `supervisor.core.identity`.

A host name is not an identity: cloned VMs and containers share host names (and
`machineName = ${HOSTNAME}` is the default). The *machine identity* is the
kernel's `boot_id` plus this process's PID namespace (`/proc/self/ns/pid`), plus
`/etc/machine-id` where it exists. Two supervisors share it only when they see
the same processes, so only then may one judge whether the other's process is
alive. A *process* is (pid, start time): the start time (clock ticks since
boot, `/proc/<pid>/stat` field 22) tells a reused pid from the recorded one.

What cannot be seen is alive: /proc may hide another user's processes
(`hidepid=invisible`, systemd's `ProtectProc=invisible`) and a process of
another user cannot be signalled, so `process_alive` calls a process gone only
on proof (the kernel says ESRCH, or /proc shows a zombie or another start time).

Everything here reads small files under /proc and /etc once (at start) or one
`/proc/<pid>/stat` and sends signal 0 (a liveness check); nothing touches a
network file system.
"""

from __future__ import annotations

import errno
import hashlib
import os
import socket
import uuid

from supervisor.core.identity import Identity


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


def process_alive(pid: int, started: int | None, *, proc_root: str = "/proc") -> bool:
    """False only when process `pid` with start time `started` provably no longer exists.

    Existence by signal 0: ESRCH is the only "gone"; EPERM is a live process of
    another user. Then its start time from `<proc_root>/<pid>/stat`: readable and
    different -> the number was reused (the recorded process is gone); a zombie ->
    gone; unreadable (hidden by hidepid / ProtectProc=invisible, EACCES) -> alive,
    unless signal 0 says ESRCH by now (it exited meanwhile). `started` None (not
    recorded) compares by pid only. A pid below 1 names no process: alive (never
    judged dead).
    """
    if pid < 1:
        return True
    if not _signal_probe(pid):
        return False
    try:
        with open(os.path.join(proc_root, str(pid), "stat"), "rb") as handle:
            text = handle.read()
    except OSError:
        return _signal_probe(pid)  # what we cannot see is alive
    fields = text[text.rfind(b")") + 2:].split()
    try:
        state, start = fields[0], int(fields[19])
    except (IndexError, ValueError):
        return True  # cannot tell
    if started is not None and start != started:
        return False  # the number now belongs to another process
    return state not in (b"Z", b"X")


def _signal_probe(pid: int) -> bool:
    """True unless signal 0 to `pid` fails with ESRCH (EPERM: someone else's process)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError as exc:
        return exc.errno != errno.ESRCH
    return True


def this_process(machine_name: str) -> Identity:
    """This supervisor process as a contender for the lease under `machine_name`: this
    host, this pid and its start time, a new instance id, this machine's identity."""
    pid = os.getpid()
    return Identity(machine_name, socket.gethostname(), pid, uuid.uuid4().hex,
                    machine_identity(), process_start_time(pid))
