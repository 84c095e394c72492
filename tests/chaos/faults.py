"""The chaos suite's fault catalog: how each fault is injected, held and healed.

Every fault is a function `inject(ch, rng, active) -> Injected` (see
tests/chaos/episode.py for the contract and what a fault reports). The
intervals come from the run's profile (`ch.profile`, tests/chaos/profile.py):
hold times are multiples of its W, a short cut-off stays below its keep slack.
The faults of real pairs' production shapes (wrapper scripts, cloned host names,
a stalled guard, a lossy database failover, a stalled log sink) are in
tests/chaos/faults_shape.py.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from typing import TYPE_CHECKING, Any

import psutil
import psycopg

from tests.chaos import faults_shape
from tests.chaos import patroni as chaos_patroni
from tests.chaos.episode import (
    FaultSpec,
    HolderLost,
    Inject,
    Injected,
    role,
    sleep_until,
)
from tests.chaos.episode import now as _now
from tests.chaos.profile import Profile
from tests.harness.host import Host

if TYPE_CHECKING:
    from tests.chaos.runner import ChaosCluster


# ------------------------------------------------------------------ processes


def kill_supervisor(ch: ChaosCluster, rng: random.Random, active: Host) -> Injected:
    """SIGKILL the active supervisor. The guard sees its pipe close and kills the
    node; the runner restarts the supervisor (as systemd would) after a delay."""
    t0 = _now()
    ch.signal_supervisor(active, signal.SIGKILL)
    return Injected("kill_supervisor", active.name, t0, t0,
                    holder_lost=HolderLost(active.name, t0, t0, killed=False))


def kill_guard(ch: ChaosCluster, rng: random.Random, active: Host) -> Injected:
    """SIGKILL the active host's guard (the node dies by PR_SET_PDEATHSIG)."""
    guard = ch.guard_pid(active)
    t0 = _now()
    if guard is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(guard, signal.SIGKILL)
    return Injected("kill_guard", active.name, t0, t0, params={"guard_found": guard is not None})


def kill_node(ch: ChaosCluster, rng: random.Random, active: Host) -> Injected:
    """SIGKILL the active node; its supervisor restarts it (crash backoff)."""
    pids = ch.node_pids(active)
    t0 = _now()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return Injected("kill_node", active.name, t0, t0, params={"pids": pids})


def side_stall(ch: ChaosCluster, rng: random.Random, active: Host) -> Injected:
    """Side transactions hang and roll back while renewals are due: a session holds
    Corda's lock row (`row`: FOR UPDATE) or its whole table (`table`: ACCESS EXCLUSIVE)
    for W .. 2W, and the active host is asked to hand over meanwhile, so the new
    holder's node start (its database fence, then Corda's row) runs into the lock, waits
    to its lock or statement timeout and rolls back, while its renewals go on. The
    episode's renewal-durability check (every renewal acted on was committed) is the
    point; the node starts all the same (Corda's row failing only logs). A handover, not
    a kill: no crash is counted, so repeated episodes never make a crash loop."""
    variant = rng.choice(["row", "table"])
    hold = ch.profile.W * rng.uniform(1.0, 2.0)
    lock = ("SELECT 1 FROM node_mutual_exclusion WHERE mutual_exclusion_id = 'X' FOR UPDATE"
            if variant == "row" else "LOCK TABLE node_mutual_exclusion IN ACCESS EXCLUSIVE MODE")
    marks = {h.name: h.mark() for h in ch.hosts}
    with psycopg.connect(ch.db.dsn, connect_timeout=5) as conn:
        conn.execute(lock)  # a transaction, open until the hold ends
        t0 = _now()
        asked = ch.db.server.execute(
            "UPDATE corda_ha_lease SET handover_requested_at = clock_timestamp() "
            "WHERE lease_name = %s AND holder IS NOT NULL RETURNING holder", (ch.lease_name,))
        sleep_until(t0 + hold)
        conn.rollback()
    t1 = _now()
    # how often a side transaction hit the lock, and the renewals made meanwhile
    stalled = sum(len(ch.events_since(h, marks[h.name], "corda_lock_row_not_prepared"))
                  for h in ch.hosts)
    renewed = sum(1 for h in ch.hosts for e in ch.events_since(h, marks[h.name],
                                                               "lease_renewed")
                  if t0 <= float(e.get("sent_at", 0)) <= t1)
    return Injected("side_stall", active.name, t0, t1,
                    params={"variant": variant, "hold_s": round(hold, 3),
                            "handover_from": asked[0][0] if asked else None,
                            "side_rolled_back": stalled, "renewals_meanwhile": renewed})


