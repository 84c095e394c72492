"""The test harness's own process killer must never hit a process it did not start.

pid_max is 32768 on many machines, and the suite starts thousands of processes: a
number recorded early in a test can belong to another test's supervisor by teardown.
A CI run once lost a freshly started supervisor without a trace (its log just
stopped); a teardown killing a reused number explains exactly that. These tests
reuse a number on purpose (by setting the kernel's `ns_last_pid`, root only).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.proc import Reaper, kill_group_leftovers, pid_alive, reaping, wait_until

NS_LAST_PID = Path("/proc/sys/kernel/ns_last_pid")
SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]

pytestmark = pytest.mark.timeout(60)


def spawn_as(pid: int, tries: int = 200) -> subprocess.Popen[bytes] | None:
    """A sleeper in a new session whose pid is `pid` (None if other forks kept taking
    it first: other workers fork too)."""
    for _ in range(tries):
        NS_LAST_PID.write_text(str(pid - 1))
        proc = subprocess.Popen(SLEEPER, start_new_session=True)
        if proc.pid == pid:
            return proc
        proc.kill()
        proc.wait()
    return None


@pytest.fixture
def bystanders() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes the test starts outside the Reaper under test; killed at the end."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait(10)


def reused(old: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
    """Reap `old`, then start an unrelated session leader under its number."""
    old.kill()
    old.wait(10)
    new = spawn_as(old.pid)
    if new is None:
        pytest.fail(f"could not get pid {old.pid} again in 200 forks")
    return new


needs_root = pytest.mark.skipif(not os.access(NS_LAST_PID, os.W_OK),
                                reason="setting ns_last_pid needs root")


@needs_root
def test_the_reaper_leaves_alone_a_process_that_reused_a_tracked_number(
        bystanders: list[subprocess.Popen[bytes]]) -> None:
    reaper = Reaper()
    old = subprocess.Popen(SLEEPER, start_new_session=True)
    reaper.track_pid(old.pid)
    reaper.track_group(old.pid)
    bystanders.append(new := reused(old))
    reaper.cleanup()
    assert new.poll() is None, "the reaper killed a process it never started"
    assert pid_alive(new.pid)


@needs_root
def test_leftovers_of_a_reaped_group_are_killed_but_not_a_reused_number(
        bystanders: list[subprocess.Popen[bytes]]) -> None:
    old = subprocess.Popen(SLEEPER, start_new_session=True)
    bystanders.append(new := reused(old))
    kill_group_leftovers(old.pid)
    assert new.poll() is None
    # a group whose leader died but whose member lives: the member dies
    with reaping() as r:
        leader = r.popen([sys.executable, "-c",
                          "import subprocess, sys, time\n"
                          "p = subprocess.Popen([sys.executable, '-c', 'import time; "
                          "time.sleep(60)'])\n"
                          "print(p.pid, flush=True)\n"],
                         stdout=subprocess.PIPE)
        assert leader.stdout is not None
        member = int(leader.stdout.readline())
        leader.wait(10)
        assert pid_alive(member)
        kill_group_leftovers(leader.pid)
        wait_until(lambda: not pid_alive(member), 5, message="the group's member killed")


def test_the_reaper_still_kills_what_it_started() -> None:
    reaper = Reaper()
    proc = reaper.popen(SLEEPER)
    child = subprocess.Popen(SLEEPER)
    reaper.track_pid(child.pid)
    reaper.cleanup()
    assert proc.poll() == -signal.SIGKILL
    assert child.wait(5) == -signal.SIGKILL
