"""The chaos runner: randomised fault episodes over real supervisors (issue 3).

Setup (`ChaosCluster`)
----------------------
- Its own PostgreSQL (`PgServer`, own data directory and port), started under
  libfaketime when it is installed, so that the `clock_jump` fault can move the
  database clock (`FAKETIME_TIMESTAMP_FILE`, `FAKETIME_NO_CACHE=1`; the
  monotonic clock is left alone).
- Two or three hosts (tests/cluster.py `Host`s: real `python -m supervisor run`
  processes), each reaching the database through its own `FaultProxy`. The node
  is tests/chaos/hb_node.py, which writes its heartbeats *directly* to the
  database (not through the proxy) and to `<host root>/records/<pid>.jsonl`, so
  the records of a partitioned host survive. U = 0.5 s, W = 2 s, stopTimeout
  0.5 s, as in the other end-to-end tests.
- A "systemd" thread restarts any supervisor that exits (1 s after it exited,
  `RestartSec` scaled down to the test's intervals), except while a fault holds
  that host (`Systemd.hold`).

An episode (`ChaosRun.episode`)
-------------------------------
1. The cluster is stable: exactly one node beating, for 1 s, every supervisor up.
2. One fault (tests/chaos/faults.py) is injected, held and healed.
3. Wait (at most 45 s) until the cluster is stable again.
4. Check the records of [previous stable point, this stable point] with the
   checker (tests/chaos/checker.py): overlaps (outside the frozen-VM case they
   are violations), availability inside the healthy windows (the episode minus
   the intervals when the database was unreachable for every host) and the
   longest time with no node inside them (a violation when above W + 1 s), the
   failover time, and the fault's own expectation (e.g. a short blackhole must
   not cost the node).

Randomness: the run's seed picks the fault sequence; episode k draws its
parameters from `random.Random(seed * 1_000_003 + k)`, so `--seed S --episode K`
replays one episode's fault with the same parameters on a fresh cluster.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from tests.chaos import checker
from tests.chaos.checker import EpisodeResult, Fault, NodeRun, Overlap, Record
from tests.chaos.faults import SLACK, Injected, M, S, U, W, catalog
from tests.cluster import Cluster, Host, add_edited
from tests.faultproxy import FaultProxy
from tests.pgserver import PgServer, PgServerError, find_bindir
from tests.proc import pid_alive

HB_NODE = str(Path(__file__).with_name("hb_node.py"))
FAKETIME_LIBS = ("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
                 "/usr/lib/faketime/libfaketime.so.1",
                 "/usr/local/lib/faketime/libfaketime.so.1")
FRESH = 0.25  # a node is running when its last record is younger than this
SETTLE = 1.0  # stable = exactly one running node for this long
STABLE_TIMEOUT = 45.0
RESTART_DELAY = 1.0  # the runner's systemd RestartSec
AVAIL_BOUND = W + 1.0  # a node must run within this whenever a healthy host + DB are up

Interval = tuple[float, float]
Log = Callable[[str], None]


def find_faketime() -> str | None:
    """Path of libfaketime.so.1, or None when it is not installed."""
    return next((p for p in FAKETIME_LIBS if os.path.exists(p)), None)


# ------------------------------------------------------------------ database


class ChaosDb:
    """The chaos suite's own PostgreSQL, under libfaketime when available."""

    def __init__(self) -> None:
        bindir = find_bindir()
        if bindir is None:
            raise PgServerError("no PostgreSQL server binaries (apt-get install postgresql)")
        self.faketime = find_faketime()
        self.offset = 0.0
        # the timestamp file must be readable by the server's user (postgres)
        self._dir = tempfile.mkdtemp(prefix="corda-ha-chaos-ft-")
        os.chmod(self._dir, 0o755)
        self.ts_file = os.path.join(self._dir, "faketime")
        self._write_offset()
        env: dict[str, str] = {}
        if self.faketime is not None:
            env = {"LD_PRELOAD": self.faketime, "FAKETIME_TIMESTAMP_FILE": self.ts_file,
                   "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
        self.server = PgServer.create(bindir, env=env)

    @property
    def dsn(self) -> str:
        return self.server.dsn

    def _write_offset(self) -> None:
        tmp = self.ts_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{self.offset:+.3f}s\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.ts_file)

    def clock_offset(self) -> float:
        """The database clock minus ours, in seconds (measured)."""
        before = time.time()
        ((db,),) = self.server.execute("SELECT extract(epoch FROM clock_timestamp())")
        return float(db) - (before + time.time()) / 2

    def jump(self, seconds: float) -> None:
        """Move the database clock by `seconds` (forward when positive)."""
        if self.faketime is None:
            raise RuntimeError("libfaketime is not installed")
        self.offset += seconds
        self._write_offset()

    def lease_back(self, lease_name: str, seconds: float) -> int:
        """Set the lease row's renewed_at and expires_at back by `seconds`."""
        rows = self.server.execute(
            "UPDATE corda_ha_lease SET renewed_at = renewed_at - make_interval(secs => %s),"
            " expires_at = expires_at - make_interval(secs => %s) WHERE lease_name = %s"
            " RETURNING epoch", (seconds, seconds, lease_name))
        return len(rows)

    def ensure_up(self) -> None:
        try:
            self.server.execute("SELECT 1")
        except Exception:
            self.server.start()

    def destroy(self) -> None:
        self.server.destroy()
        shutil.rmtree(self._dir, ignore_errors=True)