def stop_supervisor(ch: ChaosCluster, rng: random.Random, active: Host) -> Injected:
    """SIGSTOP the active supervisor alone (a hung daemon) for more than W, then
    SIGCONT. Its guard kills the node at t + W - M; another host takes over."""
    hold = ch.profile.W + rng.uniform(0.3, 1.5)
    t0 = _now()
    ch.signal_supervisor(active, signal.SIGSTOP)
    try:
        sleep_until(t0 + hold)
    finally:
        ch.signal_supervisor(active, signal.SIGCONT)
    t1 = _now()
    return Injected("stop_supervisor", active.name, t0, t1,
                    holder_lost=HolderLost(active.name, t0, t1),
                    params={"hold_s": round(hold, 3)})


def _freeze(tree: list[psutil.Process], hold: float, waves: list[list[psutil.Process]],
            lag: float = 0.0) -> tuple[float, float]:
    """SIGSTOP `tree`, hold, then SIGCONT `waves` in order, `lag` s apart (every wave is
    continued, also when one fails); (frozen at, first continued at)."""
    t0 = _now()
    for p in tree:
        with contextlib.suppress(psutil.Error):
            p.suspend()
    t_cont = t0 + hold
    try:
        sleep_until(t0 + hold)
    finally:
        t_cont = _now()
        for i, wave in enumerate(waves):
            if i:
                with contextlib.suppress(Exception):
                    sleep_until(t_cont + lag * i)
            for p in wave:
                with contextlib.suppress(psutil.Error):
                    p.resume()
    return t0, t_cont


def freeze_host(ch: ChaosCluster, rng: random.Random, active: Host) -> Injected:
    """SIGSTOP the active host's whole process tree (supervisor, guard, node): a
    frozen VM. Held for more than W, then every process gets SIGCONT (in a random
    order). An overlap right after SIGCONT is the one case the design allows."""
    hold = ch.profile.W + rng.uniform(0.3, 1.5)
    tree = ch.process_tree(active)
    names = {p.pid: role(p) for p in tree}
    order = list(tree)
    rng.shuffle(order)
    t0, t_cont = _freeze(tree, hold, [order])
    return Injected("freeze_host", active.name, t0, t_cont,
                    allowed_overlap=(active.name, t_cont - 0.05, t_cont + 1.0),
                    holder_lost=HolderLost(active.name, t0, t_cont, killed=False),
                    params={"hold_s": round(hold, 3),
                            "resume_order": [names[p.pid] for p in order]})


def freeze_host_node_first(ch: ChaosCluster, rng: random.Random, active: Host) -> Injected:
    """As `freeze_host`, in the worst order: the node alone continues first, and the
    supervisor and guard follow 0.1-0.4 s later (a host whose stall ends unevenly). The
    old node runs meanwhile; with database fencing none of its writes may land."""
    hold = ch.profile.W + rng.uniform(0.3, 1.5)
    lag = rng.uniform(0.1, 0.4)
    tree = ch.process_tree(active)
    nodes = [p for p in tree if role(p) == "node"]
    rest = [p for p in tree if p not in nodes]
    t0, t_cont = _freeze(tree, hold, [nodes, rest], lag)
    return Injected("freeze_host_node_first", active.name, t0, t_cont,
                    allowed_overlap=(active.name, t_cont - 0.05, t_cont + lag + 1.0),
                    holder_lost=HolderLost(active.name, t0, t_cont, killed=False),
                    params={"hold_s": round(hold, 3), "node_alone_s": round(lag, 3)})


