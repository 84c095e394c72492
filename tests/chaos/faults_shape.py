"""Chaos faults in the shapes real pairs have: wrapper scripts, cloned
host names, a stalled guard, a lossy database failover, a stalled log sink.

Same contract as tests/chaos/faults.py (see tests/chaos/episode.py). Each fault
says what it expects beyond the invariants (never two nodes; the W rule):

- `wrapper_node`: the active host's node runs behind a `/bin/sh` wrapper that
  forks it (no `exec`), or is a node that `setsid`s the child that does the work
  (`hb_node.py --detach`). Right after a renewal its supervisor AND its guard are
  SIGKILLed; the runner restarts the supervisor W/8 later (RestartSec at
  production's ratio). The orphaned node (no process group, no parent death
  signal reaches it) must be gone before any other node starts, and gone at all:
  a node of the host's still alive outside its supervisor's tree when the
  episode ends is a `stray node` violation (and is then killed).
- `duplicate_name_pidns`: a standby is restarted with the active host's
  machineName in its own PID namespace (`unshare --pid --fork --mount-proc`). It
  must log `machine_name_conflict` and must not run a node while the holder
  lives; then the holder's supervisor is SIGKILLed (kept down for W + 2 s, or
  restarted as usual), and only the W rule may move the lease to another host.
- `guard_frozen_cut`: the active host's guard is SIGSTOPped and the host cut off
  from the database for more than W. The supervisor must kill the node itself by
  `t + W - M` (the guard cannot); then the guard gets SIGCONT.
- `lossy_failover`: with replication cut, the lease is handed over (variant
  `handover`; `handover_restart`: the old holder's supervisor is then SIGKILLed
  and restarted, so the replica names its dead predecessor), or the holder keeps
  renewing (`renew`), so the replica misses writes; the holder is cut off right
  after a renewal, the primary stops, the replica is promoted. Nobody may start
  a node within W of the promotion; the holder's node dies by its deadline; the
  cluster must come back on the new primary. A new replica is then seeded from
  it (`ChaosDb.reseed`) for the next such episode.
- `stalled_log_sink`: the active supervisor's stdout is not read for 3-4 W while
  its node chatters (SIGUSR1 to hb_node): no failover, the node is kept.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import signal
import termios
import time
from typing import TYPE_CHECKING, Any

from tests.chaos.episode import (
    FaultSpec,
    HolderLost,
    Injected,
    Problem,
    Quiet,
    role,
    sleep_until,
)
from tests.chaos.episode import now as _now
from tests.harness.cli import run_cli
from tests.harness.host import Host
from tests.harness.proc import pid_alive

if TYPE_CHECKING:
    from tests.chaos.runner import ChaosCluster


# ------------------------------------------------------------------ wrapper / setsid node


def wrapper_node(ch: ChaosCluster, rng: random.Random, active: Host) -> Injected:
    """See the module docstring."""
    p = ch.profile
    variant = rng.choice(["sh", "setsid"])
    if variant == "sh":
        target = ch.reconfigure_active(active, [], prefix=["/bin/sh", str(ch.wrapper_script)])
    else:
        target = ch.reconfigure_active(active, ["--detach"])
    host = target or active
    params: dict[str, Any] = {"variant": variant, "wrapper_active": target is active}
    restart_after = p.W / 8
    ch.wait_renewal(host, p.U + 5.0)
    guard = ch.guard_pid(host)
    beating = ch.node_pids(host)
    with ch.systemd.hold(host):
        t0 = _now()
        ch.signal_supervisor(host, signal.SIGKILL)
        if guard is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(guard, signal.SIGKILL)
        ch.wait_exit(host, 5.0)
        sleep_until(t0 + restart_after)
        host.start()
    deadline = t0 + p.W + 5.0
    while _now() < deadline and any(pid_alive(pid) for pid in beating):
        time.sleep(0.01)
    gone = [pid for pid in beating if not pid_alive(pid)]
    t1 = _now()
    params.update(restart_after_s=round(restart_after, 3), guard_found=guard is not None,
                  beating=beating, orphan_gone_after_s=None if len(gone) < len(beating)
                  else round(t1 - t0, 3))
    problems = []
    strays = ch.stray_nodes(host)
    if strays:
        problems.append(Problem(
            "stray node", f"{host.name}'s node processes {strays} outlived its supervisor and "
                          f"guard ({t1 - t0:.1f}s after both were killed): nothing fenced them",
            t1, invariant=True))
        ch.kill_strays(host)
    for h in [host] if host is active else [host, active]:  # back to the plain node
        ch.node_args[h.name], ch.node_prefix[h.name] = [], []
        ch.restart_supervisor(h)
    # supervisor and guard both killed: nothing of ours can end the setsid child until
    # the supervisor is back (its start-up sweep); systemd's KillMode=mixed does it at
    # once in production
    return Injected("wrapper_node", host.name, t0, t1, problems=problems,
                    holder_lost=HolderLost(host.name, t0, t0, killed=False), params=params,
                    unsupervised=(host.name, t0, t1))


# ------------------------------------------------------------------ cloned host name


def duplicate_name_pidns(ch: ChaosCluster, rng: random.Random, active: Host) -> Injected:
    """See the module docstring."""
    p = ch.profile
    twin = rng.choice([h for h in ch.hosts if h is not active])
    variant = rng.choice(["down", "restart"])
    t0 = _now()
    mark = twin.mark()
    ch.restart_supervisor(twin, machine_name=active.machine_name or active.name,
                          pid_namespace=True)
    problems = []
    try:
        twin.wait_event("machine_name_conflict", 2 * p.W + 5.0, since=mark)
        conflict_after = round(_now() - t0, 3)
    except AssertionError:
        conflict_after = None
        problems.append(Problem("expectation", f"{twin.name} (machineName "
                                f"{active.machine_name or active.name!r}, own PID namespace) "
                                "never logged machine_name_conflict", _now()))
    sleep_until(t0 + 1.5 * p.W)
    t_kill = _now()
    if variant == "down":
        with ch.systemd.hold(active):
            ch.signal_supervisor(active, signal.SIGKILL)
            ch.wait_exit(active, 5.0)
            sleep_until(t_kill + p.W + 2.0)
            active.start()
    else:
        ch.signal_supervisor(active, signal.SIGKILL)
        sleep_until(t_kill + p.W + 1.0)
    t1 = _now()
    ch.restart_supervisor(twin, machine_name=None, pid_namespace=False)
    return Injected(
        "duplicate_name_pidns", active.name, t_kill, t1, problems=problems,
        quiet=[Quiet(active.name, t0, t_kill, "the holder was alive")],
        holder_lost=HolderLost(active.name, t_kill, t_kill, killed=False),
        params={"twin": twin.name, "variant": variant, "conflict_after_s": conflict_after})


# ------------------------------------------------------------------ stalled guard


def guard_frozen_cut(ch: ChaosCluster, rng: random.Random, active: Host) -> Injected:
    """See the module docstring."""
    p = ch.profile
    guard = ch.guard_pid(active)
    hold = p.W + rng.uniform(0.5, 1.5)
    time.sleep(rng.uniform(0.0, p.U))  # random alignment with the renewals
    link = ch.proxies[active.name]
    t0 = _now()
    if guard is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(guard, signal.SIGSTOP)
    try:
        link.set_mode("blackhole")
        sleep_until(t0 + hold)
    finally:
        link.set_mode("pass")
        guard_alive = guard is not None and pid_alive(guard)
        if guard is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(guard, signal.SIGCONT)
    t1 = _now()
    return Injected("guard_frozen_cut", active.name, t0, t1,
                    holder_lost=HolderLost(active.name, t0, t1),
                    params={"hold_s": round(hold, 3), "guard_found": guard is not None,
                            "guard_alive_at_heal": guard_alive})


# ------------------------------------------------------------------ lossy database failover


def lossy_failover(ch: ChaosCluster, rng: random.Random, active: Host) -> Injected:
    """See the module docstring."""
    p, db = ch.profile, ch.db
    replica, replication = db.replica, db.replication
    assert replica is not None and replication is not None, "no replica"
    variant = rng.choice(["handover", "handover_restart", "renew"])
    problems: list[Problem] = []
    params: dict[str, Any] = {"variant": variant}
    db.server.wait_replayed(replica)
    replication.set_mode("blackhole")
    holder = active
    if variant.startswith("handover"):
        r = run_cli("handover", "--config", str(active.config_path), "--wait", "15",
                    timeout=40)
        params["handover_exit"] = r.returncode
        holder = ch.wait_stable(3 * p.W + 5.0) or active
        if variant == "handover_restart" and holder is not active:
            # the old holder's supervisor dies in its cooldown and systemd restarts it:
            # the replica names its dead predecessor
            mark = active.mark()
            ch.signal_supervisor(active, signal.SIGKILL)
            with contextlib.suppress(AssertionError):
                active.wait_event("lease_seen", p.restart_delay + 20.0, since=mark)
    else:
        time.sleep(rng.uniform(1.0, 2.0) * p.U)  # renewals the replica misses
    params["holder"] = holder.name
    ch.wait_renewal(holder, p.U + 5.0)
    link = ch.proxies[holder.name]
    t_cut = _now()
    link.set_mode("blackhole")
    try:
        db.promote()
        t_promoted = _now()
        sleep_until(t_cut + p.W + rng.uniform(0.5, 1.5))
    finally:
        link.set_mode("pass")
    t1 = _now()
    params.update(promoted_after_cut_s=round(t_promoted - t_cut, 3))
    back = ch.wait_stable(3 * p.W + 10.0)
    on_new = db.lease_holder(ch.lease_name)
    names = {h.name: h.machine_name or h.name for h in ch.hosts}
    if back is None or on_new != names[back.name]:
        problems.append(Problem("expectation", f"the cluster did not come back on the new "
                                f"primary: its row names {on_new!r}, running: {ch.live()}",
                                _now()))
    params["reseed_s"] = round(db.reseed(), 3)
    return Injected(
        "lossy_failover", holder.name, t_cut, t1, unhealthy=[(t_cut, t_promoted)],
        holder_lost=HolderLost(holder.name, t_cut, t1),
        quiet=[Quiet(holder.name, t_cut, t_promoted + p.W,
                     "nobody may take anything within W of the server change")],
        problems=problems, params=params)


# ------------------------------------------------------------------ stalled log sink


def _pipe_fill(host: Host) -> int | None:
    """Bytes waiting in the supervisor's stdout pipe."""
    if host.proc is None or host.proc.stdout is None:
        return None
    buf = bytearray(4)
    try:
        fcntl.ioctl(host.proc.stdout.fileno(), termios.FIONREAD, buf)
    except (OSError, ValueError):
        return None
    return int.from_bytes(buf, "little")


