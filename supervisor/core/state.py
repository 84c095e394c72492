"""The core's state and timing: values and pure functions of them, no I/O, no clock.

`CoreState` is everything the core remembers; `Timing` every interval it needs.
The deadline functions implement the timing rule (supervisor/core/timing.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Literal

from supervisor.config import Config
from supervisor.core.candidacy import Candidacy
from supervisor.core.messages import LeaseOpKind, SeenVersion
from supervisor.core.timing import pace, stop_graces
from supervisor.core.transitions import State


class NodePhase(StrEnum):
    NONE = "none"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"


AfterStop = Literal["standby", "cooldown_crash", "cooldown_handover", "exit"]


@dataclass(frozen=True)
class Timing:
    """Every interval the core needs, in seconds."""

    update_interval: float  # U
    wait_interval: float  # W
    margin: float  # M
    stop_timeout: float  # S: the grace of a planned stop
    loss_grace: float  # G: the grace of a stop forced by a lease being lost
    operation_timeout: float  # bound on one database call
    poll_interval: float  # how often a standby reads the row
    retry_interval: float  # pause after a failed database call
    renew_hedge: float  # a renewal without an answer this long is raced on a fresh connection
    renew_retry: float  # pause after a failed renewal
    handover_cooldown: float
    initial_delay: float
    multiplier: float
    max_delay: float
    reset_after: float
    max_crashes: int
    crash_window: float
    crash_cooldown: float
    error_repeat: float = 60.0  # a persisting database error is logged again this often
    ready_timeout: float | None = None  # node.readiness.startTimeout; None: no readiness check

    @classmethod
    def from_config(cls, config: Config) -> Timing:
        lease, restart = config.lease, config.restart
        u, w = lease.update_interval, lease.wait_interval
        graces = stop_graces(u, w, lease.margin, config.node.stop_timeout,
                             config.database.operation_timeout)
        paced = pace(u, w, config.database.operation_timeout)
        return cls(
            update_interval=u,
            wait_interval=w,
            margin=lease.margin,
            stop_timeout=config.node.stop_timeout,
            loss_grace=graces.loss_grace,
            operation_timeout=config.database.operation_timeout,
            poll_interval=paced.poll_interval,
            retry_interval=paced.retry_interval,
            renew_hedge=paced.renew_hedge,
            renew_retry=paced.renew_retry,
            handover_cooldown=paced.handover_cooldown,
            initial_delay=restart.initial_delay,
            multiplier=restart.multiplier,
            max_delay=restart.max_delay,
            reset_after=restart.reset_after,
            max_crashes=restart.max_crashes,
            crash_window=restart.window,
            crash_cooldown=restart.cooldown,
            ready_timeout=(config.node.readiness.start_timeout
                           if config.node.readiness is not None else None),
        )


# ---------------------------------------------------------------- state


@dataclass
class LeaseView:
    """The lease as this host knows it: the epoch it holds (and its timing), the one
    lease call in flight, and what it has seen of the row as a contender."""

    epoch: int | None = None  # the lease we hold, as far as we know
    renewed_sent_at: float | None = None  # t: send time of the last successful renew/acquire
    next_renew_at: float | None = None
    release_epoch: int | None = None  # a lease given up that we still owe a release for
    op: LeaseOpKind | None = None  # the lease call in flight
    op_since: float = 0.0
    slow_logged: bool = False  # a slow renewal was logged once
    next_observe_at: float = 0.0
    seen: SeenVersion | None = None  # the row's version, as last seen ...
    seen_since: float | None = None  # ... unchanged since then (the W stopwatch)
    holder: str | None = None  # last holder seen (for status)
    last_holder: str | None = None  # the last holder seen in a held row
    handover_seen: bool = False  # ... and whether it had been asked to hand over
    server: str | None = None  # the database server that answered last
    server_watch_until: float | None = None  # after a server change: take nothing before
    acquire_how: str = ""  # why the acquisition in flight may take the row
    acquire_from: str | None = None  # ... and from whom


@dataclass
class NodeRun:
    """The current node run."""

    phase: NodePhase = NodePhase.NONE
    pid: int | None = None
    ready: bool = False  # passed its readiness check (always, without one)
    ready_deadline: float | None = None  # not ready by then: a failed start
    kill_is_crash: bool = False  # the kill in flight counts as a crash (never became ready)
    stop_sent: bool = False
    kill_sent: bool = False


@dataclass
class Crashes:
    """Crashes and restarts of the node."""

    times: tuple[float, ...] = ()  # within the crash window
    consecutive: int = 0  # for the backoff (reset after a long run)
    restart_at: float | None = None
    restarts: int = 0
    restart_when_resumed: bool = False  # the node crashed while paused


@dataclass
class DatabaseHealth:
    """How the lease calls have been going."""

    failures: int = 0  # lease calls failed in a row
    error: str | None = None  # the last failure's reason, while failing
    error_since: float | None = None
    error_logged_at: float | None = None
    ok_at: float | None = None  # when the database last answered
    refused: str | None = None  # the last failure was a missing privilege (its reason)


@dataclass
class LoggedOnce:
    """What was logged already, so a persisting condition is not logged every turn."""

    name_conflict_at: float | None = None
    standby_view: tuple[object, ...] | None = None  # last logged (holder, epoch, ...)


@dataclass
class CoreState:
    """Everything the core remembers. Treated as a value: `step` works on a `copy()` and
    never mutates its input."""

    lease_enabled: bool
    state: State = State.STANDBY
    lease: LeaseView = field(default_factory=LeaseView)
    node: NodeRun = field(default_factory=NodeRun)
    crashes: Crashes = field(default_factory=Crashes)
    db: DatabaseHealth = field(default_factory=DatabaseHealth)
    logged: LoggedOnce = field(default_factory=LoggedOnce)
    candidacy: Candidacy = field(default_factory=Candidacy)
    after_stop: AfterStop = "standby"
    cooldown_until: float | None = None
    shutting_down: bool = False
    begun: bool = False
    paused: bool = False  # `pause`: the holder leaves its node alone; standbys take nothing
    shared_problem: str | None = None  # the node's shared directories failed their probe
    fencing_problem: str | None = None  # this host cannot fence the other node's database role
    name_conflict: str | None = None  # another live identity holds our machineName

    def copy(self) -> CoreState:
        """A copy whose records are copies too (so changing it changes nothing here)."""
        return replace(self, lease=replace(self.lease), node=replace(self.node),
                       crashes=replace(self.crashes), db=replace(self.db),
                       logged=replace(self.logged), candidacy=replace(self.candidacy))


def initial_state(lease_enabled: bool, *, nofailover: bool = False,
                  priority: int = 0) -> CoreState:
    return CoreState(
        lease_enabled=lease_enabled,
        state=State.STANDBY if lease_enabled else State.DISABLED,
        candidacy=Candidacy(nofailover=nofailover, priority=priority),
    )


def kill_deadline(state: CoreState, timing: Timing) -> float | None:
    """`t + W - M`, or None when no lease is held."""
    if state.lease.renewed_sent_at is None or state.lease.epoch is None:
        return None
    return state.lease.renewed_sent_at + timing.wait_interval - timing.margin


def term_deadline(state: CoreState, timing: Timing) -> float | None:
    """`t + W - M - G`: when a node whose lease is not renewed must get SIGTERM."""
    kill_at = kill_deadline(state, timing)
    return None if kill_at is None else kill_at - timing.loss_grace


def backoff_delay(consecutive_crashes: int, timing: Timing) -> float:
    """Delay before restart number `consecutive_crashes` (1-based), capped."""
    exponent = max(0, consecutive_crashes - 1)
    delay = timing.initial_delay * (timing.multiplier ** min(exponent, 64))
    return float(min(delay, timing.max_delay))


def takeover_readiness(state: CoreState, now: float) -> tuple[bool, str]:
    """Could this host take the lease over now, if the holder died? (ok, why not)."""
    if not state.lease_enabled:
        return False, "the lease is off"
    if state.lease.epoch is not None:
        return False, "this host holds the lease"
    if state.candidacy.nofailover:
        return False, ("candidate.nofailover = true: this host never takes the lease "
                       "(kept for manual use)")
    if state.state is not State.STANDBY or state.shutting_down:
        return False, f"state is {state.state}"
    if state.db.refused is not None:
        return False, f"the database refuses this role (missing privilege): {state.db.refused}"
    if state.db.ok_at is None or state.db.failures:
        return False, f"database unreachable: {state.db.error or 'no answer yet'}"
    if state.name_conflict is not None:
        return False, state.name_conflict
    if state.shared_problem is not None:
        return False, f"shared directories: {state.shared_problem}"
    if state.fencing_problem is not None:
        return False, f"database fencing: {state.fencing_problem}"
    if state.paused:
        return False, "the pair is paused (`corda-ha-supervisor resume` ends it)"
    if state.lease.server_watch_until is not None and now < state.lease.server_watch_until:
        return False, ("a new database server answers: watching it for "
                       f"{state.lease.server_watch_until - now:.1f} s more")
    return True, "standby, database reachable"


def next_wakeup(state: CoreState, timing: Timing) -> float | None:
    """The earliest time at which `step(state, Tick(), t)` could do something."""
    times: list[float] = []
    if state.state == State.EXITED:
        return None
    if state.lease.epoch is not None:
        kill_at = kill_deadline(state, timing)
        if kill_at is not None:
            times.append(kill_at)
            if state.node.phase is not NodePhase.NONE and not state.node.stop_sent:
                times.append(kill_at - timing.loss_grace)
        if state.lease.op is None and state.lease.next_renew_at is not None:
            times.append(state.lease.next_renew_at)
        if state.lease.op == "renew" and not state.lease.slow_logged:
            times.append(state.lease.op_since + 2 * timing.renew_hedge)
    if state.lease.op is None and state.lease_enabled and state.state == State.STANDBY:
        times.append(state.lease.next_observe_at)
    for t in (state.crashes.restart_at, state.cooldown_until, state.node.ready_deadline,
              state.candidacy.handover_due_at):
        if t is not None:
            times.append(t)
    return min(times) if times else None