# ------------------------------------------------------------------ database


def _pg_restart(mode: str) -> Inject:
    def inject(ch: ChaosCluster, rng: random.Random, active: Host) -> Injected:
        extra = rng.uniform(0.0, 1.0)
        t0 = _now()
        try:
            ch.db.server.stop(mode)  # type: ignore[arg-type]  # "fast" | "immediate"
            t_down = _now()
            time.sleep(extra)
        finally:
            ch.db.server.start()
        t1 = _now()
        return Injected(f"pg_restart_{mode}", None, t0, t1, unhealthy=[(t0, t1)],
                        params={"down_s": round(t1 - t0, 3), "stop_s": round(t_down - t0, 3)})

    inject.__doc__ = f"PostgreSQL restart (`pg_ctl stop -m {mode}`, up to 1 s down, start)."
    return inject


def db_unreachable_all(ch: ChaosCluster, rng: random.Random, active: Host) -> Injected:
    """Blackhole every host's proxies for more than W: every node stops (by
    t + W - M); when the database is back, exactly one starts."""
    w = ch.profile.W
    hold = w + rng.uniform(1.0, 2.0)
    t0 = _now()
    try:
        for p in ch.proxies.values():
            p.set_mode("blackhole")
        sleep_until(t0 + hold)
    finally:
        for p in ch.proxies.values():
            p.set_mode("pass")
    t1 = _now()
    return Injected("db_unreachable_all", None, t0, t1, unhealthy=[(t0, t1)],
                    expect_all_down=(t0 + w, t1),
                    holder_lost=HolderLost(active.name, t0, t1),
                    params={"hold_s": round(hold, 3)})


def clock_jump(ch: ChaosCluster, rng: random.Random, active: Host) -> Injected:
    """The database clock jumps forward by more than W (libfaketime timestamp
    file rewritten). No host may take the lease on the strength of the jump."""
    w = ch.profile.W
    jump = w + rng.uniform(1.0, 5.0)
    t0 = _now()
    ch.db.jump(jump)
    sleep_until(t0 + w + 1.0)
    return Injected("clock_jump", None, t0, t0,
                    params={"jump_s": round(jump, 3), "offset_s": round(ch.db.offset, 3),
                            "measured_offset_s": round(ch.db.clock_offset(), 2)})


def lease_back_in_time(ch: ChaosCluster, rng: random.Random, active: Host) -> Injected:
    """The lease row goes back 5 s behind the supervisors' backs (a database
    failover to a replica that lost the last renewals)."""
    t0 = _now()
    n = ch.db.lease_back(ch.lease_name, 5.0)
    sleep_until(t0 + ch.profile.W + 1.0)
    return Injected("lease_back_in_time", None, t0, t0, params={"rows": n})


# ------------------------------------------------------------------ network


def _cut(kind: str, mode: str, lo: float, hi: float, *, short: bool) -> Inject:
    """A cut-off of the active host from every server: `lo`..`hi` seconds (`short`),
    or W plus that (long)."""

    def inject(ch: ChaosCluster, rng: random.Random, active: Host) -> Injected:
        p = ch.profile
        phase = rng.uniform(0.0, p.U)  # random alignment with the renewals
        hold = rng.uniform(lo, hi) if short else p.W + rng.uniform(lo, hi)
        time.sleep(phase)
        link = ch.proxies[active.name]
        t0 = _now()
        try:
            link.set_mode(mode)  # type: ignore[arg-type]  # "blackhole" | "reset"
            sleep_until(t0 + hold)
        finally:
            link.set_mode("pass")
        t1 = _now()
        return Injected(kind, active.name, t0, t1, expect_no_failover=short,
                        cut_s=round(t1 - t0, 3) if short else None,
                        holder_lost=None if short else HolderLost(active.name, t0, t1),
                        params={"hold_s": round(hold, 3), "actual_s": round(t1 - t0, 3)})

    return inject


