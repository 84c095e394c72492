"""The fencing guard (`python -m supervisor.node.guard`) driven directly over its pipes
(tests/harness/guardproc.py): its commands, deadlines and kill paths, an error inside
it, a suspend of its machine, and the run cgroup."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from supervisor import clock
from supervisor.node import cgroup as cgroups
from tests.chaos.db import find_faketime
from tests.harness.bounds import allowance, kill_within, within
from tests.harness.guardproc import GuardProc
from tests.harness.loadprobe import LoadWatch
from tests.harness.noderecords import the_only_record, wait_record
from tests.harness.paths import FAKE_NODE
from tests.harness.proc import Reaper, pid_alive, wait_until

pytestmark = pytest.mark.timeout(30)


def test_stop_gracefully(reaper: Reaper, tmp_path: Path) -> None:
    g = GuardProc(reaper, ["--record", str(tmp_path)])
    pid = g.started()
    assert wait_record(tmp_path, pid)["epoch"] == "7"
    g.send("stop 5\n")
    ev = g.exited()
    assert ev == {"event": "exited", "pid": pid, "returncode": 0, "signal": None,
                  "runtime": ev["runtime"], "killed_by": "stop",
                  "signalled_at": ev["signalled_at"]}
    assert wait_record(tmp_path, pid)["stop"] is not None


def test_stop_ignoring_sigterm_is_killed_after_grace(reaper: Reaper, tmp_path: Path) -> None:
    g = GuardProc(reaper, ["--ignore-sigterm", "--record", str(tmp_path)])
    pid = g.started()
    wait_record(tmp_path, pid)
    sent = time.monotonic()
    g.send("stop 0.5\n")
    ev = g.exited()
    assert ev["signal"] == signal.SIGKILL and ev["killed_by"] == "stop"
    assert 0.5 <= ev["signalled_at"] - sent < 0.6, ev["signalled_at"] - sent
    assert time.monotonic() - sent < 1.0


def test_kill_takes_down_the_whole_group(reaper: Reaper, tmp_path: Path) -> None:
    g = GuardProc(reaper, ["--spawn-child", "--record", str(tmp_path)])
    pid = g.started()
    child = wait_record(tmp_path, pid)["child_pid"]
    reaper.track_pid(child)
    assert pid_alive(child)
    g.send("kill\n")
    ev = g.exited()
    assert ev["signal"] == signal.SIGKILL and ev["killed_by"] == "kill"
    wait_until(lambda: not pid_alive(child), 1.0, message="grandchild to die")


def test_deadline_fires_on_time(reaper: Reaper, tmp_path: Path, load: LoadWatch) -> None:
    # the deadline given at spawn leaves the guard's and the node's interpreter starts
    # their measured time (a guard that sees it pass before the node starts refuses)
    deadline = time.monotonic() + allowance(load, spawns=2)
    g = GuardProc(reaper, ["--spawn-child", "--record", str(tmp_path)], deadline=deadline)
    pid = g.started()
    child = wait_record(tmp_path, pid)["child_pid"]
    reaper.track_pid(child)
    ev = g.exited()
    reported = time.monotonic() - deadline  # includes the node's death and reaping
    late = ev["signalled_at"] - deadline
    print(f"deadline SIGKILL sent {late * 1000:.2f} ms after the deadline, "
          f"exit reported after {reported * 1000:.1f} ms")
    assert ev["signal"] == signal.SIGKILL and ev["killed_by"] == "deadline"
    assert 0 <= late < 0.1, late  # the kill deadline: exact, whatever the load
    assert reported < within(0.0, load, spawns=0), reported
    wait_until(lambda: not pid_alive(child), 1.0, message="grandchild to die")


def test_deadline_extension_and_clearing(reaper: Reaper, tmp_path: Path) -> None:
    # Deadlines are set from the node's start (not the guard's: an interpreter start on
    # a busy machine may take longer than a short deadline, and then no node starts).
    g = GuardProc(reaper, ["--record", str(tmp_path)], deadline=time.monotonic() + 60)
    pid = g.started()
    start = time.monotonic()
    g.send(f"deadline {start + 0.3!r}\n")
    g.send(f"deadline {start + 0.8!r}\n")  # extended before the first one passes
    ev = g.exited()
    assert ev["killed_by"] == "deadline"
    assert 0 <= ev["signalled_at"] - (start + 0.8) < 0.1

    g2 = GuardProc(reaper, ["--record", str(tmp_path)], deadline=time.monotonic() + 60)
    pid = g2.started()
    g2.send(f"deadline {time.monotonic() + 0.3!r}\n")
    g2.send("deadline none\n")
    time.sleep(0.5)  # past the cleared deadline: the node must still run
    assert pid_alive(pid)
    g2.send("kill\n")
    assert g2.exited()["killed_by"] == "kill"


def test_deadline_shortens_a_stop_grace(reaper: Reaper, tmp_path: Path) -> None:
    g = GuardProc(reaper, ["--ignore-sigterm", "--record", str(tmp_path)])
    pid = g.started()
    wait_record(tmp_path, pid)
    start = time.monotonic()
    g.send(f"deadline {start + 0.3!r}\nstop 10\n")
    ev = g.exited()
    assert ev["killed_by"] == "deadline" and ev["signal"] == signal.SIGKILL
    assert 0 <= ev["signalled_at"] - (start + 0.3) < 0.1


def test_eof_on_stdin_kills_the_group_at_once(reaper: Reaper, tmp_path: Path) -> None:
    g = GuardProc(reaper, ["--spawn-child", "--record", str(tmp_path)])
    pid = g.started()
    child = wait_record(tmp_path, pid)["child_pid"]
    reaper.track_pid(child)
    closed = time.monotonic()
    assert g.proc.stdin is not None
    g.proc.stdin.close()
    ev = g.exited(timeout=1.0)
    assert ev["killed_by"] == "supervisor_gone" and ev["signal"] == signal.SIGKILL
    wait_until(lambda: not pid_alive(child), 1.0, message="grandchild to die")
    assert time.monotonic() - closed < 1.0


def test_sigkill_of_the_guard_kills_the_node(reaper: Reaper, tmp_path: Path) -> None:
    g = GuardProc(reaper, ["--record", str(tmp_path)])
    pid = g.started()
    wait_record(tmp_path, pid)
    g.proc.kill()
    wait_until(lambda: not pid_alive(pid), 1.0, message="node to die by PDEATHSIG")


def test_sigterm_to_the_guard_kills_the_group(reaper: Reaper, tmp_path: Path) -> None:
    g = GuardProc(reaper, ["--spawn-child", "--record", str(tmp_path)])
    pid = g.started()
    child = wait_record(tmp_path, pid)["child_pid"]
    reaper.track_pid(child)
    g.proc.send_signal(signal.SIGINT)  # ignored
    g.proc.send_signal(signal.SIGHUP)  # ignored
    time.sleep(0.1)
    assert pid_alive(pid)
    g.proc.terminate()
    ev = g.exited(timeout=1.0)
    assert ev["killed_by"] == "guard_terminated" and ev["signal"] == signal.SIGKILL
    wait_until(lambda: not pid_alive(child), 1.0, message="grandchild to die")


def test_crash_is_reported_and_leftovers_are_killed(reaper: Reaper, tmp_path: Path) -> None:
    g = GuardProc(reaper, ["--crash-after", "0.2", "--spawn-child", "--record", str(tmp_path)])
    pid = g.started()
    child = wait_record(tmp_path, pid)["child_pid"]
    reaper.track_pid(child)
    ev = g.exited()
    assert ev["returncode"] == 3 and ev["signal"] is None and ev["killed_by"] is None
    assert ev["runtime"] >= 0.2
    wait_until(lambda: not pid_alive(child), 1.0, message="grandchild to die")


def test_fail_at_start(reaper: Reaper) -> None:
    g = GuardProc(reaper, ["--fail-at-start"])
    g.started()
    ev = g.exited()
    assert ev["returncode"] == 1 and ev["killed_by"] is None


def test_spawn_failure(reaper: Reaper) -> None:
    g = GuardProc(reaper, [], command=["/nonexistent/corda"])
    ev = g.event()
    assert ev["event"] == "spawn_failed" and "nonexistent" in ev["error"]
    assert g.proc.wait(5) == 0


def test_bad_working_directory_is_a_spawn_failure(reaper: Reaper) -> None:
    g = GuardProc(reaper, [], cwd="/nonexistent-dir")
    ev = g.event()
    assert ev["event"] == "spawn_failed"
    assert g.proc.wait(5) == 0


def test_deadline_already_passed_does_not_start(reaper: Reaper) -> None:
    g = GuardProc(reaper, [], deadline=time.monotonic() - 0.01)
    ev = g.event()
    assert ev["event"] == "spawn_failed" and "deadline" in ev["error"]
    assert g.proc.wait(5) == 0


def test_commands_in_the_same_write_as_the_spec(reaper: Reaper) -> None:
    g = GuardProc(reaper, [], extra=b"kill\n")
    g.started()
    assert g.exited()["killed_by"] == "kill"


def test_garbage_commands_are_ignored(reaper: Reaper, tmp_path: Path) -> None:
    g = GuardProc(reaper, ["--record", str(tmp_path)])
    pid = g.started()
    wait_record(tmp_path, pid)
    g.send("bogus\ndeadline soon\nstop\n\ndeadline nan\nstop nan\ndeadline 1e300\n")
    g.send("stop 5\n")
    assert g.exited()["returncode"] == 0
    assert not pid_alive(pid)


def test_node_does_not_inherit_ignored_signals(reaper: Reaper, tmp_path: Path) -> None:
    """The guard ignores SIGINT/SIGHUP; the node must get default dispositions."""
    g = GuardProc(reaper, ["--record", str(tmp_path)])
    pid = g.started()
    wait_record(tmp_path, pid)
    os.kill(pid, signal.SIGINT)
    ev = g.exited()
    assert ev["returncode"] != 0 or ev["signal"] == signal.SIGINT


def test_stop_without_kill_timer_and_far_deadline(reaper: Reaper, tmp_path: Path) -> None:
    g = GuardProc(reaper, ["--ignore-sigterm", "--record", str(tmp_path)],
                     deadline=time.monotonic() + 1e9)
    pid = g.started()
    wait_record(tmp_path, pid)
    g.send("stop inf\n")
    time.sleep(0.2)  # nothing may happen: SIGTERM is ignored, no kill timer
    assert pid_alive(pid)
    g.send("kill\n")
    assert g.exited()["killed_by"] == "kill"


def test_without_pidfd_deadline_and_exit_still_work(reaper: Reaper, tmp_path: Path) -> None:
    """The 20 ms polling fallback for kernels without pidfd_open."""
    deadline = time.monotonic() + 0.3
    g = GuardProc(reaper, ["--record", str(tmp_path)], deadline=deadline, pidfd=False)
    g.started()
    ev = g.exited()
    assert ev["killed_by"] == "deadline" and 0 <= ev["signalled_at"] - deadline < 0.1
    g2 = GuardProc(reaper, ["--crash-after", "0.1"], pidfd=False)
    g2.started()
    assert g2.exited()["returncode"] == 3


# ------------------------------------------------------------------ cgroup and acks

# A guard whose command handler fails on "boom": the internal-error path.
FAILING_GUARD = [sys.executable, "-c", """
import sys
import supervisor.node.guard as g
original = g.Guard.command
def command(self, line):
    if line.strip() == "boom":
        raise RuntimeError("injected guard failure")
    return original(self, line)
