"""The chaos runner: randomised fault episodes over real supervisors.

Setup (`ChaosCluster`)
----------------------
- Its own database (tests/chaos/db.py `ChaosDb`): a PostgreSQL primary with a
  streaming replica, under libfaketime when installed; each host reaches it
  through its own proxies (one per server) and a multi-host URL.
- Two or three hosts (tests/harness/host.py `Host`s: real `python -m supervisor run`
  processes) with the intervals of one timing profile (tests/chaos/profile.py:
  `lab` or `corda`). The node is tests/chaos/hb_node.py, which records its
  heartbeats in `<host root>/records/<pid>.jsonl` (the records of a partitioned
  host survive; the record names its host, so a node behind a wrapper script or
  a `setsid` is still the host's).
- A "systemd" thread restarts any supervisor that exits (`restart_delay` after
  the exit), except while a fault holds that host (`Systemd.hold`).

An episode (`ChaosRun.episode`)
-------------------------------
1. The cluster is stable: exactly one node beating, for 1 s, every supervisor up.
2. One fault (tests/chaos/faults.py, faults_shape.py) is injected, held, healed.
3. Wait (at most 45 s) until the cluster is stable again.
4. Check the records of [previous stable point, this stable point]
   (tests/chaos/analysis.py) with the load measured meanwhile
   (tests/chaos/load.py): overlaps, the W rule, kill deadlines, availability
   with a load-derived bound, the fault's own expectations.

Randomness: the run's seed and the profile pick the fault sequence; episode k
draws its parameters from `random.Random(f"{seed}:{profile}:{k}")`, so
`--seed S --profile P --episode K` replays one episode's fault with the same
parameters on a fresh cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import psycopg

from tests.chaos.analysis import EpisodeReport, Violation, analyse, availability_ratio
from tests.chaos.db import ChaosDb, HostLink
from tests.chaos.durability import Committed, Durability, Unseen, Write, unseen_windows
from tests.chaos.episode import Injected, role
from tests.chaos.faults import catalog
from tests.chaos.load import LoadMonitor
from tests.chaos.patroni import PatroniChaosDb
from tests.chaos.profile import Profile
from tests.chaos.records import RecordTail
from tests.chaos.report import RunReport
from tests.chaos.writes import ChaosWrites, Writes
from tests.harness.cluster import Cluster, add_edited
from tests.harness.host import Host

HB_NODE = str(Path(__file__).with_name("hb_node.py"))
SETTLE = 1.0  # stable = exactly one running node for this long
STABLE_TIMEOUT = 45.0
WRAPPER = """#!/bin/sh
# A node start script that forks the node instead of exec'ing it.
"$@"
status=$?
exit $status
"""

Log = Callable[[str], None]


# ------------------------------------------------------------------ "systemd"


class Exit:
    def __init__(self, host: str, at: float, code: int | None, expected: bool) -> None:
        self.host, self.at, self.code, self.expected = host, at, code, expected

    def as_dict(self) -> dict[str, Any]:
        return {"host": self.host, "at": self.at, "code": self.code, "expected": self.expected}

    def __repr__(self) -> str:
        return f"Exit({self.host}, code={self.code}, expected={self.expected})"


class Systemd:
    """Restarts supervisors that exit (Restart=always), `delay` after the exit."""

    def __init__(self, hosts: Sequence[Host], log: Log, delay: float) -> None:
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


def edit_config(text: str, command: list[str], profile: Profile) -> str:
    """A tests/harness/host.py host config with the node `command` and the profile's
    operationTimeout (the Host writes U, W and stopTimeout itself)."""
    out = []
    replaced = False
    for line in text.splitlines(keepends=True):
        if line.strip().startswith("command = ") and not replaced:
            line = f"  command = {json.dumps(command)}\n"
            replaced = True
        elif line.strip().startswith("operationTimeout = "):
            line = f"  operationTimeout = {profile.operation_timeout_ms}ms\n"
        out.append(line)
    assert replaced, "no node command line in the config"
    return "".join(out)


class ChaosCluster:
    """The database, proxies, hosts and the restarter of one chaos run."""

    def __init__(self, root: Path, n_hosts: int, log: Log, profile: Profile, *,
                 replica: bool = True, writes: Writes = "off", patroni: bool = False) -> None:
        if not 2 <= n_hosts <= 3:
            raise ValueError("2 or 3 hosts")
        self.root = root
        self.log = log
        self.profile = profile
        self.with_replica = replica
        self.patroni = patroni
        self.writes_mode: Writes = writes
        self.writes: ChaosWrites | None = None
        self.run_id = uuid.uuid4().hex
        self.lease_name = f"chaos-{self.run_id[:12]}"
        self.n_hosts = n_hosts
        self.db: ChaosDb | PatroniChaosDb
        self.proxies: dict[str, HostLink] = {}
        self.cluster: Cluster
        self.hosts: list[Host] = []
        self.tails: dict[str, RecordTail] = {}
        self.node_args: dict[str, list[str]] = {}
        self.node_prefix: dict[str, list[str]] = {}
        self.systemd: Systemd
        self.wrapper_script = root / "node-wrapper.sh"
        self.wall_offset = time.time() - time.monotonic()

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        p = self.profile
        self.root.mkdir(parents=True, exist_ok=True)
        self.wrapper_script.write_text(WRAPPER)
        self.wrapper_script.chmod(0o755)
        self.db = PatroniChaosDb() if self.patroni else ChaosDb(replica=self.with_replica)
        if self.writes_mode != "off":
            self.writes = ChaosWrites(self.db, list("abc"[: self.n_hosts]), self.run_id,
                                      fencing=self.writes_mode == "fenced",
                                      lease_name=self.lease_name)
            self.writes.set_up()
        self.cluster = Cluster(self.root, self.db.dsn, self.lease_name)
        self.cluster.audit_dsns = None  # checked episode by episode (ChaosRun.episode)
        for name in "abc"[: self.n_hosts]:
            link = self.db.link()
            self.proxies[name] = link
            self.node_args[name], self.node_prefix[name] = [], []
            host = add_edited(self.cluster, name, self._edit_for(name),
                              dsn=self.db.host_dsn(link), env={"CHAOS_RUN_ID": self.run_id},
                              update_ms=p.update_ms, wait_ms=p.wait_ms, stop_ms=p.stop_ms)
            self.hosts.append(host)
            self.tails[name] = RecordTail(host.records, name)
        self.systemd = Systemd(self.hosts, self.log, p.restart_delay)
        first, *rest = self.hosts
        first.start()
        first.wait_event("node_started", 30)
        for h in rest:
            h.start()
        for h in rest:
            h.wait_event("lease_seen", 30)
        self.systemd.start()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.systemd.stop()
        try:
            if hasattr(self, "cluster"):
                self.cluster.close()
        finally:
            if hasattr(self, "db"):
                self.db.destroy()

    def _edit_for(self, name: str) -> Callable[[str], str]:
        def edit(text: str) -> str:
            host = next(h for h in self.hosts if h.name == name)
            command = [*self.node_prefix[name], sys.executable, HB_NODE, "--host", name,
                       "--record", str(host.records), *self.node_args[name]]
            if self.writes is None:
                return edit_config(text, command, self.profile)
            command += self.writes.node_args(name, str(host.root / "writes.log"))
            return edit_config(text, command, self.profile) + self.writes.conf(name)

        return edit

    # -- observation -----------------------------------------------------------------------

    def live_pids(self, host: Host) -> list[int]:
        """Pids (as the nodes see them) of the host's nodes that beat now."""
        tail = self.tails[host.name]
        tail.poll()
        return tail.running(time.monotonic())

    def node_pids(self, host: Host) -> list[int]:
        """Our pids of the host's nodes that beat now (another PID namespace resolved)."""
        tail = self.tails[host.name]
        return [tail.outer_pid(pid) for pid in self.live_pids(host)]

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

    def renewals(self, host: Host) -> list[float]:
        """Send times (monotonic) of every successful renewal and acquisition logged."""
        with host.cond:
            return [float(e["sent_at"]) for e in host.lines
                    if e.get("event") in ("lease_renewed", "lease_acquired") and "sent_at" in e]

    def acquisitions(self, host: Host) -> list[float]:
        """Send times (monotonic) of every successful acquisition logged."""
        with host.cond:
            return [float(e["sent_at"]) for e in host.lines
                    if e.get("event") == "lease_acquired" and "sent_at" in e]

    def wait_renewal(self, host: Host, timeout: float) -> dict[str, Any] | None:
        """Wait for the host's next successful renewal (its log line); None after `timeout`."""
        mark = host.mark()
        try:
            return host.wait_event("lease_renewed", timeout, since=mark)
        except AssertionError:
            return None

    def process_tree(self, host: Host) -> list[psutil.Process]:
        """The supervisor and its descendants (guard, node; under unshare: unshare first)."""
        if host.proc is None:
            return []
        try:
            top = psutil.Process(host.proc.pid)
            return [top, *top.children(recursive=True)]
        except psutil.Error:
            return []

    def guard_pid(self, host: Host) -> int | None:
        for p in self.process_tree(host)[1:]:
            if role(p) == "guard":
                return p.pid
        return None

    def stray_nodes(self, host: Host) -> list[int]:
        """Live stand-in node processes the host started that are not under its current
        supervisor (orphans of a killed supervisor and guard)."""
        mine = {p.pid for p in self.process_tree(host)}
        found = []
        for p in host.tree():
            with contextlib.suppress(psutil.Error):
                if (p.pid not in mine and role(p) in ("node", "wrapper")
                        and p.status() != psutil.STATUS_ZOMBIE):
                    found.append(p.pid)
        return found

    def kill_strays(self, host: Host) -> None:
        for pid in self.stray_nodes(host):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

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

    def supervisor_pid(self, host: Host) -> int | None:
        """The running supervisor's pid (under `unshare --fork`: its child, not unshare)."""
        if host.proc is None:
            return None
        args = host.proc.args
        if not isinstance(args, list) or args[0] != "unshare":
            return host.proc.pid
        if host.proc.poll() is not None:
            return None
        try:
            return host.supervisor_pid()
        except AssertionError:
            return None

    def signal_supervisor(self, host: Host, sig: signal.Signals) -> None:
        pid = self.supervisor_pid(host)
        if pid is None:
            return
        if sig in (signal.SIGKILL, signal.SIGTERM):
            with self.systemd.lock:
                self.systemd.expect_exit.add(host.name)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

    def wait_exit(self, host: Host, timeout: float) -> int | None:
        """Wait for the supervisor to exit; SIGKILL it after `timeout`. Its exit code."""
        assert host.proc is not None
        try:
            return host.proc.wait(timeout)
        except Exception:
            self.log(f"  ! supervisor {host.name} did not exit within {timeout:.1f}s: SIGKILL")
            for p in reversed(self.process_tree(host)[:2]):
                with contextlib.suppress(psutil.Error):
                    p.kill()
            return host.proc.wait(10)

    def restart_supervisor(self, host: Host, **changes: Any) -> None:
        """SIGTERM (graceful stop), wait, apply `changes` to the Host (e.g.
        machine_name, pid_namespace), start again."""
        with self.systemd.hold(host):
            if host.proc is not None and host.proc.poll() is None:
                self.signal_supervisor(host, signal.SIGTERM)
                self.wait_exit(host, self.profile.S + 10.0)
            with self.systemd.lock:
                self.systemd.expect_exit.discard(host.name)
            for k, v in changes.items():
                setattr(host, k, v)
            host.start()

    def reconfigure_active(self, active: Host, args: list[str],
                           prefix: list[str] | None = None) -> Host | None:
        """SIGKILL the active supervisor and start it again at once with another node
        command (`args` for hb_node, `prefix` before it): it takes its own lease back.
        Returns the host that is active afterwards (None: not stable within 20 s)."""
        with self.systemd.hold(active):
            self.signal_supervisor(active, signal.SIGKILL)
            self.wait_exit(active, 5.0)
            self.node_args[active.name] = list(args)
            self.node_prefix[active.name] = list(prefix or [])
            active.start()
        return self.wait_stable(20.0)

    def heal_all(self) -> None:
        """Undo anything a fault may have left behind (after a failed episode)."""
        for link in self.proxies.values():
            link.set_mode("pass")
        for h in self.hosts:
            h.reading.set()
            for proc in h.tree():
                with contextlib.suppress(psutil.Error):
                    proc.resume()
            self.kill_strays(h)
        self.db.ensure_up()

    def compact_logs(self) -> None:
        """Forget the nodes' output lines (a chattering node's megabytes)."""
        for h in self.hosts:
            with h.cond:
                h.lines[:] = [e for e in h.lines if e.get("event") != "node_output"]
                h.raw[:] = [r for r in h.raw if '"node_output"' not in r]

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