# ------------------------------------------------------------------ node and config faults


def fail_at_start(ch: ChaosCluster, rng: random.Random, active: Host) -> Injected:
    """The active supervisor is SIGKILLed and restarted with a node that fails at
    start: its crash loop ends in a release and a cooldown, and the lease goes to
    another host. Afterwards the host is restarted with a normal node."""
    t0 = _now()
    with ch.systemd.hold(active):
        ch.signal_supervisor(active, signal.SIGKILL)
        ch.wait_exit(active, 5.0)
        mark = active.mark()
        ch.node_args[active.name] = ["--fail-at-start"]
        active.start()
        deadline = _now() + 30.0
        moved_at: float | None = None
        while _now() < deadline:
            if any(ch.live_pids(h) for h in ch.hosts if h is not active):
                moved_at = _now()
                break
            time.sleep(0.02)
        t1 = _now()
        took_back = bool(ch.events_since(active, mark, "lease_acquired"))
        cooled = any(e.get("to") == "cooldown"
                     for e in ch.events_since(active, mark, "state_changed"))
        ch.node_args[active.name] = []
        ch.restart_supervisor(active)
    # The crash loop holds the lease by design (maxCrashes restarts with backoff
    # before the release): no other host can run a node meanwhile. That window
    # is reported as `moved_after_s` and left out of the availability check.
    return Injected("fail_at_start", active.name, t0, t1,
                    unhealthy=[(t0, moved_at if moved_at is not None else t1)],
                    params={"took_back": took_back, "cooldown": cooled,
                            "moved_after_s": None if moved_at is None
                            else round(moved_at - t0, 3)})


def ignore_sigterm(ch: ChaosCluster, rng: random.Random, active: Host) -> Injected:
    """The active host gets a node that ignores SIGTERM (its supervisor is
    SIGKILLed and restarted with it, and takes its lease back), then either it is
    cut off for more than W (`cutoff`) or its supervisor is stopped with SIGTERM
    (`shutdown`). Either way the node must be SIGKILLed before another starts."""
    p = ch.profile
    target = ch.reconfigure_active(active, ["--ignore-sigterm"])
    variant = rng.choice(["cutoff", "shutdown"])
    params: dict[str, Any] = {"variant": variant, "deaf_node_active": target is active}
    if target is None:
        target = active
    t0 = _now()
    lost = None
    if variant == "cutoff":
        hold = p.W + rng.uniform(0.5, 1.5)
        link = ch.proxies[target.name]
        try:
            link.set_mode("blackhole")
            sleep_until(t0 + hold)
        finally:
            link.set_mode("pass")
        params["hold_s"] = round(hold, 3)
        t1 = _now()
        lost = HolderLost(target.name, t0, t1)
    else:
        with ch.systemd.hold(target):
            ch.signal_supervisor(target, signal.SIGTERM)
            params["exit"] = ch.wait_exit(target, p.S + 10.0)
            t1 = _now()
            ch.node_args[target.name] = []
            target.start()
    if ch.node_args[active.name]:
        ch.node_args[active.name] = []
        ch.restart_supervisor(active)
    return Injected("ignore_sigterm", target.name, t0, t1, holder_lost=lost, params=params)


