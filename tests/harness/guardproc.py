"""The fencing guard (`python -m supervisor.node.guard`) driven directly over its pipes,
as the supervisor drives it: a spec line on its stdin, then commands; events (JSON lines)
on its status pipe. The node is the stand-in (tests/harness/fake_node.py) unless a
`command` is given."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.harness.paths import FAKE_NODE, REPO
from tests.harness.proc import Reaper, wait_until


class GuardProc:
    """A guard process with its command pipe and status pipe.

    `guard` replaces the guard's command line (default ``python -m supervisor.node.guard``);
    `env` is added to the guard's environment; `capture_stderr` keeps its stderr in
    `proc.stderr`. The node gets PATH and CORDA_HA_EPOCH=7, `cwd`, the kill `deadline`
    (CLOCK_BOOTTIME seconds, None: none), `pidfd` and `cgroup`; `extra` is written right
    after the spec, in the same write."""

    def __init__(self, reaper: Reaper, node_args: list[str], *, cwd: str = "/",
                 deadline: float | None = None, command: list[str] | None = None,
                 extra: bytes = b"", pidfd: bool = True, cgroup: str | None = None,
                 guard: list[str] | None = None, env: dict[str, str] | None = None,
                 capture_stderr: bool = False) -> None:
        self.reaper = reaper
        status_r, status_w = os.pipe()
        self.proc = reaper.popen(
            [*(guard or [sys.executable, "-m", "supervisor.node.guard"]), "--status-fd",
             str(status_w)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE if capture_stderr else None, pass_fds=(status_w,),
            env=dict(os.environ, PYTHONPATH=str(REPO), **(env or {})))
        os.close(status_w)
        self.status_r = status_r
        self._buf = b""
        self.acks: list[dict[str, Any]] = []
        spec = {"command": command or [sys.executable, FAKE_NODE, *node_args], "cwd": cwd,
                "env": {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CORDA_HA_EPOCH": "7"},
                "deadline": deadline, "pidfd": pidfd, "cgroup": cgroup}
        self.send((json.dumps(spec) + "\n").encode() + extra)

    def send(self, data: bytes | str) -> float:
        """Write `data`; the time just before (the guard cannot have seen it earlier, so a
        grace it starts on reading is never shorter measured from here)."""
        assert self.proc.stdin is not None
        sent = time.monotonic()
        self.proc.stdin.write(data.encode() if isinstance(data, str) else data)
        self.proc.stdin.flush()
        return sent

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
        """The node's pid from the `started` event (its group is tracked)."""
        ev = self.event()
        assert ev["event"] == "started", ev
        assert ev["pgid"] == ev["pid"]
        self.reaper.track_group(ev["pgid"])
        return int(ev["pid"])

    def started_with_record(self, records: Path) -> tuple[int, dict[str, Any]]:
        """The node's pid and its first record in `records` (its group and its child,
        if any, are tracked)."""
        ev = self.event(10)
        assert ev["event"] == "started", ev
        self.reaper.track_group(ev["pgid"])
        path = records / f"{ev['pid']}.json"
        wait_until(path.exists, 10, message="the node's record")
        record: dict[str, Any] = json.loads(path.read_text())
        if record.get("child_pid"):
            self.reaper.track_pid(record["child_pid"])
        return int(ev["pid"]), record

    def exited(self, timeout: float = 5.0) -> dict[str, Any]:
        """The `exited` event; the guard then exits 0."""
        ev = self.event(timeout)
        assert ev["event"] == "exited", ev
        assert self.proc.wait(5) == 0
        return ev

    def close(self) -> None:
        os.close(self.status_r)