g.Guard.command = command
sys.exit(g.main(sys.argv[1:]))
"""]

KILL_PATHS = ["deadline", "stop", "kill", "eof", "sigterm", "leader_exit", "guard_error"]


@pytest.mark.parametrize("path", KILL_PATHS)
def test_every_kill_path_kills_the_cgroup(reaper: Reaper, tmp_path: Path, cgroup_parent: str,
                                         path: str) -> None:
    """The node's real worker is a setsid'ed child (another session, out of the
    process group): every way the guard kills the node must take it down too."""
    run_cgroup = cgroups.create(cgroup_parent, "guard")
    deadline = time.monotonic() + 3.0 if path == "deadline" else None
    g = GuardProc(reaper, ["--setsid-child", "--ignore-sigterm", "--record", str(tmp_path)],
                     cgroup=run_cgroup, deadline=deadline,
                     guard=FAILING_GUARD if path == "guard_error" else None)
    leader = g.started()
    worker = int(the_only_record(tmp_path)["pid"])
    reaper.track_pid(worker)
    assert worker != leader and os.getsid(worker) != os.getsid(leader)
    assert sorted(cgroups.procs(run_cgroup)) == sorted([leader, worker])
    expected: str | None = path
    if path == "stop":
        g.send("stop 0.2\n")
    elif path == "kill":
        g.send("kill\n")
    elif path == "eof":
        assert g.proc.stdin is not None
        g.proc.stdin.close()
        expected = "supervisor_gone"
    elif path == "sigterm":
        g.proc.terminate()
        expected = "guard_terminated"
    elif path == "leader_exit":
        os.kill(leader, signal.SIGKILL)  # the leader dies on its own; its worker lives on
        expected = None
    elif path == "guard_error":
        g.send("boom\n")
    ev = g.event(timeout=6.0)
    assert ev["event"] == "exited" and ev["killed_by"] == expected, ev
    wait_until(lambda: not pid_alive(worker), 1.0, message=f"setsid'ed worker to die ({path})")
    wait_until(lambda: not cgroups.populated(run_cgroup), 1.0, message="cgroup to empty")
    g.proc.wait(5)
    if path == "eof":  # the supervisor is gone: the guard removes the cgroup itself
        assert not os.path.exists(run_cgroup)


def test_wrapper_child_is_killed_with_the_cgroup_when_the_guard_dies(
        reaper: Reaper, tmp_path: Path, cgroup_parent: str) -> None:
    """A wrapper script forks the node (no exec). SIGKILL of the guard: PDEATHSIG
    reaches the wrapper only; the wrapper's child is still in the run's cgroup, where
    the supervisor (here: the test) finds and kills it."""
    run_cgroup = cgroups.create(cgroup_parent, "wrapper")
    wrapper = ["/bin/sh", "-c", f"{sys.executable} {FAKE_NODE} --record {tmp_path}; exit 0"]
    g = GuardProc(reaper, [], command=wrapper, cgroup=run_cgroup)
    leader = g.started()
    node = int(the_only_record(tmp_path)["pid"])
    reaper.track_pid(node)
    g.proc.kill()
    wait_until(lambda: not pid_alive(leader), 1.0, message="wrapper dies by PDEATHSIG")
    assert pid_alive(node)  # the process group alone does not hold it
    assert node in cgroups.procs(run_cgroup)
    assert cgroups.kill_and_remove(run_cgroup, 2.0)
    assert not pid_alive(node)


def test_moving_into_a_missing_cgroup_is_a_spawn_failure(reaper: Reaper, tmp_path: Path) -> None:
    g = GuardProc(reaper, [], cgroup=str(tmp_path / "no-such-cgroup"))
    ev = g.event()
    assert ev["event"] == "spawn_failed" and "cgroup" in ev["error"], ev
    assert g.proc.wait(5) == 0


def test_every_command_is_acknowledged_in_order(reaper: Reaper, tmp_path: Path) -> None:
    g = GuardProc(reaper, ["--record", str(tmp_path)], extra=b"deadline none\n")
    pid = g.started()
    wait_record(tmp_path, pid)
    g.send(f"deadline {time.monotonic() + 100!r}\nbogus\n\nstop 5\n")
    ev = g.exited()
    assert ev["killed_by"] == "stop"
    assert [a["seq"] for a in g.acks] == [1, 2, 3, 4, 5]
    assert [("error" in a) for a in g.acks] == [False, False, True, False, False]


# ------------------------------------------------------------------ error, later stop, suspend


def test_an_error_inside_the_guard_kills_the_group(reaper: Reaper, tmp_path: Path) -> None:
    """The guard leaves run() by an exception: it SIGKILLs the node's group first,
    reports the exit (killed_by guard_error) and only then dies of the error."""
    g = GuardProc(reaper, ["--spawn-child", "--record", str(tmp_path)], guard=FAILING_GUARD,
                  capture_stderr=True)
    pid, rec = g.started_with_record(tmp_path)
    assert pid_alive(pid) and pid_alive(rec["child_pid"])
    g.send("boom\n")
    ev = g.event(5)
    assert ev["event"] == "exited", ev
    assert ev["killed_by"] == "guard_error" and ev["signal"] == signal.SIGKILL
    wait_until(lambda: not pid_alive(rec["child_pid"]), 2, message="the group to die")
    assert not pid_alive(pid)
    assert g.proc.wait(5) != 0
    assert g.proc.stderr is not None
    assert b"RuntimeError: injected guard failure" in g.proc.stderr.read()


def test_a_later_stop_never_lengthens_the_grace(reaper: Reaper, tmp_path: Path) -> None:
    """`stop 0.3` then `stop 10`: SIGKILL 0.3 s after the first (the second only could
    shorten it); then `stop 10` then `stop 0.2` shortens."""
    g = GuardProc(reaper, ["--ignore-sigterm", "--record", str(tmp_path)])
    g.started_with_record(tmp_path)
    first = g.send("stop 0.3\n")
    g.send("stop 10\n")
    ev = g.event(5)
    assert ev["event"] == "exited" and ev["killed_by"] == "stop", ev
    assert ev["signal"] == signal.SIGKILL
    assert 0.3 <= ev["signalled_at"] - first < 5.0
    assert g.proc.wait(5) == 0

    g2 = GuardProc(reaper, ["--ignore-sigterm", "--record", str(tmp_path)])
    g2.started_with_record(tmp_path)
    g2.send("stop 10\n")
    second = g2.send("stop 0.2\n")
    ev = g2.event(5)
    assert ev["killed_by"] == "stop" and 0.2 <= ev["signalled_at"] - second < 5.0


def test_a_suspend_past_the_deadline_kills_the_node_as_the_guard_resumes(
        reaper: Reaper, tmp_path: Path, load: LoadWatch) -> None:
    """The guard's deadline is on CLOCK_BOOTTIME, which counts a suspend, and its waits
    are capped (supervisor/clock.py): the kernel measures a poll's timeout on
    CLOCK_MONOTONIC, which a suspend stops. A suspend is played by moving the guard's
    clock 60 s forward under libfaketime while it sits in poll() (the kernel's timer does
    not see the jump): the node dies within MAX_WAIT of the "resume", not when that poll
    would have ended (30 s later, waiting on CLOCK_MONOTONIC)."""
    lib = find_faketime()
    if lib is None:
        pytest.skip("libfaketime is not installed (Debian: libfaketime)")
    ts = tmp_path / "faketime"
    ts.write_text("+0s\n")
    g = GuardProc(reaper, ["--record", str(tmp_path)],
                  env={"LD_PRELOAD": lib, "FAKETIME_TIMESTAMP_FILE": str(ts),
                       "FAKETIME_NO_CACHE": "1"})
    pid, _ = g.started_with_record(tmp_path)
    # under libfaketime the guard's CLOCK_BOOTTIME reads as the (faked) wall clock
    g.send(f"deadline {time.time() + 30.0!r}\n")
    assert g.event(5, acks=True)["event"] == "ack"
    wchan = Path(f"/proc/{g.proc.pid}/wchan")
    wait_until(lambda: "poll" in wchan.read_text(), 5, message="the guard waiting in poll()")
    ts.write_text("+60s\n")  # resumed: 60 s have passed on CLOCK_BOOTTIME
    resumed = time.monotonic()
    wait_until(lambda: not pid_alive(pid), 5, interval=0.005, message="the node killed")
    took = time.monotonic() - resumed
    ev = g.event(5)
    assert ev["event"] == "exited" and ev["killed_by"] == "deadline", ev
    assert took < kill_within(clock.MAX_WAIT, load, floor=0.5), \
        f"killed {took:.3f} s after the resume"
