"""Process helpers for tests: reaping, polling, liveness.

Use the `reaper` fixture (expose it from conftest.py with
``from tests.harness.proc import reaper``) to register every process or process group a
test starts; at teardown, even when the test failed, each one is SIGKILLed and
waited for.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psutil
import pytest


def pid_alive(pid: int) -> bool:
    """True if `pid` exists and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def group_alive(pgid: int) -> bool:
    """True if any non-zombie process is in process group `pgid`."""
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return False


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.01,
               message: str | None = None) -> None:
    """Poll `predicate` until truthy; AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() >= deadline:
            what = message or getattr(predicate, "__name__", repr(predicate))
            raise AssertionError(f"timed out after {timeout:.2f}s waiting for: {what}")
        time.sleep(interval)


def _pidfd(pid: int) -> int | None:
    """A pidfd for `pid` (names that very process forever), or None if none has it."""
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return None


def _exited(pidfd: int) -> bool:
    """True once the process behind `pidfd` has ended (a zombie counts as ended)."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


def kill_group_leftovers(pgid: int) -> None:
    """SIGKILL what is left of process group `pgid` once its leader is dead. Skipped when a
    live process now has `pgid` as its pid: the number was reused, so no member of the
    old group is left (Linux never reuses a number while the group has a member)."""
    if not pid_alive(pgid):
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGKILL)


def kill_session(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL the process group `proc` leads (started with start_new_session). While
    `proc` is not reaped its number is ours; after, only the leftovers are killed."""
    if proc.returncode is None:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
    else:
        kill_group_leftovers(proc.pid)


class Reaper:
    """Records processes and process groups; `cleanup()` SIGKILLs and waits for all.

    Safe against pid reuse (pid_max may be 32768, and a suite starts thousands of
    processes): each process is held by a pidfd, which names that process and no
    later one with its number. A group is killed while its recorded leader has not
    ended, or after only if no live process has the group's number as its pid
    (while any member lives, Linux never hands the number out again).
    """

    def __init__(self) -> None:
        self.groups: dict[int, int | None] = {}  # pgid -> pidfd of its leader, if any
        self.pids: dict[int, int] = {}  # pid -> its pidfd
        self.popens: list[subprocess.Popen[Any]] = []

    def track_group(self, pgid: int) -> int:
        """Kill this whole process group at teardown (never our own group)."""
        if pgid != os.getpgrp() and pgid not in self.groups:
            self.groups[pgid] = _pidfd(pgid)
        return pgid

    def track_pid(self, pid: int) -> int:
        """Kill this process at teardown (the same process: never a later one with its
        number)."""
        if pid not in self.pids and (fd := _pidfd(pid)) is not None:
            self.pids[pid] = fd
        return pid

    def _group_ours(self, pgid: int) -> bool:
        """False when the group's number may now belong to a process we did not start."""
        leader = self.groups.get(pgid)
        return (leader is not None and not _exited(leader)) or not pid_alive(pgid)

    def popen(self, args: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """`subprocess.Popen` in a new session; the group is killed and reaped at teardown."""
        kwargs.setdefault("start_new_session", True)
        proc: subprocess.Popen[Any] = subprocess.Popen(list(args), **kwargs)
        self.popens.append(proc)
        self.track_pid(proc.pid)
        if kwargs["start_new_session"]:
            self.track_group(proc.pid)
        return proc

    def spawn_detached(self, args: Sequence[str], cwd: str,
                       env: dict[str, str] | None = None) -> int:
        """Start `args` in a new session as an orphan (not our descendant), like a
        process left over from an earlier run. Returns its pid; tracked for teardown."""
        launcher = ("import subprocess, sys\n"
                    "p = subprocess.Popen(sys.argv[1:], start_new_session=True,"
                    " stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,"
                    " stderr=subprocess.DEVNULL)\n"
                    "print(p.pid)\n")
        out = subprocess.run([sys.executable, "-c", launcher, *args], cwd=cwd, env=env,
                             stdout=subprocess.PIPE, check=True, timeout=10)
        pid = int(out.stdout)
        self.track_pid(pid)
        self.track_group(pid)
        return pid

    def cleanup(self, timeout: float = 5.0) -> None:
        """SIGKILL everything recorded that still exists, then wait until all of it is
        gone. A number reused by another process since is left alone."""
        try:
            groups = [g for g in self.groups if self._group_ours(g)]
            for pgid in groups:
                with contextlib.suppress(OSError):
                    os.killpg(pgid, signal.SIGKILL)
            for fd in self.pids.values():
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
            for proc in self.popens:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout)
                for stream in (proc.stdin, proc.stdout, proc.stderr):
                    if stream is not None:
                        with contextlib.suppress(OSError):
                            stream.close()
            wait_until(lambda: all(_exited(fd) for fd in self.pids.values()), timeout,
                       message=f"tracked pids {sorted(self.pids)} to die")
            wait_until(lambda: not any(group_alive(g) and self._group_ours(g)
                                       for g in groups),
                       timeout, message=f"tracked groups {sorted(groups)} to die")
        finally:
            held: list[int | None] = [*self.pids.values(), *self.groups.values()]
            for pidfd in held:
                if pidfd is not None:
                    os.close(pidfd)
            self.pids.clear()
            self.groups.clear()


@contextlib.contextmanager
def reaping() -> Iterator[Reaper]:
    """A `Reaper` whose processes are all SIGKILLed and waited for on exit, even on error."""
    r = Reaper()
    try:
        yield r
    finally:
        r.cleanup()


@pytest.fixture
def reaper() -> Iterator[Reaper]:
    """A `Reaper` whose processes are all SIGKILLed and waited for after the test."""
    with reaping() as r:
        yield r
