"""The test harness's own process killer must never hit a process it did not start.

pid_max is 32768 on many machines, and the suite starts thousands of processes: a
number recorded early in a test can belong to another test's supervisor by teardown.
A CI run once lost a freshly started supervisor without a trace (its log just
stopped); a teardown killing a reused number would look exactly like that (not
proven to be the cause). These tests
reuse a number on purpose (by setting the kernel's `ns_last_pid`, root only).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.harness.pgbin import find_bindir
from tests.harness.pgserver import _server_user, sweep_stale
from tests.harness.proc import Reaper, kill_group_leftovers, pid_alive, reaping, wait_until

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


def test_the_stale_cluster_sweep_signals_no_process_that_reused_the_postmaster_pid(
        request: pytest.FixtureRequest, reaper: Reaper, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cluster directory left by a run whose machine rebooted names a dead postmaster;
    its number may now be another test's server. The sweep removes the directory and
    signals nothing (pg_ctl would SIGQUIT whatever has the number)."""
    bindir = find_bindir()
    if bindir is None:
        pytest.fail("no PostgreSQL server binaries")
    run_as = _server_user()
    prefix = ["runuser", "-u", run_as, "--"] if run_as else []
    # a process the server user may signal (as another test's postmaster would be)
    bystander = reaper.popen([*prefix, "sleep", "60"])
    found: list[psutil.Process] = []

    def sleeping() -> bool:  # runuser may exec the sleeper or fork it
        top = psutil.Process(bystander.pid)
        user = run_as or top.username()
        found[:] = [p for p in [top, *top.children()]
                    if p.username() == user and p.cmdline()[:1] == ["sleep"]]
        return bool(found)

    wait_until(sleeping, 10, message="the bystander sleeping")
    target = found[0]
    # a temporary directory of its own that the server user can enter (tmp_path is not)
    tmp = Path(tempfile.mkdtemp(prefix="corda-ha-sweep-test-"))
    request.addfinalizer(lambda: shutil.rmtree(tmp, ignore_errors=True))
    tmp.chmod(0o755)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    basedir = tmp / "corda-ha-pg-stale"
    (basedir / "data").mkdir(parents=True)
    (basedir / "owner.pid").write_text(str(dead_pid()))
    (basedir / "data" / "PG_VERSION").write_text("15\n")  # pg_ctl checks it is a cluster
    (basedir / "data" / "postmaster.pid").write_text(f"{target.pid}\n{basedir / 'data'}\n")
    if run_as:
        shutil.chown(basedir, run_as)
        shutil.chown(basedir / "data", run_as)
    sweep_stale(bindir, run_as)
    assert not basedir.exists()
    assert target.is_running() and target.status() != psutil.STATUS_ZOMBIE


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()
    return proc.pid
