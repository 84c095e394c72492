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

from supervisor.node import cgroup as cgroups
from supervisor.node.sweep import node_key
from tests.harness import paths, renewal_audit
from tests.harness.nodescan import scan_nodes
from tests.harness.paths import FAKE_NODE
from tests.harness.proc import wait_until

REPO = str(paths.REPO)

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


class Watcher:
    """Watches every host's nodes; `assert_never_two` fails on any overlap.

    Two independent checks:

    - a sampling process (tests/harness/watcher_proc.py: its own process, SCHED_FIFO where
      allowed) scans /proc every `interval` s and reports any sample with more than
      one live node, counting a node from its exec. It holds itself to its interval:
      two samples further apart than `max_gap` fail the test, since an overlap could
      have gone unseen;
    - exact: every stand-in node holds the cluster's lock file (`--lock`) while it
      lives, and records it when another node holds it already.

    `hosts` may be replaced or appended to while it runs (checked every 10 ms).
    """

    def __init__(self, hosts: list[Host], interval: float = 0.005,
                 max_gap: float = 0.1) -> None:
        self.hosts = hosts
        self.interval = interval
        self.max_gap = max_gap
        self.overlaps: list[tuple[float, dict[str, list[int]]]] = []
        self.samples = 0
        self.longest_gap = 0.0
        self.realtime = False
        self._proc: subprocess.Popen[str] | None = None
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._feeder = threading.Thread(target=self._feed, daemon=True)

    def __enter__(self) -> Watcher:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.harness.watcher_proc", str(self.interval)], cwd=REPO,
            env=dict(os.environ, PYTHONPATH=REPO), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, start_new_session=True)
        self._send()
        self._reader.start()
        self._feeder.start()
        wait_until(lambda: self.samples > 0 or self._proc is None or self._proc.poll() is not None,
                   10, message="the watcher's first sample")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._feeder.join(5)
        proc = self._proc
        if proc is not None:
            with contextlib.suppress(OSError):
                assert proc.stdin is not None
                proc.stdin.close()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self._reader.join(5)

    def _dirs(self) -> dict[str, str]:
        return {h.name: str(h.records) for h in list(self.hosts)}

    def _send(self) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None:
            return
        with contextlib.suppress(OSError, ValueError):
            proc.stdin.write(json.dumps(self._dirs()) + "\n")
            proc.stdin.flush()

    def _feed(self) -> None:
        sent = self._dirs()
        while not self._stop.wait(0.01):
            now = self._dirs()
            if now != sent:
                self._send()
                sent = now

    def _read(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        for line in proc.stdout:
            with contextlib.suppress(ValueError):
                msg = json.loads(line)
                if "overlap" in msg:
                    self.overlaps.append((float(msg["overlap"]), msg["alive"]))
                else:
                    self.samples = int(msg["samples"])
                    self.longest_gap = float(msg["max_gap"])
                    self.realtime = bool(msg["rt"])

    def exact_overlaps(self) -> list[str]:
        """Lines the nodes wrote when they found another node holding the lock."""
        found: list[str] = []
        for lock in {h.lock_path for h in list(self.hosts)}:
            with contextlib.suppress(FileNotFoundError):
                found += Path(f"{lock}.overlaps").read_text().splitlines()
        return found

    def assert_never_two(self) -> None:
        exact = self.exact_overlaps()
        assert not exact, f"two nodes ran at once (node lock): {exact[:3]}"
        assert self.samples > 0, "the watcher never sampled"
        assert not self.overlaps, f"two nodes ran at once: {self.overlaps[:3]}"
        assert self.longest_gap <= self.max_gap, (
            f"the watcher stalled for {self.longest_gap:.3f} s (limit {self.max_gap} s, "
            f"realtime={self.realtime}): an overlap could have gone unseen")


class Cluster:
    """Hosts sharing one lease; `close()` kills everything they started."""

    def __init__(self, root: Path, dsn: str, lease_name: str) -> None:
        self.root = root
        self.dsn = dsn
        self.lease_name = lease_name
        self.hosts: list[Host] = []
        # where the lease writes are audited (tests/harness/renewal_audit.py): every server
        # that may have answered the lease statements; None: the owner checks it
        # itself (the chaos suite, episode by episode)
        self.audit_dsns: list[str] | None = [dsn]

    def add(self, name: str, node_args: list[str] | None = None, **kw: Any) -> Host:
        kw.setdefault("dsn", self.dsn)
        host = Host(name=name, root=self.root / name, lease_name=self.lease_name,
                    tag=f"{name}-{uuid.uuid4().hex}", node_args=node_args or [], **kw)
        self.hosts.append(host)
        return host

    def wait_member_ready(self, name: str, timeout: float = 10.0,
                          table: str = "corda_ha_lease") -> None:
        """Wait until host `name`'s member row says it could take over (what
        `handover` checks before it asks the holder to step down)."""
        import psycopg

        def ready() -> bool:
            with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
                row = conn.execute(
                    "SELECT bool_or(can_take_over AND last_seen > clock_timestamp() - "
                    f"interval '5 seconds') FROM {table}_member "
                    "WHERE lease_name = %s AND machine_name = %s",
                    (self.lease_name, name)).fetchone()
            return bool(row and row[0])

        wait_until(ready, timeout, interval=0.05, message=f"{name} ready to take over")

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
            # In rounds: a process forked between one snapshot and the kills (a node the
            # guard was just starting, a hook) is caught by the next round.
            for _ in range(5):
                procs = host.tree()
                if not procs:
                    break
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
        for host in self.hosts:
            remove_node_cgroups(host)
        self.assert_renewals_committed()

    def assert_renewals_committed(self) -> None:
        """The invariant of every end-to-end run: each acquisition and renewal a
        supervisor acted on was committed (tests/harness/renewal_audit.py)."""
        if self.audit_dsns is None:
            return
        lost: list[str] = []
        for lease in {h.lease_name for h in self.hosts}:
            lost += renewal_audit.violations(
                self.audit_dsns, lease,
                {h.name: list(h.lines) for h in self.hosts if h.lease_name == lease})
        assert not lost, f"lease writes acted on but not committed: {lost[:5]}"


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


def host_node_key(host: Host) -> str:
    """The node key a host's supervisor uses (see supervisor.node.sweep.node_key)."""
    return node_key(host.lease_name, host.machine_name or host.name, str(host.root))


def remove_node_cgroups(host: Host) -> None:
    """Remove the run cgroups a host's supervisor left (it was SIGKILLed, say)."""
    parent = cgroups.own_cgroup_dir()  # the supervisors' node.cgroup = auto parent
    if parent is None:
        return
    for path in cgroups.leftovers(parent, host_node_key(host)):
        with contextlib.suppress(OSError):
            cgroups.kill_and_remove(path, 5.0)


@contextlib.contextmanager
def cluster(root: Path, dsn: str, lease_name: str) -> Iterator[Cluster]:
    c = Cluster(root, dsn, lease_name)
    try:
        yield c
    finally:
        c.close()


def start_pair(c: Cluster, b_args: list[str] | None = None,
               a_args: list[str] | None = None, **kw: Any) -> tuple[Host, Host]:
    """Start a, wait until it is active, then start b (standby). `kw` goes to both
    hosts (e.g. update_ms, wait_ms, stop_ms)."""
    a = c.add("a", a_args, **kw)
    b = c.add("b", b_args, **kw)
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
