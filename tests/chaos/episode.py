"""What a fault reports to the runner, and small helpers the faults share.

Every fault (tests/chaos/faults.py, tests/chaos/faults_shape.py) is a function
`inject(ch, rng, active) -> Injected`: `ch` the running `ChaosCluster`
(tests/chaos/runner.py; `ch.profile` holds the intervals), `rng` the episode's
own seeded `random.Random` (every random choice comes from it, so an episode
replays with the same parameters), `active` the host whose node runs when the
fault begins. It injects the fault, holds it, heals it and says what happened,
in monotonic seconds, and what the checker must expect.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psutil

from tests.harness.host import Host

if TYPE_CHECKING:
    from tests.chaos.runner import ChaosCluster

Interval = tuple[float, float]


@dataclass(frozen=True)
class HolderLost:
    """`host` held the lease and lost it without releasing it: killed, frozen or
    cut off from `at` until `until`.

    Let `t` be the last successful renewal (or acquisition) its supervisor logged
    as sent before `until`. No other host may start a node before `t + W` (the
    lease is W long on everyone's clock), unless the host started one again first
    (it took its lease back, and may since have released it). With `killed`,
    the host's node alive at `at` must also be dead before `t + W` (exact, an
    invariant) and by `t + W - M` plus a load-derived allowance (an
    expectation). Hosts in `exempt` share the host's machine identity: they may
    take a dead process's lease back at once (docs/design.md, "The lease").
    """

    host: str
    at: float
    until: float
    killed: bool = True
    exempt: tuple[str, ...] = ()  # hosts of the same machine identity (may reclaim at once)


@dataclass(frozen=True)
class Quiet:
    """No node run of a host other than `exempt` may begin within [start, end)."""

    exempt: str | None
    start: float
    end: float
    why: str


@dataclass(frozen=True)
class Problem:
    """Something the fault itself saw go wrong (e.g. an event never logged)."""

    what: str
    detail: str
    at: float
    invariant: bool = False


@dataclass
class Injected:
    """What one fault did (monotonic seconds), for the checker and the report.

    - `start`/`end`: the fault proper (e.g. blackhole on .. off).
    - `unhealthy`: intervals in which no healthy host had the database (it was
      down or unreachable for every host); cut out of the availability windows.
    - `allowed_overlap`: (host, from, to): overlaps involving `host` that begin in
      [from, to] are the frozen-VM case (measured, not a violation).
    - `unsupervised`: (host, from, to): `host`'s supervisor and guard were both
      killed; a node of it (a setsid child) running past its lease in [from, to] is what
      systemd's `KillMode=mixed` ends in production, and the restarted supervisor's
      start-up sweep here: not held against the lease (overlaps still are).
    - `expect_no_failover`: the active node must survive (no new node run, the
      old one alive at the end); with `cut_s`, only when the cut was no longer
      than the load-derived keep limit (tests/chaos/load.py `keep_limit`).
    - `expect_all_down`: no node may be alive within this interval.
    - `holder_lost`, `quiet`: the W rule and the kill deadline (see there).
    - `problems`: broken expectations the fault observed itself.
    - `params`: the random choices and observations, for the report.
    """

    kind: str
    host: str | None
    start: float
    end: float
    unhealthy: list[Interval] = field(default_factory=list)
    allowed_overlap: tuple[str, float, float] | None = None
    unsupervised: tuple[str, float, float] | None = None
    expect_no_failover: bool = False
    cut_s: float | None = None
    expect_all_down: Interval | None = None
    holder_lost: HolderLost | None = None
    quiet: list[Quiet] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)


Inject = Callable[["ChaosCluster", random.Random, Host], Injected]


@dataclass(frozen=True)
class FaultSpec:
    """One entry of the catalog."""

    name: str
    summary: str
    inject: Inject
    needs_faketime: bool = False
    needs_replica: bool = False
    needs_patroni: bool = False  # runs only on a Patroni cluster (`--patroni`)
    needs_own_server: bool = False  # stops the server itself: not under Patroni


def now() -> float:
    return time.monotonic()


def sleep_until(t: float) -> None:
    left = t - time.monotonic()
    if left > 0:
        time.sleep(left)


def role(p: psutil.Process) -> str:
    """supervisor | guard | node | wrapper | the command line's start."""
    try:
        cmd = " ".join(p.cmdline())
    except psutil.Error:
        return "?"
    if "supervisor.node.guard" in cmd:
        return "guard"
    if "hb_node" in cmd:
        return "wrapper" if cmd.startswith("/bin/sh") else "node"
    return "supervisor" if "supervisor" in cmd else cmd[:30]
