"""End-to-end harness: supervisors as real processes, a stand-in node, a watcher.

Each `Host` is one supervisor process (`python -m supervisor run`) with its own
config file, machine name and node record directory. Every process a host
starts carries `CORDA_HA_TEST_TAG` in its environment, so teardown finds and
SIGKILLs all of them (supervisor, guard, node, grandchildren) even when the
supervisor was SIGKILLed and its children were re-parented.

A host's live nodes are found by scanning /proc for stand-in node processes
whose command line names the host's record directory (`scan_nodes`): a node
counts from the moment its process exists (exec), not from its first record,
wherever it sits in the process tree (a wrapper's child, a setsid'ed child,
another PID namespace) and whatever pid it thinks it has.
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
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from tests.proc import wait_until

FAKE_NODE = str(Path(__file__).with_name("fake_node.py"))
NODE_MARK = b"fake_node.py"

REPO = str(Path(__file__).resolve().parent.parent)

U_MS, W_MS, STOP_MS = 500, 2000, 500

#: "1": `Cluster.close` first SIGTERMs every supervisor still running and waits for it,
#: so that processes measured by coverage write their data (tests/coverage_report.py).
GRACEFUL_TEARDOWN_ENV = "CORDA_HA_TEST_GRACEFUL_TEARDOWN"
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
    def config_path(self) -> Path:
        return self.root / "supervisor.conf"

    def write_config(self) -> None:
        self.records.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, FAKE_NODE, "--record", str(self.records), *self.node_args]
        self.config_path.write_text(f"""
mutualExclusionConfiguration {{
  on = true
  machineName = "{self.machine_name or self.name}"
  updateInterval = {self.update_ms}
  waitInterval = {self.wait_ms}
}}
database {{
  url = "{self.dsn}"
  leaseName = "{self.lease_name}"
  connectTimeout = 2s
  operationTimeout = 400ms
}}
node {{
  command = {json.dumps(command)}
  workingDirectory = "{self.root}"
  stopTimeout = {self.stop_ms}ms
}}
restart {{
  initialDelay = 200ms
  multiplier = 2
  maxDelay = 1s
  resetAfter = 30s
  maxCrashes = 3
  window = 30s
  cooldown = 30s
}}
health {{
  enabled = true
  host = "127.0.0.1"
  port = 0
}}
logging {{
  format = json
  level = DEBUG
}}
{self.extra_conf}
""")

    def start(self) -> None:
        self.write_config()
        env = dict(os.environ, CORDA_HA_TEST_TAG=self.tag, PYTHONPATH=REPO)
        env.pop("NOTIFY_SOCKET", None)
        env.update(self.env)
        prefix = ["unshare", "--pid", "--fork", "--mount-proc"] if self.pid_namespace else []
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
        """Block until the log has an event `name` (after the first `since` lines)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for e in self.lines[since:]:
                    if e.get("event") == name and match(e):
                        return e
                left = deadline - time.monotonic()
                if left <= 0:
                    tail = "".join(self.raw[-30:])
                    raise AssertionError(f"{self.name}: no {name} within {timeout}s; log tail:\n"
                                         f"{tail}")
                self.cond.wait(left)

    def mark(self) -> int:
        with self.cond:
            return len(self.lines)

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


def scan_nodes(record_dirs: dict[str, str]) -> dict[str, list[int]]:
    """One pass over /proc: per host name, the pids of live stand-in nodes whose
    command line names that host's record directory. Zombies have no command line."""
    wanted = {name: os.fsencode(d) for name, d in record_dirs.items()}
    found: dict[str, list[int]] = {name: [] for name in record_dirs}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if not any(a.endswith(NODE_MARK) for a in argv[:3]):
            continue
        for name, directory in wanted.items():
            if directory in argv:
                found[name].append(int(entry.name))
    return found


class Watcher:
    """Samples every host's live nodes every few ms; records any overlap.

    It holds itself to its interval: `assert_never_two` fails when two samples
    were ever further apart than `max_gap` (a watcher that stalls could miss an
    overlap), or when it never sampled. `scans` keeps (start, end) of every scan;
    an overlap is recorded with its scan's end time (tests/test_watcher.py shows
    that it catches a 10 ms overlap).
    """

    def __init__(self, hosts: list[Host], interval: float = 0.005,
                 max_gap: float = 0.1) -> None:
        self.hosts = hosts
        self.interval = interval
        self.max_gap = max_gap
        self.overlaps: list[tuple[float, dict[str, list[int]]]] = []
        self.samples = 0
        self.longest_gap = 0.0
        self.scans: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        last: float | None = None
        while not self._stop.is_set():
            began = time.monotonic()
            alive = scan_nodes({h.name: str(h.records) for h in list(self.hosts)})
            now = time.monotonic()
            self.scans.append((began, now))
            if last is not None:
                self.longest_gap = max(self.longest_gap, now - last)
            last = now
            self.samples += 1
            if sum(len(v) for v in alive.values()) > 1:
                self.overlaps.append((now, alive))
            self._stop.wait(self.interval)

    def assert_never_two(self) -> None:
        assert self.samples > 0, "the watcher never sampled"
        assert not self.overlaps, f"two nodes ran at once: {self.overlaps[:3]}"
        assert self.longest_gap <= self.max_gap, (
            f"the watcher stalled for {self.longest_gap:.3f} s (limit {self.max_gap} s): "
            "an overlap could have gone unseen")


