"""Which processes are "this node" on this machine, and the stale-node sweep.

Every node run carries a *node key* (`node_key`: lease name + machineName + the
node's working directory, hashed): in the name of its cgroup
(``corda-ha-node-<key>-<run>``, see `supervisor.node.cgroup`) and in its environment
(``CORDA_HA_NODE_KEY=<key>``, inherited by every descendant). After a restart,
`sweep_stale_nodes` finds what earlier runs left behind by exactly these two
marks, never by matching command lines (a wrapper script's JVM child does not
look like the configured command).

What the sweep cannot see is alive. A sweep is *clean* only when nothing marked
survived its SIGKILLs and it could read the environment of every process that
may be ours (`Swept.clean`); otherwise the node is not started. Ours to read:
every process when this process is root; else every process whose real,
effective or saved uid is ours. Another user's processes are not ours to read
when we are not root, so a node descendant that becomes another user (a setuid
program that changes its real uid too, e.g. ``sudo``'s child) or makes itself
non-dumpable under another owner escapes the marker: a cgroup holds it. Pid 1
is never read (nothing a node starts becomes pid 1 of its namespace).

A stop is over when the last process of the run is gone: after the node's
leader exited, `sweep_until_clean` (no cgroup) and `release_cgroup` (a cgroup)
kill and look again, round after round, until nothing of the run is left;
until then the exit is not reported, so the lease is kept.

The sweep reads ``/proc``, which can hang on a stuck mount: `run_sweep` runs it
in a dedicated daemon thread and stops waiting after a limit (`SweepError`);
a node must not be started then. A sweep thread that was given up on is told
so (an `threading.Event`) and kills nothing afterwards; while it is still hung,
further sweeps of the same key fail at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from supervisor.config import NodeConfig
from supervisor.node import cgroup as cgroups
from supervisor.node import threads

log = structlog.get_logger("supervisor.node.sweep")

#: The environment variable every node process inherits: its node key.
NODE_KEY_ENV = "CORDA_HA_NODE_KEY"
#: Default bound on a sweep; the node is not started when the sweep does not finish.
SWEEP_TIMEOUT = 10.0
#: Default: how long the guard may take to acknowledge a command before it is stalled.
ACK_TIMEOUT = 2.0
#: Inside a sweep: how long killed processes get to die.
KILL_WAIT = 5.0
#: After a node run: the pause between two rounds of the sweep that ends the run.
ROUND_PAUSE = 0.2
#: While processes of an ended run remain: an error at most this often (seconds).
SURVIVOR_LOG_EVERY = 5.0
#: errno values of a /proc read that mean "no such process (any more)".
_GONE = (errno.ENOENT, errno.ESRCH)


def node_key(lease_name: str, machine_name: str, working_directory: str) -> str:
    """A short hex id of one node on one machine (stable across restarts)."""
    ident = "\0".join((lease_name, machine_name, os.path.realpath(working_directory)))
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunMarks:
    """What marks, and holds, the runs of one node on this machine.

    `key`: see `node_key`. `cgroup_parent`: the directory under which each run gets
    its own cgroup, None for process groups only. `ack_timeout`: a guard that has
    not acknowledged a command for this long counts as stalled. `sweep_timeout`:
    the bound on the stale-node sweep."""

    key: str
    cgroup_parent: str | None = None
    ack_timeout: float = ACK_TIMEOUT
    sweep_timeout: float = SWEEP_TIMEOUT

    @classmethod
    def for_node(cls, node: NodeConfig, *, lease_name: str, machine_name: str,
                 ack_timeout: float = ACK_TIMEOUT,
                 sweep_timeout: float = SWEEP_TIMEOUT) -> RunMarks:
        """Resolve `node.cgroup` (auto / off / a directory), probe it, log the outcome once."""
        key = node_key(lease_name, machine_name, node.working_directory)
        parent, why = cgroup_parent(node.cgroup, key)
        if parent is not None:
            log.info("node_cgroup", parent=parent, key=key)
        elif node.cgroup == "off":
            log.info("node_cgroup_off", key=key,
                     message="node.cgroup = off: node runs are held by their process group only")
        else:
            log.warning("node_cgroup_unavailable", reason=why, setting=node.cgroup, key=key,
                        message="falling back to process groups: a node that calls setsid or "
                                "a wrapper's children can outlive a dead guard")
        return cls(key=key, cgroup_parent=parent, ack_timeout=ack_timeout,
                   sweep_timeout=sweep_timeout)


def cgroup_parent(setting: str, key: str) -> tuple[str | None, str]:
    """(usable parent directory or None, why not) for a `node.cgroup` setting."""
    if setting == "off":
        return None, "node.cgroup = off"
    parent = cgroups.own_cgroup_dir() if setting == "auto" else setting
    if parent is None:
        return None, "this process is in no cgroup v2 hierarchy"
    why = cgroups.usable_parent(parent, key)
    return (None, why) if why is not None else (parent, "")


@dataclass(frozen=True)
class Swept:
    """What a sweep did: pids killed, cgroups removed, pids still alive after the
    wait (`left`), pids that may be ours whose environment it could not read
    (`unreadable`), cgroups that would not empty (`cgroups_left`)."""

    pids: tuple[int, ...] = ()
    cgroups: tuple[str, ...] = ()
    left: tuple[int, ...] = ()
    seconds: float = 0.0
    unreadable: tuple[int, ...] = ()
    cgroups_left: tuple[str, ...] = ()

    @property
    def clean(self) -> bool:
        """Nothing of the node is left, as far as can be seen, and nothing was unseen."""
        return not self.left and not self.unreadable and not self.cgroups_left

    def problem(self) -> str:
        """Why the sweep is not clean ("" when it is)."""
        parts = []
        if self.left:
            parts.append(f"processes of the node survived SIGKILL: pids {list(self.left)}")
        if self.cgroups_left:
            parts.append(f"cgroups of earlier runs did not empty: {list(self.cgroups_left)}")
        if self.unreadable:
            parts.append(f"cannot read the environment of pids {list(self.unreadable)} "
                         "(processes that may belong to the node)")
        return "; ".join(parts)


class SweepError(Exception):
    """The stale-node sweep did not finish in time, or failed."""


def _sweep_cgroups(key: str, cgroup_parent: str, gone: threading.Event,
                   timeout: float) -> tuple[list[int], list[str], list[int], list[str]]:
    """Step 1 of `sweep_stale_nodes`: each leftover cgroup of `key` killed, emptied and
    removed. (the pids that were inside, the cgroups removed, the pids left in the
    cgroups that did not empty, those cgroups)."""
    pids: list[int] = []
    removed: list[str] = []
    left: list[int] = []
    full: list[str] = []
    for path in cgroups.leftovers(cgroup_parent, key):
        if gone.is_set():
            break
        inside = cgroups.procs(path)
        if cgroups.kill_and_remove(path, timeout):
            removed.append(path)
        else:
            full.append(path)
            left += cgroups.procs(path)
            log.error("stale_cgroup_not_empty", cgroup=path, pids=cgroups.procs(path))
        pids += inside
    return pids, removed, left, full


def sweep_stale_nodes(key: str, cgroup_parent: str | None,
                      abandoned: threading.Event | None = None, *, timeout: float = KILL_WAIT,
                      proc_root: str = "/proc") -> Swept:
    """Kill what earlier runs of node `key` left behind. Blocking: see `run_sweep`.

    1. Each cgroup ``corda-ha-node-<key>-*`` under `cgroup_parent`: cgroup.kill,
       wait until empty (at most `timeout`), rmdir.
    2. Each process whose environment has ``CORDA_HA_NODE_KEY=<key>`` (never the
       calling process): SIGKILL, scan again, until a scan finds none or `timeout`.
       The last scan's processes that may be ours but could not be read are
       reported as `unreadable` (see the module docstring); a /proc that cannot be
       listed raises OSError.
    Once `abandoned` is set it returns without killing anything more.
    """
    start = time.monotonic()
    gone = abandoned or threading.Event()
    pids: list[int] = []
    removed: list[str] = []
    left: list[int] = []
    full: list[str] = []
    if cgroup_parent is not None:
        pids, removed, left, full = _sweep_cgroups(key, cgroup_parent, gone, timeout)
    marker = f"{NODE_KEY_ENV}={key}".encode()
    end = time.monotonic() + timeout
    unreadable: list[int] = []
    refused: set[int] = set()
    while not gone.is_set():
        found, unreadable = scan_marked(marker, proc_root)
        if not found:
            break
        if time.monotonic() >= end:
            left += found
            break
        for pid in found:
            if gone.is_set():
                break
            with contextlib.suppress(ProcessLookupError):
                try:
                    os.kill(pid, signal.SIGKILL)
                except PermissionError as exc:
                    if pid not in refused:
                        refused.add(pid)
                        log.error("stale_node_kill_failed", pid=pid, error=str(exc))
                    continue
            if pid not in pids:
                pids.append(pid)
        time.sleep(0.01)
    left = [p for p in set(left) if _alive(p, proc_root)]
    return Swept(pids=tuple(pids), cgroups=tuple(removed), left=tuple(sorted(left)),
                 seconds=time.monotonic() - start, unreadable=tuple(sorted(unreadable)),
                 cgroups_left=tuple(full))


def _alive(pid: int, proc_root: str) -> bool:
    """Exists and is not a zombie; an entry that cannot be read counts as alive."""
    try:
        with open(os.path.join(proc_root, str(pid), "stat"), "rb") as f:
            stat = f.read()
    except OSError as exc:
        return exc.errno not in _GONE
    return stat[stat.rfind(b")") + 2:][:1] not in (b"Z", b"X")


def scan_marked(marker: bytes, proc_root: str = "/proc",
                euid: int | None = None) -> tuple[list[int], list[int]]:
    """One pass over `proc_root`: (live processes whose initial environment holds
    `marker`, processes that may be ours whose environment could not be read).

    Never this process, never pid 1. A read that fails with ENOENT or ESRCH is a
    process that is gone, a zombie or a kernel thread. `euid` (default ours)
    decides what may be ours, see `_may_be_ours`. OSError when `proc_root` cannot
    be listed."""
    me = os.getpid()
    euid = os.geteuid() if euid is None else euid
    found: list[int] = []
    unreadable: list[int] = []
    for name in os.listdir(proc_root):
        if not name.isdigit() or int(name) in (me, 1):
            continue
        try:
            with open(os.path.join(proc_root, name, "environ"), "rb") as f:
                data = f.read()
        except OSError as exc:
            if exc.errno not in _GONE and _may_be_ours(int(name), proc_root, euid):
                unreadable.append(int(name))
            continue
        if marker in data.split(b"\0"):
            found.append(int(name))
    return found, unreadable


def _may_be_ours(pid: int, proc_root: str, euid: int) -> bool:
    """Whether the sweep must be able to read process `pid`: always for root; else
    when its real, effective or saved uid is `euid` (its status file; the owner of
    its /proc directory when that cannot be read). What cannot be told is ours."""
    if euid == 0:
        return True
    base = os.path.join(proc_root, str(pid))
    try:
        with open(os.path.join(base, "status"), "rb") as f:
            status = f.read()
    except OSError as exc:
        if exc.errno in _GONE:
            return False
        try:
            return os.stat(base).st_uid == euid
        except OSError as err:
            return err.errno not in _GONE
    for line in status.splitlines():
        if line.startswith(b"Uid:"):
            try:
                return euid in [int(x) for x in line.split()[1:4]]
            except ValueError:
                return True
    return True


SweepFunction = Callable[[threading.Event], Swept]

async def run_sweep(key: str, sweep: SweepFunction, timeout: float) -> Swept:
    """Run `sweep` in a thread of its own (`supervisor.node.threads.in_thread`); its
    result, or SweepError after `timeout` (or at once while an earlier sweep of `key`
    is still hung). Never blocks the loop. A sweep given up on is told so (its
    `abandoned` event) and kills nothing afterwards."""
    abandoned = threading.Event()
    try:
        return await threads.in_thread(lambda: sweep(abandoned), timeout, f"sweep-{key}",
                                       abandoned=abandoned)
    except threads.StillHung:
        raise SweepError("an earlier stale-node sweep of this node is still hung") from None
    except TimeoutError:
        raise SweepError(f"stale-node sweep did not finish within {timeout:g} s") from None
    except SweepError:
        raise
    except Exception as exc:
        raise SweepError(f"stale-node sweep failed: {type(exc).__name__}: {exc}") from exc


def default_sweep(marks: RunMarks) -> SweepFunction:
    """The production sweep for `marks` (cgroups under its parent, the env marker)."""
    return lambda abandoned: sweep_stale_nodes(marks.key, marks.cgroup_parent, abandoned)


def marker_sweep(key: str) -> SweepFunction:
    """The environment-marker half of the sweep alone (a run without a cgroup); one
    round waits KILL_WAIT for what it killed."""
    return lambda abandoned: sweep_stale_nodes(key, None, abandoned, timeout=KILL_WAIT)


async def sweep_at_startup(marks: RunMarks, sweep: SweepFunction | None = None) -> Swept | None:
    """The start-up sweep (before contending): bounded like the per-start one; logs
    what it killed. None when it did not finish (logged; the node start will retry)."""
    try:
        swept = await run_sweep(marks.key, sweep or default_sweep(marks), marks.sweep_timeout)
    except SweepError as exc:
        log.error("stale_sweep_failed", error=str(exc), at="startup")
        return None
    log_swept(swept, "startup", clean=True)
    return swept


def log_swept(swept: Swept, at: str, *, clean: bool = False) -> None:
    """Log a sweep's result when it killed something or is not clean (or, with
    `clean`, always)."""
    fields = {"pids": list(swept.pids), "cgroups": list(swept.cgroups),
              "seconds": round(swept.seconds, 3), "at": at}
    if swept.left or swept.cgroups_left:
        log.error("stale_nodes_survived", left=list(swept.left),
                  cgroups_left=list(swept.cgroups_left), unreadable=list(swept.unreadable),
                  **fields)
    elif swept.unreadable:
        log.error("stale_sweep_unreadable", unreadable=list(swept.unreadable),
                  message=swept.problem(), **fields)
    elif swept.pids or swept.cgroups:
        log.warning("stale_nodes_killed", **fields)
    elif clean:
        log.info("stale_sweep_clean", **fields)


class _Nag:
    """An error that is logged at most every SURVIVOR_LOG_EVERY seconds."""

    def __init__(self) -> None:
        self._last: float | None = None

    def error(self, event: str, **fields: object) -> None:
        now = time.monotonic()
        if self._last is None or now - self._last >= SURVIVOR_LOG_EVERY:
            self._last = now
            log.error(event, **fields)


async def sweep_until_clean(key: str, sweep: SweepFunction, timeout: float) -> tuple[int, ...]:
    """End a run without a cgroup: rounds of `sweep` (each in a thread, bounded by
    `timeout`; each SIGKILLs what it finds) until one is clean (`Swept.clean`: no
    marked process alive, none unreadable). Never gives up: a round that survivors
    or unreadable processes make unclean, or that fails, is followed by another
    after ROUND_PAUSE, with an error at most every SURVIVOR_LOG_EVERY s. The pids
    it killed (logged)."""
    killed: list[int] = []
    survivor_log = _Nag()
    rounds = 0
    while True:
        rounds += 1
        try:
            swept = await run_sweep(key, sweep, timeout)
        except SweepError as exc:
            problem = str(exc)
        else:
            killed += [pid for pid in swept.pids if pid not in killed]
            if swept.clean:
                break
            problem = swept.problem()
        survivor_log.error("node_run_not_over", key=key, problem=problem, killed=killed,
                           rounds=rounds,
                           message="processes of the ended node run may be alive: its exit "
                                   "is not reported (the lease is kept) until a sweep finds "
                                   "none")
        await asyncio.sleep(ROUND_PAUSE)
    if killed:
        log.warning("node_leftovers_killed", key=key, pids=killed, rounds=rounds,
                    message="processes of the run outlived the node's leader; killed before "
                            "its exit was reported")
    return tuple(killed)


def _populated(path: str) -> bool:
    """`cgroups.populated`, where a cgroup that cannot be read counts as populated."""
    try:
        return cgroups.populated(path)
    except OSError:
        return True


async def release_cgroup(path: str, round_timeout: float) -> None:
    """End a run with a cgroup: kill everything in it, wait (polling the loop) until it
    is empty, remove it. Never gives up: processes that outlive a round of
    `round_timeout` are killed again and waited for again, with an error at most
    every SURVIVOR_LOG_EVERY s; the run is over only when its cgroup is empty."""
    survivor_log = _Nag()
    while True:
        problem = ""
        try:
            cgroups.kill(path)
        except OSError as exc:
            problem = f"cgroup.kill failed: {exc}; "
        end = time.monotonic() + round_timeout
        while _populated(path) and time.monotonic() < end:
            await asyncio.sleep(0.005)
        if not _populated(path):
            break
        survivor_log.error("node_cgroup_not_empty", cgroup=path, pids=cgroups.procs(path),
                           problem=problem + f"not empty {round_timeout:g} s after SIGKILL",
                           message="processes of the ended node run are alive: its exit is "
                                   "not reported (the lease is kept) until its cgroup is "
                                   "empty")
    try:
        cgroups.remove(path)
    except OSError as exc:
        log.error("node_cgroup_remove_failed", cgroup=path, error=str(exc))