# ------------------------------------------------------------------ node records


@dataclass
class _File:
    offset: int = 0
    partial: bytes = b""
    last_mono: float = -math.inf
    last_kind: str = ""
    done: bool = False
    checked: float = 0.0
    size: int = 0


class RecordTail:
    """Reads the `<pid>.jsonl` files hb_node writes in one directory, incrementally."""

    def __init__(self, directory: Path, host: str) -> None:
        self.directory = directory
        self.host = host
        self.files: dict[int, _File] = {}
        self.records: list[Record] = []
        self.lock = threading.Lock()

    def poll(self) -> None:
        now = time.monotonic()
        with self.lock:
            try:
                entries = list(os.scandir(self.directory))
            except FileNotFoundError:
                return
            for entry in entries:
                if not entry.name.endswith(".jsonl"):
                    continue
                try:
                    pid = int(entry.name[:-6])
                except ValueError:
                    continue
                f = self.files.setdefault(pid, _File())
                if f.done and now - f.checked < 1.0:
                    continue
                f.checked = now
                self._read(entry.path, f)
                if not f.done and (f.last_kind == "stop" or not pid_alive(pid)):
                    self._read(entry.path, f)  # whatever it wrote before dying
                    f.done = True
                elif f.done and f.last_kind != "stop" and pid_alive(pid):
                    f.done = False  # pid reused by a new node

    def _read(self, path: str, f: _File) -> None:
        try:
            with open(path, "rb") as fh:
                fh.seek(f.offset)
                data = fh.read()
        except OSError:
            return
        if not data:
            return
        f.offset += len(data)
        data = f.partial + data
        lines = data.split(b"\n")
        f.partial = lines.pop()
        for line in lines:
            try:
                rec = checker.record_from_mapping(json.loads(line))
            except (ValueError, KeyError, TypeError):
                continue
            self.records.append(rec)
            if rec.mono >= f.last_mono:
                f.last_mono, f.last_kind = rec.mono, rec.kind

    def running(self, now: float) -> list[int]:
        """Pids whose node beat within FRESH seconds and is alive."""
        with self.lock:
            return [pid for pid, f in self.files.items()
                    if not f.done and f.last_kind != "stop" and now - f.last_mono < FRESH
                    and pid_alive(pid)]

    def between(self, a: float, b: float) -> list[Record]:
        with self.lock:
            return [r for r in self.records if a <= r.mono <= b]

    def prune(self, before: float) -> None:
        with self.lock:
            self.records = [r for r in self.records if r.mono >= before]


