"""The fencing guard (`python -m supervisor.node.guard`) driven directly over its pipes."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from supervisor.node import cgroup as cgroups
from tests.harness.cgroups import wait_record
from tests.harness.paths import FAKE_NODE
from tests.harness.proc import Reaper, pid_alive, wait_until

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parent.parent


class GuardHarness:
    """A guard process with its command pipe and status pipe, as the supervisor sees it."""

    def __init__(self, reaper: Reaper, node_args: list[str], *, cwd: str = "/",
                 deadline: float | None = None, command: list[str] | None = None,
                 extra: bytes = b"", pidfd: bool = True, cgroup: str | None = None,
                 guard: list[str] | None = None) -> None:
        self.reaper = reaper
        status_r, status_w = os.pipe()
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = reaper.popen(
            [*(guard or [sys.executable, "-m", "supervisor.node.guard"]), "--status-fd",
             str(status_w)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, pass_fds=(status_w,), env=env)
        os.close(status_w)
        self.status_r = status_r
        self._buf = b""
        self.acks: list[dict[str, Any]] = []
        spec = {"command": command or [sys.executable, FAKE_NODE, *node_args], "cwd": cwd,
                "env": {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CORDA_HA_EPOCH": "7"},
                "deadline": deadline, "pidfd": pidfd, "cgroup": cgroup}
        self.send((json.dumps(spec) + "\n").encode() + extra)

    def send(self, data: bytes | str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data.encode() if isinstance(data, str) else data)
        self.proc.stdin.flush()

    def event(self, timeout: float = 5.0, acks: bool = False) -> dict[str, Any]:
        """The next status event; fails after `timeout` s. Acks are collected in
        `self.acks` and skipped unless `acks`."""
        end = time.monotonic() + timeout
        while True:
            while b"\n" not in self._buf:
                left = end - time.monotonic()
                ready, _, _ = select.select([self.status_r], [], [], max(0.0, left))
                if not ready:
                    raise AssertionError(f"no guard event within {timeout}s")
                chunk = os.read(self.status_r, 4096)
                if not chunk:
                    raise AssertionError("guard status pipe closed")
                self._buf += chunk
            line, self._buf = self._buf.split(b"\n", 1)
            event: dict[str, Any] = json.loads(line)
            if event["event"] == "ack":
                self.acks.append(event)
                if not acks:
                    continue
            return event

    def started(self) -> int:
        ev = self.event()
        assert ev["event"] == "started", ev
        assert ev["pgid"] == ev["pid"]
        self.reaper.track_group(ev["pgid"])
        return int(ev["pid"])

    def exited(self, timeout: float = 5.0) -> dict[str, Any]:
        ev = self.event(timeout)
        assert ev["event"] == "exited", ev
        assert self.proc.wait(5) == 0
        return ev

    def close(self) -> None:
        os.close(self.status_r)


def record(tmp_path: Path, pid: int, timeout: float = 5.0) -> dict[str, Any]:
    """Wait for the fake node's record file (written once its SIGTERM handler is set)."""
    path = tmp_path / f"{pid}.json"
    wait_until(path.exists, timeout, message=f"{path} to appear")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def test_stop_gracefully(reaper: Reaper, tmp_path: Path) -> None:
    g = GuardHarness(reaper, ["--record", str(tmp_path)])
    pid = g.started()
    assert record(tmp_path, pid)["epoch"] == "7"
    g.send("stop 5\n")
    ev = g.exited()
    assert ev == {"event": "exited", "pid": pid, "returncode": 0, "signal": None,
                  "runtime": ev["runtime"], "killed_by": "stop",
                  "signalled_at": ev["signalled_at"]}
    assert record(tmp_path, pid)["stop"] is not None


def test_stop_ignoring_sigterm_is_killed_after_grace(reaper: Reaper, tmp_path: Path) -> None:
    g = GuardHarness(reaper, ["--ignore-sigterm", "--record", str(tmp_path)])
    pid = g.started()
    record(tmp_path, pid)
    sent = time.monotonic()
    g.send("stop 0.5\n")
    ev = g.exited()
    assert ev["signal"] == signal.SIGKILL and ev["killed_by"] == "stop"
    assert 0.5 <= ev["signalled_at"] - sent < 0.6, ev["signalled_at"] - sent
    assert time.monotonic() - sent < 1.0


def test_kill_takes_down_the_whole_group(reaper: Reaper, tmp_path: Path) -> None:
    g = GuardHarness(reaper, ["--spawn-child", "--record", str(tmp_path)])
    pid = g.started()
    child = record(tmp_path, pid)["child_pid"]
    reaper.track_pid(child)
    assert pid_alive(child)
    g.send("kill\n")
    ev = g.exited()
    assert ev["signal"] == signal.SIGKILL and ev["killed_by"] == "kill"
    wait_until(lambda: not pid_alive(child), 1.0, message="grandchild to die")