def stalled_log_sink(ch: ChaosCluster, rng: random.Random, active: Host) -> Injected:
    """See the module docstring."""
    hold = rng.uniform(3.0, 4.0) * ch.profile.W
    nodes = [pr.pid for pr in ch.process_tree(active) if role(pr) == "node"]
    t0 = _now()
    for pid in nodes:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGUSR1)  # chatter on
    active.reading.clear()
    try:
        sleep_until(t0 + hold)
    finally:
        for pid in nodes:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGUSR1)  # chatter off
        fill = _pipe_fill(active)
        mark = active.mark()
        active.reading.set()
    t1 = _now()
    dropped = None
    with contextlib.suppress(AssertionError):
        dropped = active.wait_event("log_records_dropped", 5.0, since=mark).get("count")
    return Injected("stalled_log_sink", active.name, t0, t1, expect_no_failover=True,
                    params={"hold_s": round(hold, 3), "pipe_bytes": fill,
                            "log_records_dropped": dropped})


SPECS = [
    FaultSpec("wrapper_node", "a wrapper-script or setsid node; supervisor and guard "
              "SIGKILLed", wrapper_node),
    FaultSpec("duplicate_name_pidns", "a standby with the holder's machineName in its own "
              "PID namespace; the holder killed", duplicate_name_pidns),
    FaultSpec("guard_frozen_cut", "the active guard SIGSTOPped, the host cut off > W",
              guard_frozen_cut),
    FaultSpec("lossy_failover", "replica misses writes, holder cut off, replica promoted",
              lossy_failover, needs_replica=True),
    FaultSpec("stalled_log_sink", "the active supervisor's stdout not read for 3-4 W, node "
              "chattering: no failover", stalled_log_sink),
]