class Cluster:
    """Hosts sharing one lease; `close()` kills everything they started."""

    def __init__(self, root: Path, dsn: str, lease_name: str) -> None:
        self.root = root
        self.dsn = dsn
        self.lease_name = lease_name
        self.hosts: list[Host] = []

    def add(self, name: str, node_args: list[str] | None = None, **kw: Any) -> Host:
        kw.setdefault("dsn", self.dsn)
        host = Host(name=name, root=self.root / name, lease_name=self.lease_name,
                    tag=f"{name}-{uuid.uuid4().hex}", node_args=node_args or [], **kw)
        self.hosts.append(host)
        return host

    def live(self) -> dict[str, list[int]]:
        return {h.name: h.live_nodes() for h in self.hosts}

    def active(self, timeout: float) -> Host:
        """Wait until exactly one host has a live node; return it."""
        found: list[Host] = []

        def one() -> bool:
            found[:] = [h for h in self.hosts if h.live_nodes()]
            return len(found) == 1

        wait_until(one, timeout, message="exactly one live node")
        return found[0]

    def close(self) -> None:
        if os.environ.get(GRACEFUL_TEARDOWN_ENV) == "1":
            self._stop_gracefully()
        for host in self.hosts:
            host.reading.set()  # let the reader drain to EOF
            procs = host.tree()
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    p.resume()
                with contextlib.suppress(psutil.Error):
                    p.kill()
            psutil.wait_procs(procs, timeout=5)
            if host.proc is not None:
                with contextlib.suppress(Exception):
                    host.proc.kill()
                with contextlib.suppress(Exception):
                    host.proc.wait(5)
        for host in self.hosts:
            left = host.tree()
            assert not left, f"{host.name}: processes survived teardown: {left}"


    def _stop_gracefully(self, timeout: float = 10.0) -> None:
        """SIGTERM (after SIGCONT) every supervisor still running; wait for them, bounded.
        Whatever is left is SIGKILLed by `close` as always."""
        running = [h for h in self.hosts if h.proc is not None and h.proc.poll() is None
                   and not h.pid_namespace]
        for host in running:
            host.reading.set()
            for p in host.tree():
                with contextlib.suppress(psutil.Error):
                    p.resume()
            assert host.proc is not None
            with contextlib.suppress(OSError):
                os.kill(host.proc.pid, signal.SIGTERM)
        end = time.monotonic() + timeout
        for host in running:
            assert host.proc is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                host.proc.wait(max(0.0, end - time.monotonic()))


@contextlib.contextmanager
def cluster(root: Path, dsn: str, lease_name: str) -> Iterator[Cluster]:
    c = Cluster(root, dsn, lease_name)
    try:
        yield c
    finally:
        c.close()


def start_pair(c: Cluster, b_args: list[str] | None = None,
               a_args: list[str] | None = None) -> tuple[Host, Host]:
    """Start a, wait until it is active, then start b (standby)."""
    a = c.add("a", a_args)
    b = c.add("b", b_args)
    a.start()
    a.wait_node_up(15)
    b.start()
    # b has read the row (held by a) at least once
    b.wait_event("lease_seen", 15, match=lambda e: e["holder"] == "a")
    return a, b


def http_get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# --------------------------------------------------------------------------- additions
# Helpers for tests that need a config the plain Host cannot write (e.g. on = false).


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


def add_edited(c: Cluster, name: str, edit: Callable[[str], str],
               node_args: list[str] | None = None, **kw: Any) -> EditedHost:
    """Like `Cluster.add`, but the host's config is rewritten by `edit`."""
    kw.setdefault("dsn", c.dsn)
    host = EditedHost(name=name, root=c.root / name, lease_name=c.lease_name,
                      tag=f"{name}-{uuid.uuid4().hex}", node_args=node_args or [], edit=edit,
                      **kw)
    c.hosts.append(host)
    return host


def run_cli(*args: str, timeout: float = 60.0,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m supervisor ARGS...` to completion; stdout and stderr captured."""
    full_env = dict(os.environ, PYTHONPATH=REPO)
    full_env.pop("NOTIFY_SOCKET", None)
    if env:
        full_env.update(env)
    return subprocess.run([sys.executable, "-m", "supervisor", *args], capture_output=True,
                          text=True, timeout=timeout, env=full_env, cwd=REPO,
                          stdin=subprocess.DEVNULL)