def test_deadline_fires_on_time(reaper: Reaper, tmp_path: Path) -> None:
    deadline = time.monotonic() + 0.5
    g = GuardHarness(reaper, ["--spawn-child", "--record", str(tmp_path)], deadline=deadline)
    pid = g.started()
    child = record(tmp_path, pid)["child_pid"]
    reaper.track_pid(child)
    ev = g.exited()
    reported = time.monotonic() - deadline  # includes the node's death and reaping
    late = ev["signalled_at"] - deadline
    print(f"deadline SIGKILL sent {late * 1000:.2f} ms after the deadline, "
          f"exit reported after {reported * 1000:.1f} ms")
    assert ev["signal"] == signal.SIGKILL and ev["killed_by"] == "deadline"
    assert 0 <= late < 0.1, late
    assert reported < 0.5, reported
    wait_until(lambda: not pid_alive(child), 1.0, message="grandchild to die")


def test_deadline_extension_and_clearing(reaper: Reaper, tmp_path: Path) -> None:
    # Deadlines are set from the node's start (not the guard's: an interpreter start on
    # a busy machine may take longer than a short deadline, and then no node starts).
    g = GuardHarness(reaper, ["--record", str(tmp_path)], deadline=time.monotonic() + 60)
    pid = g.started()
    start = time.monotonic()
    g.send(f"deadline {start + 0.3!r}\n")
    g.send(f"deadline {start + 0.8!r}\n")  # extended before the first one passes
    ev = g.exited()
    assert ev["killed_by"] == "deadline"
    assert 0 <= ev["signalled_at"] - (start + 0.8) < 0.1

    g2 = GuardHarness(reaper, ["--record", str(tmp_path)], deadline=time.monotonic() + 60)
    pid = g2.started()
    g2.send(f"deadline {time.monotonic() + 0.3!r}\n")
    g2.send("deadline none\n")
    time.sleep(0.5)  # past the cleared deadline: the node must still run
    assert pid_alive(pid)
    g2.send("kill\n")
    assert g2.exited()["killed_by"] == "kill"


def test_deadline_shortens_a_stop_grace(reaper: Reaper, tmp_path: Path) -> None:
    g = GuardHarness(reaper, ["--ignore-sigterm", "--record", str(tmp_path)])
    pid = g.started()
    record(tmp_path, pid)
    start = time.monotonic()
    g.send(f"deadline {start + 0.3!r}\nstop 10\n")
    ev = g.exited()
    assert ev["killed_by"] == "deadline" and ev["signal"] == signal.SIGKILL
    assert 0 <= ev["signalled_at"] - (start + 0.3) < 0.1


def test_eof_on_stdin_kills_the_group_at_once(reaper: Reaper, tmp_path: Path) -> None:
    g = GuardHarness(reaper, ["--spawn-child", "--record", str(tmp_path)])
    pid = g.started()
    child = record(tmp_path, pid)["child_pid"]
    reaper.track_pid(child)
    closed = time.monotonic()
    assert g.proc.stdin is not None
    g.proc.stdin.close()
    ev = g.exited(timeout=1.0)
    assert ev["killed_by"] == "supervisor_gone" and ev["signal"] == signal.SIGKILL
    wait_until(lambda: not pid_alive(child), 1.0, message="grandchild to die")
    assert time.monotonic() - closed < 1.0


def test_sigkill_of_the_guard_kills_the_node(reaper: Reaper, tmp_path: Path) -> None:
    g = GuardHarness(reaper, ["--record", str(tmp_path)])
    pid = g.started()
    record(tmp_path, pid)
    g.proc.kill()
    wait_until(lambda: not pid_alive(pid), 1.0, message="node to die by PDEATHSIG")


def test_sigterm_to_the_guard_kills_the_group(reaper: Reaper, tmp_path: Path) -> None:
    g = GuardHarness(reaper, ["--spawn-child", "--record", str(tmp_path)])
    pid = g.started()
    child = record(tmp_path, pid)["child_pid"]
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
    g = GuardHarness(reaper, ["--crash-after", "0.2", "--spawn-child", "--record", str(tmp_path)])
    pid = g.started()
    child = record(tmp_path, pid)["child_pid"]
    reaper.track_pid(child)
    ev = g.exited()
    assert ev["returncode"] == 3 and ev["signal"] is None and ev["killed_by"] is None
    assert ev["runtime"] >= 0.2
    wait_until(lambda: not pid_alive(child), 1.0, message="grandchild to die")


def test_fail_at_start(reaper: Reaper) -> None:
    g = GuardHarness(reaper, ["--fail-at-start"])
    g.started()
    ev = g.exited()
    assert ev["returncode"] == 1 and ev["killed_by"] is None


def test_spawn_failure(reaper: Reaper) -> None:
    g = GuardHarness(reaper, [], command=["/nonexistent/corda"])
    ev = g.event()
    assert ev["event"] == "spawn_failed" and "nonexistent" in ev["error"]
    assert g.proc.wait(5) == 0


