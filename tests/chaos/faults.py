"""The chaos suite's fault catalog: how each fault is injected, held and healed.

Every fault is a function `inject(ch, rng, active) -> Injected`. `ch` is the
running `ChaosCluster` (tests/chaos/runner.py), `rng` the episode's own seeded
`random.Random` (every random choice of the fault comes from it, so an episode
replays with the same parameters), `active` the host whose node runs when the
fault begins (the cluster is stable: exactly one node). The function injects
the fault, holds it, heals it, and returns what happened, in monotonic seconds.
The runner then waits until the cluster is stable again and checks the episode.

Intervals (tests/cluster.py): U = 0.5 s, W = 2 s, S = stopTimeout = 0.5 s,
M = min(2 s, W/10) = 0.2 s, so the slack W - U - S - M is 0.8 s.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psutil

from tests.cluster import STOP_MS, U_MS, W_MS, Host

if TYPE_CHECKING:
    from tests.chaos.runner import ChaosCluster

U = U_MS / 1000
W = W_MS / 1000
S = STOP_MS / 1000
M = min(2.0, W / 10)
SLACK = W - U - S - M  # 0.8 s

Interval = tuple[float, float]


@dataclass
class Injected:
    """What one fault did (monotonic seconds), for the checker and the report.

    - `start`/`end`: the fault proper (e.g. blackhole on .. off).
    - `unhealthy`: intervals in which no healthy host had the database (it was
      down or unreachable for every host); cut out of the availability windows.
    - `allowed_overlap`: (host, from, to): overlaps involving `host` that begin in
      [from, to] are the frozen-VM case (measured, not a violation).
    - `expect_no_failover`: the active node must survive (short blackhole).
    - `expect_all_down`: no node may be alive within this interval.
    - `params`: the random choices and observations, for the report.
    """

    kind: str
    host: str | None
    start: float
    end: float
    unhealthy: list[Interval] = field(default_factory=list)
    allowed_overlap: tuple[str, float, float] | None = None
    expect_no_failover: bool = False
    expect_all_down: Interval | None = None
    params: dict[str, Any] = field(default_factory=dict)


Inject = Callable[["ChaosCluster", random.Random, Host], Injected]


@dataclass(frozen=True)
class FaultSpec:
    """One entry of the catalog."""

    name: str
    summary: str
    inject: Inject
    needs_faketime: bool = False


def _now() -> float:
    return time.monotonic()


def _sleep_until(t: float) -> None:
    left = t - time.monotonic()
    if left > 0:
        time.sleep(left)


# ------------------------------------------------------------------ processes


def kill_supervisor(ch: ChaosCluster, rng: random.Random, active: Host) -> Injected:
    """SIGKILL the active supervisor. The guard sees its pipe close and kills the
    node; the runner restarts the supervisor (as systemd would) after a delay."""
    t0 = _now()
    ch.signal_supervisor(active, signal.SIGKILL)
    return Injected("kill_supervisor", active.name, t0, t0)


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
    pids = ch.live_pids(active)
    t0 = _now()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return Injected("kill_node", active.name, t0, t0, params={"pids": pids})


def stop_supervisor(ch: ChaosCluster, rng: random.Random, active: Host) -> Injected:
    """SIGSTOP the active supervisor alone (a hung daemon) for more than W, then
    SIGCONT. Its guard kills the node at t + W - M; another host takes over."""
    hold = W + rng.uniform(0.3, 1.5)
    t0 = _now()
    ch.signal_supervisor(active, signal.SIGSTOP)
    try:
        _sleep_until(t0 + hold)
    finally:
        ch.signal_supervisor(active, signal.SIGCONT)
    return Injected("stop_supervisor", active.name, t0, _now(), params={"hold_s": round(hold, 3)})


def _role(p: psutil.Process) -> str:
    try:
        cmd = " ".join(p.cmdline())
    except psutil.Error:
        return "?"
    if "supervisor.guard" in cmd:
        return "guard"
    if "hb_node" in cmd:
        return "node"
    return "supervisor" if "supervisor" in cmd else cmd[:30]


def freeze_host(ch: ChaosCluster, rng: random.Random, active: Host) -> Injected:
    """SIGSTOP the active host's whole process tree (supervisor, guard, node): a
    frozen VM. Held for more than W, then every process gets SIGCONT (in a random
    order). An overlap right after SIGCONT is the one case the design allows."""
    hold = W + rng.uniform(0.3, 1.5)
    tree = ch.process_tree(active)
    names = {p.pid: _role(p) for p in tree}
    order = list(tree)
    rng.shuffle(order)
    t0 = _now()
    for p in tree:
        with contextlib.suppress(psutil.Error):
            p.suspend()
    try:
        _sleep_until(t0 + hold)
    finally:
        t_cont = _now()
        for p in order:
            with contextlib.suppress(psutil.Error):
                p.resume()
    return Injected("freeze_host", active.name, t0, t_cont,
                    allowed_overlap=(active.name, t_cont - 0.05, t_cont + 1.0),
                    params={"hold_s": round(hold, 3),
                            "resume_order": [names[p.pid] for p in order]})


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
    """Blackhole every host's proxy for more than W: every node stops (by
    t + W - M); when the database is back, exactly one starts."""
    hold = W + rng.uniform(1.0, 2.0)
    t0 = _now()
    try:
        for p in ch.proxies.values():
            p.set_mode("blackhole")
        _sleep_until(t0 + hold)
    finally:
        for p in ch.proxies.values():
            p.set_mode("pass")
    t1 = _now()
    return Injected("db_unreachable_all", None, t0, t1, unhealthy=[(t0, t1)],
                    expect_all_down=(t0 + W, t1), params={"hold_s": round(hold, 3)})


def clock_jump(ch: ChaosCluster, rng: random.Random, active: Host) -> Injected:
    """The database clock jumps forward by more than W (libfaketime timestamp
    file rewritten). No host may take the lease on the strength of the jump."""
    jump = W + rng.uniform(1.0, 5.0)
    t0 = _now()
    ch.db.jump(jump)
    _sleep_until(t0 + W + 1.0)
    return Injected("clock_jump", None, t0, t0,
                    params={"jump_s": round(jump, 3), "offset_s": round(ch.db.offset, 3),
                            "measured_offset_s": round(ch.db.clock_offset(), 2)})


def lease_back_in_time(ch: ChaosCluster, rng: random.Random, active: Host) -> Injected:
    """The lease row goes back 5 s behind the supervisors' backs (a database
    failover to a replica that lost the last renewals)."""
    t0 = _now()
    n = ch.db.lease_back(ch.lease_name, 5.0)
    _sleep_until(t0 + W + 1.0)
    return Injected("lease_back_in_time", None, t0, t0, params={"rows": n})


# ------------------------------------------------------------------ network


def _cut(kind: str, mode: str, lo: float, hi: float, *, short: bool) -> Inject:
    def inject(ch: ChaosCluster, rng: random.Random, active: Host) -> Injected:
        phase = rng.uniform(0.0, U)  # random alignment with the renewals
        hold = rng.uniform(lo, hi)
        time.sleep(phase)
        proxy = ch.proxies[active.name]
        t0 = _now()
        try:
            proxy.set_mode(mode)  # type: ignore[arg-type]  # "blackhole" | "reset"
            _sleep_until(t0 + hold)
        finally:
            proxy.set_mode("pass")
        t1 = _now()
        return Injected(kind, active.name, t0, t1, expect_no_failover=short,
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
    with ch.systemd.hold(active):
        ch.signal_supervisor(active, signal.SIGKILL)
        ch.wait_exit(active, 5.0)
        ch.node_args[active.name] = ["--ignore-sigterm"]
        active.start()
    target = ch.wait_stable(20.0)
    variant = rng.choice(["cutoff", "shutdown"])
    params: dict[str, Any] = {"variant": variant,
                              "deaf_node_active": target is active}
    if target is None:
        target = active
    t0 = _now()
    if variant == "cutoff":
        hold = W + rng.uniform(0.5, 1.5)
        proxy = ch.proxies[target.name]
        try:
            proxy.set_mode("blackhole")
            _sleep_until(t0 + hold)
        finally:
            proxy.set_mode("pass")
        params["hold_s"] = round(hold, 3)
        t1 = _now()
    else:
        with ch.systemd.hold(target):
            ch.signal_supervisor(target, signal.SIGTERM)
            params["exit"] = ch.wait_exit(target, S + 10.0)
            t1 = _now()
            ch.node_args[target.name] = []
            target.start()
    if ch.node_args[active.name]:
        ch.node_args[active.name] = []
        ch.restart_supervisor(active)
    return Injected("ignore_sigterm", target.name, t0, t1, params=params)


def same_machine_name(ch: ChaosCluster, rng: random.Random, active: Host) -> Injected:
    """A standby is restarted with the active host's machineName. Then, mostly,
    the active supervisor is SIGKILLed (both namesakes may now take the lease back
    as "the same machine"). Afterwards the twin gets its own name back."""
    standbys = [h for h in ch.hosts if h is not active]
    twin = rng.choice(standbys)
    variant = rng.choice(["kill_active", "kill_active", "hold"])
    t0 = _now()
    twin.machine_name = active.machine_name or active.name
    ch.restart_supervisor(twin)
    time.sleep(1.5 * W)
    t_kill = None
    if variant == "kill_active":
        t_kill = _now()
        ch.signal_supervisor(active, signal.SIGKILL)
        time.sleep(W + 1.0)
    t1 = _now()
    twin.machine_name = None
    ch.restart_supervisor(twin)
    return Injected("same_machine_name", active.name, t0 if t_kill is None else t_kill, t1,
                    params={"twin": twin.name, "variant": variant,
                            "kill_after_s": None if t_kill is None else round(t_kill - t0, 3)})


# ------------------------------------------------------------------ the catalog


def catalog(short_blackhole_max: float = 0.65) -> dict[str, FaultSpec]:
    """Every fault type, by name."""
    specs = [
        FaultSpec("kill_supervisor", "SIGKILL of the active supervisor", kill_supervisor),
        FaultSpec("kill_guard", "SIGKILL of the active host's guard", kill_guard),
        FaultSpec("kill_node", "SIGKILL of the active node", kill_node),
        FaultSpec("stop_supervisor", "SIGSTOP of the active supervisor alone > W, SIGCONT",
                  stop_supervisor),
        FaultSpec("freeze_host", "SIGSTOP of the active host's whole tree > W, SIGCONT",
                  freeze_host),
        FaultSpec("pg_restart_fast", "PostgreSQL restart -m fast", _pg_restart("fast")),
        FaultSpec("pg_restart_immediate", "PostgreSQL restart -m immediate",
                  _pg_restart("immediate")),
        FaultSpec("blackhole_short",
                  f"active host's database blackholed 0.1-{short_blackhole_max} s "
                  f"(< slack {SLACK:.1f} s): no failover",
                  _cut("blackhole_short", "blackhole", 0.1, short_blackhole_max, short=True)),
        FaultSpec("blackhole_long", "active host's database blackholed W+0.5 .. W+2 s",
                  _cut("blackhole_long", "blackhole", W + 0.5, W + 2.0, short=False)),
        FaultSpec("reset_long", "active host's database connections reset W+0.5 .. W+2 s",
                  _cut("reset_long", "reset", W + 0.5, W + 2.0, short=False)),
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
    ]
    return {s.name: s for s in specs}