# ------------------------------------------------------------------ "systemd"


@dataclass
class Exit:
    host: str
    at: float
    code: int | None
    expected: bool


class Systemd:
    """Restarts supervisors that exit (Restart=always), RESTART_DELAY after the exit."""

    def __init__(self, hosts: Sequence[Host], log: Log, delay: float = RESTART_DELAY) -> None:
        self.hosts = list(hosts)
        self.delay = delay
        self.log = log
        self.lock = threading.RLock()
        self._held: dict[str, int] = {}
        self._exited: dict[str, float] = {}
        self.expect_exit: set[str] = set()
        self.exits: list[Exit] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-systemd", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    @contextlib.contextmanager
    def hold(self, host: Host) -> Iterator[None]:
        """Do not restart `host` meanwhile (the caller manages its process)."""
        with self.lock:
            self._held[host.name] = self._held.get(host.name, 0) + 1
        try:
            yield
        finally:
            with self.lock:
                self._held[host.name] -= 1
                self._exited.pop(host.name, None)
                self.expect_exit.discard(host.name)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            with self.lock:
                for h in self.hosts:
                    if self._held.get(h.name) or h.proc is None:
                        continue
                    code = h.proc.poll()
                    if code is None:
                        continue
                    now = time.monotonic()
                    if h.name not in self._exited:
                        self._exited[h.name] = now
                        expected = h.name in self.expect_exit
                        self.expect_exit.discard(h.name)
                        self.exits.append(Exit(h.name, now, code, expected))
                        if not expected:
                            self.log(f"  ! supervisor {h.name} exited with {code} unexpectedly")
                    if now - self._exited[h.name] >= self.delay:
                        del self._exited[h.name]
                        h.start()


# ------------------------------------------------------------------ the cluster