def test_bad_working_directory_is_a_spawn_failure(reaper: Reaper) -> None:
    g = GuardHarness(reaper, [], cwd="/nonexistent-dir")
    ev = g.event()
    assert ev["event"] == "spawn_failed"
    assert g.proc.wait(5) == 0


def test_deadline_already_passed_does_not_start(reaper: Reaper) -> None:
    g = GuardHarness(reaper, [], deadline=time.monotonic() - 0.01)
    ev = g.event()
    assert ev["event"] == "spawn_failed" and "deadline" in ev["error"]
    assert g.proc.wait(5) == 0


def test_commands_in_the_same_write_as_the_spec(reaper: Reaper) -> None:
    g = GuardHarness(reaper, [], extra=b"kill\n")
    g.started()
    assert g.exited()["killed_by"] == "kill"


def test_garbage_commands_are_ignored(reaper: Reaper, tmp_path: Path) -> None:
    g = GuardHarness(reaper, ["--record", str(tmp_path)])
    pid = g.started()
    record(tmp_path, pid)
    g.send("bogus\ndeadline soon\nstop\n\ndeadline nan\nstop nan\ndeadline 1e300\n")
    g.send("stop 5\n")
    assert g.exited()["returncode"] == 0
    assert not pid_alive(pid)


def test_node_does_not_inherit_ignored_signals(reaper: Reaper, tmp_path: Path) -> None:
    """The guard ignores SIGINT/SIGHUP; the node must get default dispositions."""
    g = GuardHarness(reaper, ["--record", str(tmp_path)])
    pid = g.started()
    record(tmp_path, pid)
    os.kill(pid, signal.SIGINT)
    ev = g.exited()
    assert ev["returncode"] != 0 or ev["signal"] == signal.SIGINT


def test_stop_without_kill_timer_and_far_deadline(reaper: Reaper, tmp_path: Path) -> None:
    g = GuardHarness(reaper, ["--ignore-sigterm", "--record", str(tmp_path)],
                     deadline=time.monotonic() + 1e9)
    pid = g.started()
    record(tmp_path, pid)
    g.send("stop inf\n")
    time.sleep(0.2)  # nothing may happen: SIGTERM is ignored, no kill timer
    assert pid_alive(pid)
    g.send("kill\n")
    assert g.exited()["killed_by"] == "kill"


def test_without_pidfd_deadline_and_exit_still_work(reaper: Reaper, tmp_path: Path) -> None:
    """The 20 ms polling fallback for kernels without pidfd_open."""
    deadline = time.monotonic() + 0.3
    g = GuardHarness(reaper, ["--record", str(tmp_path)], deadline=deadline, pidfd=False)
    g.started()
    ev = g.exited()
    assert ev["killed_by"] == "deadline" and 0 <= ev["signalled_at"] - deadline < 0.1
    g2 = GuardHarness(reaper, ["--crash-after", "0.1"], pidfd=False)
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
    g = GuardHarness(reaper, ["--setsid-child", "--ignore-sigterm", "--record", str(tmp_path)],
                     cgroup=run_cgroup, deadline=deadline,
                     guard=FAILING_GUARD if path == "guard_error" else None)
    leader = g.started()
    worker = int(wait_record(tmp_path)["pid"])
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
    g = GuardHarness(reaper, [], command=wrapper, cgroup=run_cgroup)
    leader = g.started()
    node = int(wait_record(tmp_path)["pid"])
    reaper.track_pid(node)
    g.proc.kill()
    wait_until(lambda: not pid_alive(leader), 1.0, message="wrapper dies by PDEATHSIG")
    assert pid_alive(node)  # the process group alone does not hold it
    assert node in cgroups.procs(run_cgroup)
    assert cgroups.kill_and_remove(run_cgroup, 2.0)
    assert not pid_alive(node)


def test_moving_into_a_missing_cgroup_is_a_spawn_failure(reaper: Reaper, tmp_path: Path) -> None:
    g = GuardHarness(reaper, [], cgroup=str(tmp_path / "no-such-cgroup"))
    ev = g.event()
    assert ev["event"] == "spawn_failed" and "cgroup" in ev["error"], ev
    assert g.proc.wait(5) == 0


def test_every_command_is_acknowledged_in_order(reaper: Reaper, tmp_path: Path) -> None:
    g = GuardHarness(reaper, ["--record", str(tmp_path)], extra=b"deadline none\n")
    pid = g.started()
    record(tmp_path, pid)
    g.send(f"deadline {time.monotonic() + 100!r}\nbogus\n\nstop 5\n")
    ev = g.exited()
    assert ev["killed_by"] == "stop"
    assert [a["seq"] for a in g.acks] == [1, 2, 3, 4, 5]
    assert [("error" in a) for a in g.acks] == [False, False, True, False, False]
