"""One supervisor host of an end-to-end test: a real `python -m supervisor run` process
with its own config file, machine name and the stand-in node's record directory.

Every process a host starts carries `CORDA_HA_TEST_TAG` in its environment, so
teardown (tests/harness/cluster.py) finds and SIGKILLs all of them (supervisor, guard,
node, grandchildren) even when the supervisor was SIGKILLed and its children were
re-parented.

A host's live nodes are found by scanning /proc for stand-in node processes whose
command line names the host's record directory (`scan_nodes`): a node counts from the
moment its process exists (exec), not from its first record, wherever it sits in the
process tree (a wrapper's child, a setsid'ed child, another PID namespace) and whatever
pid it thinks it has.

The lab timing: U = 0.5 s, W = 2 s, stopTimeout = 0.5 s (so M = 0.2 s), operationTimeout
= 0.4 s. `EditedHost` passes its config text through an edit (e.g. `lease_off`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from tests.harness.config import (
    LAB_HEALTH,
    LAB_LOGGING,
    LAB_RESTART,
    lease,
    ms,
    seconds,
    write_config,
)
from tests.harness.nodescan import scan_nodes
from tests.harness.paths import FAKE_NODE, REPO
from tests.harness.proc import wait_until

U_MS, W_MS, STOP_MS = 500, 2000, 500
W = W_MS / 1000


def _set(event: threading.Event) -> threading.Event:
    event.set()
    return event


@dataclass
class Host:
    """One supervisor process and its node's records."""

    name: str
    root: Path
    dsn: str
    lease_name: str
    tag: str
    node_args: list[str] = field(default_factory=list)
    extra_conf: str = ""
    machine_name: str | None = None
    env: dict[str, str] = field(default_factory=dict)  # extra environment for the supervisor
    update_ms: int = U_MS
    wait_ms: int = W_MS
    stop_ms: int = STOP_MS
    pid_namespace: bool = False  # run under `unshare --pid --fork --mount-proc` (as root)
    wrap: list[str] = field(default_factory=list)  # a command prefix that execs the rest
    proc: subprocess.Popen[str] | None = None
    lines: list[dict[str, Any]] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)
    # Cleared: stop reading the supervisor's stdout, so its pipe fills (a stalled journald).
    reading: threading.Event = field(default_factory=lambda: _set(threading.Event()))

    @property
    def records(self) -> Path:
        return self.root / "records"

    @property
    def lock_path(self) -> Path:
        """One lock file per cluster: a node holds it while it lives (exact overlaps)."""
        return self.root.parent / "nodes.lock"

    @property
    def config_path(self) -> Path:
        return self.root / "supervisor.conf"

    def write_config(self) -> None:
        self.records.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, FAKE_NODE, "--record", str(self.records),
                   "--lock", str(self.lock_path), *self.node_args]
        write_config(
            self.config_path,
            lease=lease(self.machine_name or self.name, self.update_ms, self.wait_ms),
            database={"url": self.dsn, "leaseName": self.lease_name,
                      "connectTimeout": seconds(2), "operationTimeout": ms(400)},
            node={"command": command, "workingDirectory": str(self.root),
                  "stopTimeout": ms(self.stop_ms)},
            restart=LAB_RESTART,
            health=LAB_HEALTH,
            logging=LAB_LOGGING,
            extra=self.extra_conf)

    def start(self) -> None:
        self.write_config()
        env = dict(os.environ, CORDA_HA_TEST_TAG=self.tag, PYTHONPATH=str(REPO))
        env.pop("NOTIFY_SOCKET", None)
        env.update(self.env)
        prefix = (["unshare", "--pid", "--fork", "--mount-proc"] if self.pid_namespace
                  else list(self.wrap))
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "supervisor", "run", "--config",
             str(self.config_path)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
            start_new_session=True, cwd=str(self.root))
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.reading.wait()
            with self.cond:
                self.raw.append(line)
                with contextlib.suppress(ValueError):
                    self.lines.append(json.loads(line))
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def events(self, name: str) -> list[dict[str, Any]]:
        with self.cond:
            return [e for e in self.lines if e.get("event") == name]

    def wait_event(self, name: str, timeout: float, since: int = 0,
                   match: Callable[[dict[str, Any]], bool] = lambda e: True) -> dict[str, Any]:
        """Block until the log has an event `name` (after the first `since` lines).
        On timeout the AssertionError says whether the supervisor still runs and, if it
        does, holds its threads' stacks (a silent log: a hang, or a kill from outside)."""
        found = self._wait_for(name, timeout, since, match)
        if found is not None:
            return found
        state = self._diagnose()
        with self.cond:
            tail = "".join(self.raw[-80:])
        raise AssertionError(f"{self.name}: no {name} within {timeout}s ({state}); "
                             f"log tail:\n{tail}")

    def no_event(self, name: str, duration: float, since: int = 0) -> None:
        """Wait `duration` s; AssertionError as soon as the log has an event `name`."""
        found = self._wait_for(name, duration, since, lambda e: True)
        assert found is None, f"{self.name}: unexpected {name}: {found}"

    def _wait_for(self, name: str, timeout: float, since: int,
                  match: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for e in self.lines[since:]:
                    if e.get("event") == name and match(e):
                        return e
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def _diagnose(self) -> str:
        """Is the supervisor still running, and in what state? A running one is asked
        for its threads' stacks (SIGUSR2: faulthandler, see supervisor.daemon); they land
        in the log tail."""
        if self.proc is None:
            return "not started"
        code = self.proc.poll()
        if code is not None:
            return (f"supervisor killed by signal {-code}" if code < 0
                    else f"supervisor exited with status {code}")
        try:
            pid = self.supervisor_pid()
            status = psutil.Process(pid).status()
        except (psutil.Error, AssertionError, OSError, ValueError) as e:
            return f"supervisor pid {self.proc.pid} running ({type(e).__name__})"
        if status not in (psutil.STATUS_STOPPED, psutil.STATUS_ZOMBIE):
            mark = len(self.raw)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGUSR2)
                with self.cond:
                    # the main thread's stack ends in runpy (started with -m)
                    self.cond.wait_for(lambda: any("_run_module_as_main" in line
                                                   for line in self.raw[mark:]), 3.0)
        return f"supervisor still running, {status}"

    def mark(self) -> int:
        with self.cond:
            return len(self.lines)

    def output(self) -> str:
        """Everything the supervisor printed so far (its raw stdout, node output included)."""
        with self.cond:
            return "".join(self.raw)

    def state(self) -> str | None:
        with self.cond:
            for e in reversed(self.lines):
                if e.get("event") == "state_changed":
                    return str(e["to"])
        return None

    def health_port(self, timeout: float = 10.0) -> int:
        return int(self.wait_event("health_listening", timeout)["port"])

    def node_records(self) -> list[dict[str, Any]]:
        out = []
        for path in sorted(self.records.glob("*.json")):
            with contextlib.suppress(ValueError, OSError):
                out.append(json.loads(path.read_text()))
        return out

    def wait_node_up(self, timeout: float, since: int = 0) -> int:
        """Wait for `node_started` and for that node's first record; its pid."""
        pid = int(self.wait_event("node_started", timeout, since=since)["pid"])
        self.node_record(pid, timeout)
        return pid

    def node_record(self, pid: int, timeout: float = 5.0) -> dict[str, Any]:
        """The record of node `pid`, waiting for the node to write it (a node is seen
        alive from its exec, a little before its first record)."""
        found: list[dict[str, Any]] = []

        def written() -> bool:
            found[:] = [r for r in self.node_records() if int(r["pid"]) == pid]
            return bool(found)

        wait_until(written, timeout, message=f"{self.name}: record of node {pid}")
        return found[0]

    def assert_no_errors(self, *, running: bool = False) -> None:
        """No traceback and no event that means a bug (an unexpected exception inside a
        lease call or a node start, a node left at exit); with `running`, the
        supervisor has not exited either."""
        assert self.proc is not None
        if running:
            assert self.proc.poll() is None, (
                f"{self.name}: supervisor exited with {self.proc.returncode}; log tail:\n"
                + "".join(self.raw[-30:]))
        raw = self.output()
        assert "Traceback" not in raw, f"{self.name}: traceback in the output:\n{raw[-4000:]}"
        for bad in ("lease_call_error", "node_start_error", "node_spawn_failed",
                    "node_killed_on_exit"):
            assert not self.events(bad), f"{self.name}: logged {bad}: {self.events(bad)}"

    def live_nodes(self) -> list[int]:
        """Pids (as seen from here) of this host's live stand-in node processes."""
        return scan_nodes({self.name: str(self.records)})[self.name]

    def supervisor_pid(self) -> int:
        """The supervisor's pid as seen from here (under unshare: the forked child)."""
        assert self.proc is not None
        if not self.pid_namespace:
            return self.proc.pid
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(psutil.Error):
                for child in psutil.Process(self.proc.pid).children():
                    if "supervisor" in " ".join(child.cmdline()):
                        return child.pid
            time.sleep(0.01)
        raise AssertionError(f"{self.name}: no supervisor under unshare")

    def exit_code(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.supervisor_pid(), sig)

    def tree(self) -> list[psutil.Process]:
        """Every live process this host started (found by the test tag)."""
        found = []
        for p in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if p.environ().get("CORDA_HA_TEST_TAG") == self.tag:
                    found.append(p)
        return found

    # ------------------------------------------------------------ what it says it does

    def status(self) -> tuple[float, dict[str, Any]]:
        """(our monotonic time of the answer, the supervisor's /status as JSON)."""
        before = time.monotonic()
        code, body = http_get(self.health_port(), "/status")
        after = time.monotonic()
        assert code == 200, body
        return (before + after) / 2, json.loads(body)

    def renewal_sent_at(self) -> float | None:
        """When (our monotonic clock, the supervisor's too) this host sent its last
        successful renewal, from /status; None before the first."""
        at, st = self.status()
        age = st.get("last_renewal_age")
        if age is None:
            return None
        return at - float(st["loop_age_seconds"]) - float(age)

    def guard(self) -> psutil.Process:
        """The guard: the supervisor's child process running `supervisor.node.guard`."""
        assert self.proc is not None
        for child in psutil.Process(self.proc.pid).children():
            try:
                if "supervisor.node.guard" in " ".join(child.cmdline()):
                    return child
            except psutil.Error:
                continue
        raise AssertionError(f"{self.name}: no guard process found")


@dataclass
class EditedHost(Host):
    """A Host whose config text is passed through `edit` after `write_config()`."""

    edit: Callable[[str], str] | None = None

    def write_config(self) -> None:
        super().write_config()
        if self.edit is not None:
            self.config_path.write_text(self.edit(self.config_path.read_text()))


def lease_off(text: str) -> str:
    """Config edit: `on = true` -> `on = false` (plain supervision, no lease)."""
    assert "on = true" in text
    return text.replace("on = true", "on = false", 1)



def http_get(port: int, path: str) -> tuple[int, bytes]:
    """GET `path` from 127.0.0.1:`port`: (status, body), an HTTP error status included."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def log_seconds(event: dict[str, Any]) -> float:
    """A log event's timestamp (ISO 8601 UTC, written by the supervisor) as POSIX seconds."""
    return datetime.fromisoformat(str(event["timestamp"])).timestamp()