class ChaosCluster:
    """PostgreSQL, proxies, hosts and the restarter of one chaos run."""

    def __init__(self, root: Path, n_hosts: int, log: Log) -> None:
        if not 2 <= n_hosts <= 3:
            raise ValueError("2 or 3 hosts")
        self.root = root
        self.log = log
        self.run_id = uuid.uuid4().hex
        self.lease_name = f"chaos-{self.run_id[:12]}"
        self.n_hosts = n_hosts
        self.db: ChaosDb
        self.proxies: dict[str, FaultProxy] = {}
        self.cluster: Cluster
        self.hosts: list[Host] = []
        self.tails: dict[str, RecordTail] = {}
        self.node_args: dict[str, list[str]] = {}
        self.systemd: Systemd
        self.wall_offset = time.time() - time.monotonic()

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self.db = ChaosDb()
        self.cluster = Cluster(self.root, self.db.dsn, self.lease_name)
        for name in "abc"[: self.n_hosts]:
            proxy = FaultProxy(self.db.server.host, self.db.server.port)
            self.proxies[name] = proxy
            self.node_args[name] = []
            host = add_edited(self.cluster, name, self._edit_for(name),
                              dsn=self.db.server.dsn_via("127.0.0.1", proxy.port),
                              env={"CHAOS_RUN_ID": self.run_id})
            self.hosts.append(host)
            self.tails[name] = RecordTail(host.records, name)
        self.systemd = Systemd(self.hosts, self.log)
        first, *rest = self.hosts
        first.start()
        first.wait_event("node_started", 20)
        for h in rest:
            h.start()
        for h in rest:
            h.wait_event("lease_seen", 20)
        self.systemd.start()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.systemd.stop()
        try:
            if hasattr(self, "cluster"):
                self.cluster.close()
        finally:
            for p in self.proxies.values():
                with contextlib.suppress(Exception):
                    p.close()
            if hasattr(self, "db"):
                self.db.destroy()

    def _edit_for(self, name: str) -> Callable[[str], str]:
        def edit(text: str) -> str:
            host = next(h for h in self.hosts if h.name == name)
            command = [sys.executable, HB_NODE, "--dsn", self.db.dsn, "--host", name,
                       "--record", str(host.records), *self.node_args[name]]
            out = []
            replaced = False
            for line in text.splitlines(keepends=True):
                if line.strip().startswith("command = ") and not replaced:
                    line = f"  command = {json.dumps(command)}\n"
                    replaced = True
                out.append(line)
            assert replaced, "no node command line in the config"
            return "".join(out)

        return edit

    # -- observation -----------------------------------------------------------------------

    def live_pids(self, host: Host) -> list[int]:
        tail = self.tails[host.name]
        tail.poll()
        return tail.running(time.monotonic())

    def live(self) -> dict[str, list[int]]:
        return {h.name: self.live_pids(h) for h in self.hosts}

    def supervisors_up(self) -> bool:
        return all(h.proc is not None and h.proc.poll() is None for h in self.hosts)

    def wait_stable(self, timeout: float = STABLE_TIMEOUT) -> Host | None:
        """Wait until exactly one node runs (for SETTLE s) and every supervisor is up;
        return the active host, or None after `timeout`."""
        deadline = time.monotonic() + timeout
        since: float | None = None
        holder: Host | None = None
        while time.monotonic() < deadline:
            live = self.live()
            running = [h for h in self.hosts if live[h.name]]
            ok = (len(running) == 1 and len(live[running[0].name]) == 1
                  and self.supervisors_up())
            now = time.monotonic()
            if ok and holder is running[0] and since is not None:
                if now - since >= SETTLE:
                    return holder
            elif ok:
                holder, since = running[0], now
            else:
                holder, since = None, None
            time.sleep(0.02)
        return None

    def events_since(self, host: Host, mark: int, name: str) -> list[dict[str, Any]]:
        with host.cond:
            return [e for e in host.lines[mark:] if e.get("event") == name]

    def process_tree(self, host: Host) -> list[psutil.Process]:
        """The supervisor and its descendants (guard, node)."""
        assert host.proc is not None
        try:
            top = psutil.Process(host.proc.pid)
            return [top, *top.children(recursive=True)]
        except psutil.Error:
            return []

    def guard_pid(self, host: Host) -> int | None:
        for p in self.process_tree(host)[1:]:
            with contextlib.suppress(psutil.Error):
                if "supervisor.guard" in " ".join(p.cmdline()):
                    return p.pid
        return None

    def orphans(self) -> list[str]:
        """Processes a host started that are no longer under its current supervisor."""
        found = []
        for h in self.hosts:
            mine = {p.pid for p in self.process_tree(h)}
            for p in h.tree():
                if p.pid not in mine:
                    with contextlib.suppress(psutil.Error):
                        if p.status() != psutil.STATUS_ZOMBIE:
                            found.append(f"{h.name}: pid {p.pid} {' '.join(p.cmdline())[:80]}")
        return found

    # -- control ---------------------------------------------------------------------------

    def signal_supervisor(self, host: Host, sig: signal.Signals) -> None:
        if host.proc is None:
            return
        if sig in (signal.SIGKILL, signal.SIGTERM):
            with self.systemd.lock:
                self.systemd.expect_exit.add(host.name)
        with contextlib.suppress(ProcessLookupError):
            os.kill(host.proc.pid, sig)

    def wait_exit(self, host: Host, timeout: float) -> int | None:
        """Wait for the supervisor to exit; SIGKILL it after `timeout`. Its exit code."""
        assert host.proc is not None
        try:
            return host.proc.wait(timeout)
        except Exception:
            self.log(f"  ! supervisor {host.name} did not exit within {timeout:.1f}s: SIGKILL")
            host.proc.kill()
            return host.proc.wait(10)

    def restart_supervisor(self, host: Host) -> None:
        """SIGTERM (graceful stop), wait, start again with the current settings."""
        with self.systemd.hold(host):
            if host.proc is not None and host.proc.poll() is None:
                self.signal_supervisor(host, signal.SIGTERM)
                self.wait_exit(host, S + 10.0)
            with self.systemd.lock:
                self.systemd.expect_exit.discard(host.name)
            host.start()

    def heal_all(self) -> None:
        """Undo anything a fault may have left behind (after a failed episode)."""
        for p in self.proxies.values():
            p.set_mode("pass")
        for h in self.hosts:
            for proc in h.tree():
                with contextlib.suppress(psutil.Error):
                    proc.resume()
        self.db.ensure_up()

    def log_excerpt(self, start: float, end: float, per_host: int = 40) -> dict[str, list[str]]:
        """Each host's log lines with timestamps in [start, end] (monotonic seconds)."""
        out: dict[str, list[str]] = {}
        lo, hi = start + self.wall_offset, end + self.wall_offset
        for h in self.hosts:
            with h.cond:
                raw = list(h.raw)
            picked = []
            for line in raw:
                try:
                    ts = datetime.fromisoformat(json.loads(line)["timestamp"]).timestamp()
                except (ValueError, KeyError, TypeError):
                    continue
                if lo <= ts <= hi:
                    picked.append(line.rstrip())
            out[h.name] = picked[-per_host:]
        return out


