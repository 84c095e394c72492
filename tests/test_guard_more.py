"""More fencing-guard rules, driven over its pipes like tests/test_guard.py: an error
inside the guard's loop SIGKILLs the node group; a later `stop` only shortens the kill
timer. (A separate file: tests/test_guard.py is being reworked in another branch.)"""

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

from supervisor import clock
from tests.chaos.db import find_faketime
from tests.harness.paths import FAKE_NODE
from tests.harness.proc import Reaper, pid_alive, wait_until

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parent.parent

# The real guard, with one command that raises inside its run loop (a stand-in for
# any unexpected error there): everything else is supervisor.node.guard unchanged.
BROKEN_GUARD = """
import sys
from supervisor.node import guard

class Broken(guard.Guard):
    def command(self, line):
        if line.strip() == "boom":
            raise RuntimeError("boom")
        super().command(line)

guard.Guard = Broken
sys.exit(guard.main())
"""


class Guard:
    """A guard process with its command and status pipes."""

    def __init__(self, reaper: Reaper, node_args: list[str], *,
                 entry: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        self.reaper = reaper
        status_r, status_w = os.pipe()
        entry = entry or ["-m", "supervisor.node.guard"]
        self.proc = reaper.popen(
            [sys.executable, *entry, "--status-fd", str(status_w)], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, pass_fds=(status_w,),
            env=dict(os.environ, PYTHONPATH=str(ROOT), **(env or {})))
        os.close(status_w)
        self.status_r = status_r
        self._buf = b""
        spec = {"command": [sys.executable, FAKE_NODE, *node_args], "cwd": "/",
                "env": {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, "deadline": None}
        self.send(json.dumps(spec) + "\n")

    def send(self, text: str) -> float:
        """Write `text`; the time just before (the guard cannot have seen it earlier, so a
        grace it starts on reading is never shorter measured from here)."""
        assert self.proc.stdin is not None
        sent = time.monotonic()
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()
        return sent

    def event(self, timeout: float) -> dict[str, Any]:
        """The next status event other than a command acknowledgement."""
        while True:
            event = self._next(timeout)
            if event.get("event") != "ack":
                return event

    def _next(self, timeout: float) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while b"\n" not in self._buf:
            ready, _, _ = select.select([self.status_r], [], [], max(0.0, end - time.monotonic()))
            if not ready:
                raise AssertionError(f"no guard event within {timeout} s")
            chunk = os.read(self.status_r, 4096)
            if not chunk:
                raise AssertionError("guard status pipe closed without an event")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        event: dict[str, Any] = json.loads(line)
        return event

    def started(self, records: Path) -> tuple[int, dict[str, Any]]:
        ev = self.event(10)
        assert ev["event"] == "started", ev
        self.reaper.track_group(ev["pgid"])
        path = records / f"{ev['pid']}.json"
        wait_until(path.exists, 10, message="the node's record")
        record: dict[str, Any] = json.loads(path.read_text())
        if record.get("child_pid"):
            self.reaper.track_pid(record["child_pid"])
        return int(ev["pid"]), record


def test_an_error_inside_the_guard_kills_the_group(reaper: Reaper, tmp_path: Path) -> None:
    """The guard leaves run() by an exception: it SIGKILLs the node's group first,
    reports the exit (killed_by guard_error) and only then dies of the error."""
    g = Guard(reaper, ["--spawn-child", "--record", str(tmp_path)],
              entry=["-c", BROKEN_GUARD])
    pid, record = g.started(tmp_path)
    assert pid_alive(pid) and pid_alive(record["child_pid"])
    g.send("boom\n")
    ev = g.event(5)
    assert ev["event"] == "exited", ev
    assert ev["killed_by"] == "guard_error" and ev["signal"] == signal.SIGKILL
    wait_until(lambda: not pid_alive(record["child_pid"]), 2, message="the group to die")
    assert not pid_alive(pid)
    assert g.proc.wait(5) != 0
    assert g.proc.stderr is not None and b"RuntimeError: boom" in g.proc.stderr.read()


def test_a_later_stop_never_lengthens_the_grace(reaper: Reaper, tmp_path: Path) -> None:
    """`stop 0.3` then `stop 10`: SIGKILL 0.3 s after the first (the second only could
    shorten it); then `stop 10` then `stop 0.2` shortens."""
    g = Guard(reaper, ["--ignore-sigterm", "--record", str(tmp_path)])
    g.started(tmp_path)
    first = g.send("stop 0.3\n")
    g.send("stop 10\n")
    ev = g.event(5)
    assert ev["event"] == "exited" and ev["killed_by"] == "stop", ev
    assert ev["signal"] == signal.SIGKILL
    assert 0.3 <= ev["signalled_at"] - first < 5.0
    assert g.proc.wait(5) == 0

    g2 = Guard(reaper, ["--ignore-sigterm", "--record", str(tmp_path)])
    g2.started(tmp_path)
    g2.send("stop 10\n")
    second = g2.send("stop 0.2\n")
    ev = g2.event(5)
    assert ev["killed_by"] == "stop" and 0.2 <= ev["signalled_at"] - second < 5.0


def test_a_suspend_past_the_deadline_kills_the_node_as_the_guard_resumes(
        reaper: Reaper, tmp_path: Path) -> None:
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
    g = Guard(reaper, ["--record", str(tmp_path)],
              env={"LD_PRELOAD": lib, "FAKETIME_TIMESTAMP_FILE": str(ts),
                   "FAKETIME_NO_CACHE": "1"})
    pid, _ = g.started(tmp_path)
    # under libfaketime the guard's CLOCK_BOOTTIME reads as the (faked) wall clock
    g.send(f"deadline {time.time() + 30.0!r}\n")
    assert g._next(5)["event"] == "ack"
    wchan = Path(f"/proc/{g.proc.pid}/wchan")
    wait_until(lambda: "poll" in wchan.read_text(), 5, message="the guard waiting in poll()")
    ts.write_text("+60s\n")  # resumed: 60 s have passed on CLOCK_BOOTTIME
    resumed = time.monotonic()
    wait_until(lambda: not pid_alive(pid), 5, interval=0.005, message="the node killed")
    took = time.monotonic() - resumed
    ev = g.event(5)
    assert ev["event"] == "exited" and ev["killed_by"] == "deadline", ev
    assert took < clock.MAX_WAIT + 0.5, f"killed {took:.3f} s after the resume"