# ------------------------------------------------------------------ the run


def plan(seed: int, profile: str, episodes: int, kinds: Sequence[str], *,
         cover: bool = True) -> list[str]:
    """The fault sequence: with `cover`, every kind once (shuffled) before random ones."""
    rng = random.Random(f"{seed}:{profile}")
    out: list[str] = []
    while len(out) < episodes:
        if cover:
            batch = list(kinds)
            rng.shuffle(batch)
            out += batch
        else:
            out.append(rng.choice(list(kinds)))
    return out[:episodes]


def episode_rng(seed: int, profile: str, index: int) -> random.Random:
    return random.Random(f"{seed}:{profile}:{index}")


class ChaosRun:
    """Runs episodes of one profile on one ChaosCluster; see the module docstring."""

    def __init__(self, root: Path, *, seed: int, profile: Profile, hosts: int = 2,
                 log: Log = print, short_cut_max: float | None = None, replica: bool = True,
                 load: LoadMonitor | None = None, writes: Writes = "off",
                 patroni: bool = False) -> None:
        self.root = root
        self.seed = seed
        self.profile = profile
        self.log = log
        self.catalog = catalog(profile, short_cut_max, patroni=patroni)
        self.ch = ChaosCluster(root, hosts, log, profile, replica=replica, writes=writes,
                               patroni=patroni)
        self.durability = Durability(self.ch.lease_name)
        self.reports: list[EpisodeReport] = []
        self.orphans: list[str] = []
        self.setup_s = 0.0
        self.load = load

    def kinds(self, only: Sequence[str] | None = None) -> list[str]:
        names = list(only) if only else list(self.catalog)
        for n in names:
            if n not in self.catalog:
                raise ValueError(f"unknown fault {n!r}; one of {sorted(self.catalog)}")
        patroni = isinstance(self.ch.db, PatroniChaosDb)
        skipped = [n for n in names
                   if (self.catalog[n].needs_faketime and self.ch.db.faketime is None)
                   or (self.catalog[n].needs_replica and self.ch.db.replica is None)
                   or (self.catalog[n].needs_own_server and patroni)]
        if skipped:
            self.log(f"no libfaketime, no replica of our own (pg_basebackup) or the server "
                     f"is Patroni's: skipping {skipped}")
        return [n for n in names if n not in skipped]

    def run(self, *, episodes: int = 20, only: Sequence[str] | None = None,
            replay: int | None = None, budget_s: float | None = None) -> RunReport:
        """Run `episodes` episodes of the seed's plan (over `only`, default all
        fault types), or with `replay=K` just episode K of that plan."""
        t_start = time.monotonic()
        own_load = self.load is None
        load = self.load or LoadMonitor()
        if own_load:
            load.start()
        try:
            self.ch.start()
            self.setup_s = time.monotonic() - t_start
            kinds = self.kinds(only)
            first_index = 0
            seq = plan(self.seed, self.profile.name,
                       episodes if replay is None else replay + 1, kinds)
            if replay is not None:
                seq, first_index = seq[replay:], replay
            self.log(f"chaos: seed {self.seed}, {len(seq)} episodes, {self.ch.n_hosts} hosts, "
                     f"{self.profile.describe()}; faketime "
                     f"{'on' if self.ch.db.faketime else 'off'}, replica "
                     f"{'on' if self.ch.db.replica else 'off'}, setup {self.setup_s:.1f}s")
            stable_at = time.monotonic()
            active = self.ch.wait_stable()
            if active is None:
                raise RuntimeError("the chaos cluster never became stable")
            for i, kind in enumerate(seq, start=first_index):
                if budget_s is not None and time.monotonic() - t_start > budget_s:
                    self.log(f"time budget {budget_s:.0f}s used up after {len(self.reports)} "
                             "episodes")
                    break
                report, active = self.episode(i, kind, stable_at, active, load)
                stable_at = report.end
                self.reports.append(report)
            self.orphans = self.ch.orphans()
        finally:
            exits = list(self.ch.systemd.exits) if hasattr(self.ch, "systemd") else []
            self.ch.close()
            if own_load:
                load.stop()
        db = getattr(self.ch, "db", None)
        return RunReport(self.seed, self.profile, self.ch.n_hosts, self.reports,
                         time.monotonic() - t_start, self.setup_s,
                         db is not None and db.faketime is not None, exits, self.orphans,
                         replica=db is not None and db.replica is not None,
                         writes=self.ch.writes_mode)

    def episode(self, index: int, kind: str, begin: float, active: Host | None,
                load: LoadMonitor) -> tuple[EpisodeReport, Host | None]:
        ch = self.ch
        rng = episode_rng(self.seed, self.profile.name, index)
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
        figures_load = load.window(begin, end)
        lost, committed = self.committed_writes()
        result, violations, figures = analyse(
            index, inj, begin, end, records, before, profile=self.profile, load=figures_load,
            renewals={h.name: ch.renewals(h) for h in ch.hosts},
            acquisitions={h.name: ch.acquisitions(h) for h in ch.hosts}, committed=committed,
            unseen=self.unseen())
        violations += [Violation(index, kind, "uncommitted write",
                                 f"acted on but never committed: {w}", w.sent_at)
                       for w in lost]
        figures["writes_unverifiable"] = self.durability.unverifiable
        self.count_late_writes(index, kind, end, violations, figures)
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
        ch.compact_logs()
        failover = result.failover[0] if result.failover else None
        rep = EpisodeReport(
            index=index, fault=kind, profile=self.profile.name, host=inj.host,
            start=inj.start, end=end, duration_s=end - begin, params=inj.params,
            failover_s=None if failover is None else round(failover, 3),
            overlaps=len(result.overlaps), frozen_overlap_ms=figures.pop("frozen_overlap_ms"),
            longest_gap_s=figures.pop("longest_gap_s"), gap_limit_s=figures.pop("gap_limit_s"),
            availability=availability_ratio(result), load=figures_load.as_dict(),
            figures=figures, violations=violations, result=result)
        self.log(self.describe(rep))
        for t in ch.tails.values():
            t.prune(begin - 5.0)
        if new_active is None:
            ch.heal_all()
        return rep, new_active

    def unseen(self) -> Unseen:
        """Where each host dropped log lines (tests/chaos/durability.py)."""
        lines = {}
        for h in self.ch.hosts:
            with h.cond:
                lines[h.name] = [e for e in h.lines if e.get("event") == "log_records_dropped"]
        return unseen_windows(lines, self.ch.wall_offset)

    def committed_writes(self) -> tuple[list[Write], Committed]:
        """The renewal-durability check (tests/chaos/durability.py) against the current
        primary's audit; retried once on a connection error (a server just restarted)."""
        ch = self.ch
        lines = {}
        for h in ch.hosts:
            with h.cond:
                lines[h.name] = list(h.lines)
        for attempt in (1, 2):
            try:
                return self.durability.check(ch.db.dsn, lines, ch.db.promoted_at)
            except psycopg.Error as e:
                if attempt == 2:
                    raise
                self.log(f"  ! audit not read ({e}); again after the database is up")
                ch.db.ensure_up()
        raise AssertionError("unreachable")

    def count_late_writes(self, index: int, kind: str, at: float,
                          violations: list[Violation], figures: dict[str, Any]) -> None:
        """Late writes of this episode into `figures`; with fencing any is a violation."""
        writes = self.ch.writes
        if writes is None:
            return
        try:
            late, written, which = writes.late_writes()
        except psycopg.Error as e:
            figures["late_writes"] = None
            self.log(f"  ! late writes not counted: {e}")
            return
        figures["late_writes"] = late
        figures["writes"] = written
        if not written:
            violations.append(Violation(index, kind, "no_writes", "the nodes wrote nothing "
                                        "in this episode: late writes cannot be seen", at,
                                        invariant=False))
        if late and writes.fencing:
            violations.append(Violation(index, kind, "late_write",
                                        f"{late} writes of an old node landed after a newer "
                                        f"node's first write: {which}", at))

    def describe(self, e: EpisodeReport) -> str:
        fo = "-" if e.failover_s is None else f"{e.failover_s:.3f}s"
        params = " ".join(f"{k}={v}" for k, v in e.params.items())
        figs = " ".join(f"{k}={v}" for k, v in e.figures.items())
        status = "ok" if not e.violations else "; ".join(
            f"{v.what.upper()}: {v.detail.splitlines()[0]}" for v in e.violations)
        frozen = f" frozen_overlap_ms={e.frozen_overlap_ms}" if e.frozen_overlap_ms else ""
        return (f"[seed {self.seed} {e.profile} ep {e.index:3d}] {e.fault:<20} "
                f"host={e.host or '*'} {params} {figs} failover={fo} "
                f"gap={e.longest_gap_s:.2f}s/{e.gap_limit_s:.2f}s "
                f"load=sched_p99 {e.load['sched_p99'] * 1000:.1f}ms "
                f"max {e.load['sched_max'] * 1000:.0f}ms spawn {e.load['spawn']:.2f}s "
                f"{e.duration_s:.1f}s{frozen} -> {status}")