# ------------------------------------------------------------------ analysis


@dataclass
class Violation:
    """One broken promise (or a fault's broken expectation)."""

    episode: int
    fault: str
    what: str
    detail: str
    at: float
    logs: dict[str, list[str]] = field(default_factory=dict)
    invariant: bool = True  # False: an expectation of the fault, not the invariant


@dataclass
class EpisodeReport:
    index: int
    fault: str
    host: str | None
    start: float
    end: float
    duration_s: float
    params: dict[str, Any]
    failover_s: float | None
    overlaps: int
    frozen_overlap_ms: list[float]
    longest_gap_s: float
    availability: float | None
    violations: list[Violation]
    result: EpisodeResult


def complement(windows: Sequence[Interval], covered: Sequence[Interval]) -> list[Interval]:
    """Parts of `windows` not covered by `covered` (both merged first)."""
    out: list[Interval] = []
    cov = checker.merge_intervals(covered)
    for a, b in checker.merge_intervals(windows):
        x = a
        for c, d in cov:
            if d <= x or c >= b:
                continue
            if c > x:
                out.append((x, c))
            x = max(x, d)
            if x >= b:
                break
        if x < b:
            out.append((x, b))
    return out


def alive_set(runs: Sequence[NodeRun]) -> list[Interval]:
    return checker.merge_intervals(s for r in runs for s in r.segments)