def same_machine_name(ch: ChaosCluster, rng: random.Random, active: Host) -> Injected:
    """A standby is restarted with the active host's machineName. Then, mostly,
    the active supervisor is SIGKILLed (both namesakes may now take the lease back
    as "the same machine": they share its identity). Afterwards the twin gets its
    own name back."""
    w = ch.profile.W
    standbys = [h for h in ch.hosts if h is not active]
    twin = rng.choice(standbys)
    variant = rng.choice(["kill_active", "kill_active", "hold"])
    t0 = _now()
    twin.machine_name = active.machine_name or active.name
    ch.restart_supervisor(twin)
    time.sleep(1.5 * w)
    t_kill = None
    if variant == "kill_active":
        t_kill = _now()
        ch.signal_supervisor(active, signal.SIGKILL)
        time.sleep(w + 1.0)
    t1 = _now()
    twin.machine_name = None
    ch.restart_supervisor(twin)
    return Injected("same_machine_name", active.name, t0 if t_kill is None else t_kill, t1,
                    holder_lost=None if t_kill is None else HolderLost(
                        active.name, t_kill, t_kill, killed=False, exempt=(twin.name,)),
                    params={"twin": twin.name, "variant": variant,
                            "kill_after_s": None if t_kill is None else round(t_kill - t0, 3)})


# ------------------------------------------------------------------ the catalog


def catalog(profile: Profile, short_cut_max: float | None = None, *,
            patroni: bool = False) -> dict[str, FaultSpec]:
    """Every fault type, by name, for `profile`'s intervals. `short_cut_max`
    overrides the longest short cut-off (default: the profile's). The Patroni faults
    (tests/chaos/patroni.py) only with `patroni`."""
    short = profile.short_cut_max if short_cut_max is None else short_cut_max
    specs = [
        FaultSpec("kill_supervisor", "SIGKILL of the active supervisor", kill_supervisor),
        FaultSpec("kill_guard", "SIGKILL of the active host's guard", kill_guard),
        FaultSpec("kill_node", "SIGKILL of the active node", kill_node),
        FaultSpec("side_stall", "Corda's lock row (or table) held W .. 2W across a handover: "
                  "side transactions hang and roll back beside renewals", side_stall),
        FaultSpec("stop_supervisor", "SIGSTOP of the active supervisor alone > W, SIGCONT",
                  stop_supervisor),
        FaultSpec("freeze_host", "SIGSTOP of the active host's whole tree > W, SIGCONT",
                  freeze_host),
        FaultSpec("freeze_host_node_first",
                  "as freeze_host, the node continued 0.1-0.4 s before its supervisor "
                  "and guard", freeze_host_node_first),
        FaultSpec("pg_restart_fast", "PostgreSQL restart -m fast", _pg_restart("fast"),
                  needs_own_server=True),
        FaultSpec("pg_restart_immediate", "PostgreSQL restart -m immediate",
                  _pg_restart("immediate"), needs_own_server=True),
        FaultSpec("blackhole_short",
                  f"active host's database blackholed 0.1-{short:g} s "
                  f"(keep slack {profile.keep_slack:g} s): no failover",
                  _cut("blackhole_short", "blackhole", 0.1, short, short=True)),
        FaultSpec("blackhole_long", "active host's database blackholed W+0.5 .. W+2 s",
                  _cut("blackhole_long", "blackhole", 0.5, 2.0, short=False)),
        FaultSpec("reset_long", "active host's database connections reset W+0.5 .. W+2 s",
                  _cut("reset_long", "reset", 0.5, 2.0, short=False)),
        FaultSpec("db_unreachable_all", "database blackholed for every host W+1 .. W+2 s",
                  db_unreachable_all),
        FaultSpec("fail_at_start", "active host restarted with a node failing at start",
                  fail_at_start),
        FaultSpec("ignore_sigterm", "a SIGTERM-deaf node cut off or shut down",
                  ignore_sigterm),
        FaultSpec("same_machine_name", "a standby given the active host's machineName",
                  same_machine_name),
        FaultSpec("clock_jump", "database clock jumps forward W+1 .. W+5 s", clock_jump,
                  needs_faketime=True),
        FaultSpec("lease_back_in_time", "lease row's renewed_at/expires_at set back 5 s",
                  lease_back_in_time),
        *faults_shape.SPECS,
        *(chaos_patroni.SPECS if patroni else []),
    ]
    return {s.name: s for s in specs}
