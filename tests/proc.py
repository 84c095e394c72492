"""Process helpers for tests: reaping, polling, liveness.

Use the `reaper` fixture (expose it from conftest.py with
``from tests.proc import reaper``) to register every process or process group a
test starts; at teardown, even when the test failed, each one is SIGKILLed and
waited for.
"""

from __future__ import annotations

import contextlib
import os
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


class Reaper:
    """Records processes and process groups; `cleanup()` SIGKILLs and waits for all."""

    def __init__(self) -> None:
        self.groups: set[int] = set()
        self.pids: set[int] = set()
        self.popens: list[subprocess.Popen[Any]] = []

    def track_group(self, pgid: int) -> int:
        """Kill this whole process group at teardown (never our own group)."""
        if pgid != os.getpgrp():
            self.groups.add(pgid)
        return pgid

    def track_pid(self, pid: int) -> int:
        """Kill this process at teardown."""
        self.pids.add(pid)
        return pid

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
        """SIGKILL everything recorded, then wait until all of it is gone."""
        for pgid in self.groups:
            with contextlib.suppress(OSError):
                os.killpg(pgid, signal.SIGKILL)
        for pid in self.pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        for proc in self.popens:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        wait_until(lambda: not any(pid_alive(p) for p in self.pids), timeout,
                   message=f"tracked pids {sorted(self.pids)} to die")
        wait_until(lambda: not any(group_alive(g) for g in self.groups), timeout,
                   message=f"tracked groups {sorted(self.groups)} to die")


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