def analyse(index: int, inj: Injected, begin: float, end: float, records: list[Record],
            active_before: tuple[str, int] | None) -> tuple[EpisodeResult, list[Violation],
                                                             dict[str, Any]]:
    """Check one episode's records (pure). Returns the checker's result (overlaps
    limited to this episode, frozen-VM ones included), the violations, and figures."""
    runs = checker.build_runs(records)
    ovs = [o for o in checker.overlaps(runs) if o.end > begin]
    windows = complement([(begin, end)], inj.unhealthy)
    fault = Fault(inj.kind, inj.start, inj.end, inj.host, until=end)
    result = EpisodeResult(fault=inj.kind, overlaps=tuple(ovs),
                           availability=checker.availability_detail(runs, windows),
                           failover=tuple(checker.failover_times(runs, [fault])))
    violations: list[Violation] = []
    frozen: list[Overlap] = []
    for o in ovs:
        allowed = inj.allowed_overlap
        if (allowed is not None and not o.same_host
                and allowed[0] in (o.a.host, o.b.host) and allowed[1] <= o.start <= allowed[2]):
            frozen.append(o)
            continue
        violations.append(Violation(index, inj.kind, "overlap",
                                    f"{o.a} and {o.b} both alive for {o.duration_ms:.1f} ms "
                                    f"at {o.start - inj.start:+.3f}s from the fault",
                                    o.start))
    gaps = complement(windows, alive_set(runs))
    longest = max(gaps, key=lambda g: g[1] - g[0], default=(begin, begin))
    gap_s = longest[1] - longest[0]
    if gap_s > AVAIL_BOUND:
        violations.append(Violation(index, inj.kind, "availability",
                                    f"no node for {gap_s:.3f}s (> W + 1 s) while a healthy "
                                    f"host and the database were up, from "
                                    f"{longest[0] - inj.start:+.3f}s after the fault",
                                    longest[0]))
    if inj.expect_no_failover:
        started = [r for r in runs if r.first > inj.start]
        kept = active_before is not None and any(
            r.key.host == active_before[0] and r.key.pid == active_before[1]
            and r.alive_until >= end - 0.5 for r in runs)
        if started or not kept:
            violations.append(Violation(
                index, inj.kind, "expectation",
                f"the node did not survive a {inj.params.get('actual_s')}s blackhole: "
                f"new runs {[str(r.key) for r in started]}", inj.start, invariant=False))
    if inj.expect_all_down is not None:
        a, b = inj.expect_all_down
        up = checker.intersect(alive_set(runs), [(a, b)]) if b > a else []
        if up:
            violations.append(Violation(
                index, inj.kind, "expectation",
                f"a node ran while the database was unreachable for everyone: {up[:3]}",
                up[0][0], invariant=False))
    figures = {"frozen_overlap_ms": [round(o.duration_ms, 1) for o in frozen],
               "longest_gap_s": round(gap_s, 3)}
    return result, violations, figures


# ------------------------------------------------------------------ the run


@dataclass
class RunReport:
    seed: int
    hosts: int
    episodes: list[EpisodeReport]
    runtime_s: float
    setup_s: float
    faketime: bool
    exits: list[Exit]
    orphans: list[str]

    @property
    def violations(self) -> list[Violation]:
        return [v for e in self.episodes for v in e.violations]

    def rows(self) -> list[checker.SummaryRow]:
        per: dict[str, list[EpisodeResult]] = {}
        for e in self.episodes:
            per.setdefault(e.fault, []).append(e.result)
        return checker.summarise(per, total=True)

    def table(self) -> str:
        return checker.format_table(self.rows())

    def short_blackhole_summary(self) -> str:
        eps = [e for e in self.episodes if e.fault == "blackhole_short"]
        if not eps:
            return ""
        ok = [float(e.params["actual_s"]) for e in eps
              if not any(v.what == "expectation" for v in e.violations)]
        bad = [float(e.params["actual_s"]) for e in eps
               if any(v.what == "expectation" for v in e.violations)]
        return (f"short blackhole: {len(ok)}/{len(eps)} kept the node; longest kept "
                f"{max(ok, default=0):.3f}s; shortest lost "
                f"{min(bad) if bad else '-'}")

    def frozen_summary(self) -> str:
        eps = [e for e in self.episodes if e.fault == "freeze_host"]
        if not eps:
            return ""
        ms = [x for e in eps for x in e.frozen_overlap_ms]
        return (f"frozen VM: {len(eps)} episodes, {len(ms)} overlaps after SIGCONT, "
                f"longest {max(ms, default=0.0):.1f} ms")

    def to_json(self) -> str:
        data = json.loads(checker.to_json(self.rows()))

        def ep(e: EpisodeReport) -> dict[str, Any]:
            return {"index": e.index, "fault": e.fault, "host": e.host,
                    "duration_s": round(e.duration_s, 3), "params": e.params,
                    "failover_s": e.failover_s, "overlaps": e.overlaps,
                    "frozen_overlap_ms": e.frozen_overlap_ms,
                    "longest_gap_s": e.longest_gap_s, "availability": e.availability,
                    "violations": [asdict(v) for v in e.violations]}

        data.update(seed=self.seed, hosts=self.hosts, runtime_s=round(self.runtime_s, 1),
                    setup_s=round(self.setup_s, 1), faketime=self.faketime,
                    intervals={"U": U, "W": W, "stopTimeout": S, "M": M, "slack": SLACK},
                    machine={"cpus": os.cpu_count()},
                    episodes=[ep(e) for e in self.episodes],
                    supervisor_exits=[asdict(x) for x in self.exits],
                    orphans=self.orphans)
        return json.dumps(data, indent=2, default=str)


def plan(seed: int, episodes: int, kinds: Sequence[str], *, cover: bool = True) -> list[str]:
    """The fault sequence: with `cover`, every kind once (shuffled) before random ones."""
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < episodes:
        if cover:
            batch = list(kinds)
            rng.shuffle(batch)
            out += batch
        else:
            out.append(rng.choice(list(kinds)))
    return out[:episodes]


def episode_rng(seed: int, index: int) -> random.Random:
    return random.Random(seed * 1_000_003 + index)


class ChaosRun:
    """Runs episodes on one ChaosCluster; see the module docstring."""

    def __init__(self, root: Path, *, seed: int, hosts: int = 2, log: Log = print,
                 short_blackhole_max: float = 0.65) -> None:
        self.root = root
        self.seed = seed
        self.log = log
        self.catalog = catalog(short_blackhole_max)
        self.ch = ChaosCluster(root, hosts, log)
        self.reports: list[EpisodeReport] = []
        self.orphans: list[str] = []
        self.setup_s = 0.0

    def kinds(self, only: Sequence[str] | None = None) -> list[str]:
        names = list(only) if only else list(self.catalog)
        for n in names:
            if n not in self.catalog:
                raise ValueError(f"unknown fault {n!r}; one of {sorted(self.catalog)}")
        if self.ch.db.faketime is None:
            skipped = [n for n in names if self.catalog[n].needs_faketime]
            if skipped:
                self.log(f"libfaketime not installed: skipping {skipped}")
            names = [n for n in names if not self.catalog[n].needs_faketime]
        return names

    def run(self, *, episodes: int = 20, only: Sequence[str] | None = None,
            replay: int | None = None, budget_s: float | None = None) -> RunReport:
        """Run `episodes` episodes of the seed's plan (over `only`, default all
        fault types), or with `replay=K` just episode K of that plan."""
        t_start = time.monotonic()
        try:
            self.ch.start()
            self.setup_s = time.monotonic() - t_start
            kinds = self.kinds(only)
            first_index = 0
            seq = plan(self.seed, episodes if replay is None else replay + 1, kinds)
            if replay is not None:
                seq, first_index = seq[replay:], replay
            self.log(f"chaos: seed {self.seed}, {len(seq)} episodes, {self.ch.n_hosts} hosts, "
                     f"U={U}s W={W}s stopTimeout={S}s M={M}s, faketime "
                     f"{'on' if self.ch.db.faketime else 'off'}, setup {self.setup_s:.1f}s")
            stable_at = time.monotonic()
            active = self.ch.wait_stable()
            if active is None:
                raise RuntimeError("the chaos cluster never became stable")
            for i, kind in enumerate(seq, start=first_index):
                if budget_s is not None and time.monotonic() - t_start > budget_s:
                    self.log(f"time budget {budget_s:.0f}s used up after {len(self.reports)} "
                             "episodes")
                    break
                report, active = self.episode(i, kind, stable_at, active)
                stable_at = report.end
                self.reports.append(report)
            self.orphans = self.ch.orphans()
        finally:
            exits = list(self.ch.systemd.exits) if hasattr(self.ch, "systemd") else []
            self.ch.close()
        return RunReport(self.seed, self.ch.n_hosts, self.reports,
                         time.monotonic() - t_start, self.setup_s,
                         self.ch.db.faketime is not None, exits, self.orphans)

    def episode(self, index: int, kind: str, begin: float,
                active: Host | None) -> tuple[EpisodeReport, Host | None]:
        ch = self.ch
        rng = episode_rng(self.seed, index)
        if active is None:
            active = ch.wait_stable()
        if active is None:
            ch.heal_all()
            active = ch.wait_stable() or ch.hosts[0]
        pids = ch.live_pids(active)
        before = (active.name, pids[0]) if pids else None
        marks = {h.name: len(h.raw) for h in ch.hosts}
        t0 = time.monotonic()
        try:
            inj = self.catalog[kind].inject(ch, rng, active)
        except Exception as e:  # the fault itself failed: report it, heal, go on
            self.log(f"  ! fault {kind} raised {e!r}")
            inj = Injected(kind, active.name, t0, time.monotonic(),
                           params={"error": repr(e)})
            ch.heal_all()
        new_active = ch.wait_stable()
        end = time.monotonic()
        records = [r for t in ch.tails.values() for r in t.between(begin - 1.0, end)]
        result, violations, figures = analyse(index, inj, begin, end, records, before)
        if new_active is None:
            violations.append(Violation(index, kind, "unstable",
                                        f"not exactly one node within {STABLE_TIMEOUT:.0f}s "
                                        f"after the fault: {ch.live()}", end))
        for h in ch.hosts:
            with h.cond:
                new = "".join(h.raw[marks[h.name]:])
            if "Traceback" in new:
                violations.append(Violation(index, kind, "traceback",
                                            f"{h.name} printed a traceback:\n"
                                            f"{new[new.index('Traceback'):][:2000]}",
                                            t0, invariant=False))
        for v in violations:
            if not v.logs:
                v.logs = ch.log_excerpt(min(v.at, inj.start) - 3.0, v.at + 1.5)
        failover = result.failover[0] if result.failover else None
        rep = EpisodeReport(
            index=index, fault=kind, host=inj.host, start=inj.start, end=end,
            duration_s=end - begin, params=inj.params,
            failover_s=None if failover is None else round(failover, 3),
            overlaps=len(result.overlaps), frozen_overlap_ms=figures["frozen_overlap_ms"],
            longest_gap_s=figures["longest_gap_s"],
            availability=None if math.isnan(result.availability.ratio)
            else round(result.availability.ratio, 4),
            violations=violations, result=result)
        self.log(self.describe(rep))
        for t in ch.tails.values():
            t.prune(begin - 5.0)
        if new_active is None:
            ch.heal_all()
        return rep, new_active

    def describe(self, e: EpisodeReport) -> str:
        fo = "-" if e.failover_s is None else f"{e.failover_s:.3f}s"
        params = " ".join(f"{k}={v}" for k, v in e.params.items())
        status = "ok" if not e.violations else "; ".join(
            f"{v.what.upper()}: {v.detail.splitlines()[0]}" for v in e.violations)
        frozen = f" frozen_overlap_ms={e.frozen_overlap_ms}" if e.frozen_overlap_ms else ""
        return (f"[seed {self.seed} ep {e.index:3d}] {e.fault:<20} host={e.host or '*'} "
                f"{params} failover={fo} gap={e.longest_gap_s:.2f}s "
                f"{e.duration_s:.1f}s{frozen} -> {status}")


def format_violations(report: RunReport) -> str:
    """Every violation with its seed, episode and log lines."""
    out = []
    for v in report.violations:
        kind = "INVARIANT" if v.invariant else "expectation"
        out.append(f"--- {kind} violation: seed {report.seed} episode {v.episode} "
                   f"({v.fault}): {v.what}: {v.detail}")
        for host, lines in v.logs.items():
            out.append(f"  log of {host}:")
            out += [f"    {line}" for line in lines]
    return "\n".join(out)
