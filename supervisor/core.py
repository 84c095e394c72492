"""The pure decision core: `step(state, event, now) -> (state, actions)`.

No I/O and no clock reads happen here: `now` is the caller's `time.monotonic()`
and every effect is returned as an action for the daemon to carry out. The
daemon promises that every lease action it is given produces exactly one result
event (success or `LeaseCallFailed`) within the action's `timeout`, and that
every `StartNode` is followed by `NodeStarted` and/or `NodeExited`.

Timing (design.md, supervisor/timing.py): let `t` be when the last successful
renewal (or the acquisition) was *sent*. Nobody else may take the lease before
`t + W`, so

- `term_at = t + W - M - G`: SIGTERM the node (graceful stop with the loss grace
  `G = min(S, W - M - U - R)`) and give the lease up;
- `kill_at = t + W - M`: SIGKILL the node's process group. The guard holds the
  same deadline, so the node dies on time even when this process is frozen.

Planned stops (shutdown, handover) give the node the full `S` while renewals go
on; the kill deadline still cuts them short if renewals fail.

A standby takes a held lease only after it has seen the row unchanged for W on
its own clock (`seen_since + W`) and the database agrees the row expired. When
another database server starts answering (a restart, a failover to a replica
that may have lost the last writes), it takes nothing at all, not even a free
row or its own dead predecessor's, before it has watched that server for W.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from supervisor.config import Config
from supervisor.messages import (
    AcquireLease,
    Action,
    Begin,
    Event,
    Exit,
    HandoverRequested,
    KillNode,
    LeaseAcquired,
    LeaseCallFailed,
    LeaseLost,
    LeaseNotAcquired,
    LeaseObserved,
    LeaseOpKind,
    LeaseReleased,
    LeaseRenewed,
    Log,
    NodeExited,
    NodeStarted,
    ObserveLease,
    PeerReleased,
    ReleaseLease,
    RenewLease,
    SeenVersion,
    SetNodeDeadline,
    ShutdownRequested,
    StartNode,
    StopNode,
    Tick,
)
from supervisor.timing import stop_graces


class State(StrEnum):
    STANDBY = "standby"
    ACTIVE = "active"
    BACKOFF = "backoff"
    STOPPING = "stopping"
    COOLDOWN = "cooldown"
    DISABLED = "disabled"
    EXITED = "exited"


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

    @classmethod
    def from_config(cls, config: Config) -> Timing:
        lease, restart = config.lease, config.restart
        u, w = lease.update_interval, lease.wait_interval
        graces = stop_graces(u, w, lease.margin, config.node.stop_timeout,
                             config.database.operation_timeout)
        return cls(
            update_interval=u,
            wait_interval=w,
            margin=lease.margin,
            stop_timeout=config.node.stop_timeout,
            loss_grace=graces.loss_grace,
            operation_timeout=config.database.operation_timeout,
            poll_interval=max(0.05, min(u / 2, w / 4)),
            retry_interval=max(0.05, min(u / 4, 1.0)),
            renew_hedge=max(0.02, min(config.database.operation_timeout, u / 8)),
            renew_retry=max(0.01, min(u / 20, 0.25)),
            handover_cooldown=2 * w,
            initial_delay=restart.initial_delay,
            multiplier=restart.multiplier,
            max_delay=restart.max_delay,
            reset_after=restart.reset_after,
            max_crashes=restart.max_crashes,
            crash_window=restart.window,
            crash_cooldown=restart.cooldown,
        )


# ---------------------------------------------------------------- state


@dataclass
class CoreState:
    """Everything the core remembers. Treated as a value: `step` never mutates its input."""

    lease_enabled: bool
    state: State = State.STANDBY
    epoch: int | None = None  # the lease we hold, as far as we know
    renewed_sent_at: float | None = None  # t: send time of the last successful renew/acquire
    next_renew_at: float | None = None
    release_epoch: int | None = None  # a lease given up that we still owe a release for
    lease_op: LeaseOpKind | None = None
    lease_op_since: float = 0.0
    renewal_slow_logged: bool = False
    next_observe_at: float = 0.0
    seen: SeenVersion | None = None
    seen_since: float | None = None
    node: NodePhase = NodePhase.NONE
    node_pid: int | None = None
    stop_sent: bool = False
    kill_sent: bool = False
    after_stop: AfterStop = "standby"
    crash_times: tuple[float, ...] = ()
    consecutive_crashes: int = 0
    restart_at: float | None = None
    cooldown_until: float | None = None
    shutting_down: bool = False
    begun: bool = False
    holder: str | None = None  # last holder seen (for status)
    restarts: int = 0
    call_failures: int = 0  # lease calls failed in a row
    db_error: str | None = None  # the last failure's reason, while failing
    db_error_since: float | None = None
    db_error_logged_at: float | None = None
    db_ok_at: float | None = None  # when the database last answered
    server: str | None = None  # the database server that answered last
    server_watch_until: float | None = None  # after a server change: take nothing before
    name_conflict: str | None = None  # another live identity holds our machineName
    name_conflict_logged_at: float | None = None


def initial_state(lease_enabled: bool) -> CoreState:
    return CoreState(
        lease_enabled=lease_enabled,
        state=State.STANDBY if lease_enabled else State.DISABLED,
    )


def kill_deadline(state: CoreState, timing: Timing) -> float | None:
    """`t + W - M`, or None when no lease is held."""
    if state.renewed_sent_at is None or state.epoch is None:
        return None
    return state.renewed_sent_at + timing.wait_interval - timing.margin


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
    if state.epoch is not None:
        return False, "this host holds the lease"
    if state.state is not State.STANDBY or state.shutting_down:
        return False, f"state is {state.state}"
    if state.db_ok_at is None or state.call_failures:
        return False, f"database unreachable: {state.db_error or 'no answer yet'}"
    if state.name_conflict is not None:
        return False, state.name_conflict
    if state.server_watch_until is not None and now < state.server_watch_until:
        return False, ("a new database server answers: watching it for "
                       f"{state.server_watch_until - now:.1f} s more")
    return True, "standby, database reachable"


def next_wakeup(state: CoreState, timing: Timing) -> float | None:
    """The earliest time at which `step(state, Tick(), t)` could do something."""
    times: list[float] = []
    if state.state == State.EXITED:
        return None
    if state.epoch is not None:
        kill_at = kill_deadline(state, timing)
        if kill_at is not None:
            times.append(kill_at)
            if state.node is not NodePhase.NONE and not state.stop_sent:
                times.append(kill_at - timing.loss_grace)
        if state.lease_op is None and state.next_renew_at is not None:
            times.append(state.next_renew_at)
        if state.lease_op == "renew" and not state.renewal_slow_logged:
            times.append(state.lease_op_since + 2 * timing.renew_hedge)
    if state.lease_op is None and state.lease_enabled and state.state == State.STANDBY:
        times.append(state.next_observe_at)
    for t in (state.restart_at, state.cooldown_until):
        if t is not None:
            times.append(t)
    return min(times) if times else None


def step(
    state: CoreState, event: Event, now: float, timing: Timing
) -> tuple[CoreState, list[Action]]:
    """Feed one event; return the new state and the actions to carry out, in order."""
    s = dataclasses.replace(state)
    actions: list[Action] = []
    before = state.state
    _Step(s, now, timing, actions).handle(event)
    if s.state != before:
        actions.insert(0, Log("state_changed", "info", (("from", str(before)), ("to", str(s.state)),
                                                        ("epoch", s.epoch))))
    return s, actions


class _Step:
    """One transition, mutating a private copy of the state."""

    def __init__(self, s: CoreState, now: float, timing: Timing, actions: list[Action]) -> None:
        self.s = s
        self.now = now
        self.t = timing
        self.actions = actions

    # -- helpers

    def log(self, event: str, level: Literal["debug", "info", "warning", "error"] = "info",
            **fields: object) -> None:
        self.actions.append(Log(event, level, tuple(fields.items())))

    def op_timeout(self) -> float:
        return self.t.operation_timeout

    def begin_op(self, kind: LeaseOpKind, action: Action) -> None:
        self.s.lease_op = kind
        self.s.lease_op_since = self.now
        self.s.renewal_slow_logged = False
        self.actions.append(action)

    def give_up_lease(self) -> None:
        """Stop renewing; owe a release if the row may still name us."""
        if self.s.epoch is not None:
            self.s.release_epoch = self.s.epoch
        self.s.epoch = None
        self.s.renewed_sent_at = None
        self.s.next_renew_at = None

    def stop_node(self, reason: str, grace: float) -> None:
        if self.s.node is NodePhase.NONE or self.s.stop_sent:
            return
        grace = max(0.0, grace)
        self.s.stop_sent = True
        self.s.node = NodePhase.STOPPING
        self.log("node_stopping", reason=reason, grace=round(grace, 3), pid=self.s.node_pid)
        self.actions.append(StopNode(grace))

    def kill_node(self, reason: str) -> None:
        if self.s.node is NodePhase.NONE or self.s.kill_sent:
            return
        self.s.kill_sent = True
        self.s.stop_sent = True
        self.s.node = NodePhase.STOPPING
        self.log("node_killed", "warning", reason=reason, pid=self.s.node_pid)
        self.actions.append(KillNode())

    def planned_grace(self) -> float:
        """A planned stop gets the full S; the guard still kills at the kill deadline
        if renewals stop meanwhile (renewals go on while the node stops)."""
        return self.t.stop_timeout

    def start_node(self) -> None:
        self.s.node = NodePhase.STARTING
        self.s.node_pid = None
        self.s.stop_sent = False
        self.s.kill_sent = False
        self.s.restart_at = None
        self.s.state = State.ACTIVE if self.s.lease_enabled else State.DISABLED
        self.actions.append(StartNode(self.s.epoch, kill_deadline(self.s, self.t)))

    def enter_standby(self, observe_at: float | None = None) -> None:
        self.s.state = State.STANDBY if self.s.lease_enabled else State.DISABLED
        self.s.seen = None
        self.s.seen_since = None
        self.s.next_observe_at = self.now if observe_at is None else observe_at

    def stop_for(self, after: AfterStop, reason: str) -> None:
        """Begin the orderly way out of holding: stop the node, then release."""
        self.s.after_stop = after
        self.s.state = State.STOPPING
        if self.s.node is not NodePhase.NONE:
            self.stop_node(reason, self.planned_grace())
        else:
            self.give_up_lease()

    # -- dispatch

    def handle(self, event: Event) -> None:
        s = self.s
        if s.state == State.EXITED:
            return
        match event:
            case Begin():
                s.begun = True
                if not s.lease_enabled:
                    self.start_node()
            case Tick():
                pass
            case LeaseObserved():
                self.on_observed(event)
            case LeaseAcquired(epoch=epoch, sent_at=sent_at):
                self.on_acquired(epoch, sent_at)
            case LeaseNotAcquired():
                s.lease_op = None
                self.database_answered()
                s.next_observe_at = self.now + self.t.retry_interval
            case LeaseRenewed():
                self.on_renewed(event)
            case LeaseLost():
                self.on_lost()
            case LeaseReleased(released=released):
                self.on_released(released)
            case LeaseCallFailed(op=op, reason=reason):
                self.on_call_failed(op, reason)
            case PeerReleased():
                if s.state == State.STANDBY:
                    s.next_observe_at = self.now
            case NodeStarted(pid=pid):
                self.on_node_started(pid)
            case NodeExited():
                self.on_node_exited(event)
            case ShutdownRequested(signal=signal):
                self.on_shutdown(signal)
            case HandoverRequested():
                self.on_handover()
        self.reconcile()

    # -- lease results

    def database_answered(self) -> None:
        """A lease call got an answer from the database (whatever it said)."""
        s = self.s
        if s.call_failures:
            since = s.db_error_since if s.db_error_since is not None else self.now
            self.log("lease_call_recovered", failures_in_a_row=s.call_failures,
                     failed_for=round(self.now - since, 3))
        s.call_failures = 0
        s.db_error = None
        s.db_error_since = None
        s.db_error_logged_at = None
        s.db_ok_at = self.now

    def note_failure(self, reason: str) -> None:
        """Count a failed lease call (for status and the recovery log line)."""
        s = self.s
        s.call_failures += 1
        s.db_error = reason
        if s.db_error_since is None:
            s.db_error_since = self.now

    def database_failed(self, op: LeaseOpKind, reason: str) -> None:
        """Record a failed standby call; log the first one and then at least every
        `error_repeat` seconds while the failures last."""
        s = self.s
        self.note_failure(reason)
        last = s.db_error_logged_at
        if last is None or self.now - last >= self.t.error_repeat:
            s.db_error_logged_at = self.now
            failing_for = self.now - (s.db_error_since or self.now)
            self.log("lease_call_failed", "warning" if last is None else "error", op=op,
                     reason=reason, failures_in_a_row=s.call_failures,
                     failing_for=round(failing_for, 3))
        else:
            self.log("lease_call_failed", "debug", op=op, reason=reason,
                     failures_in_a_row=s.call_failures)

    def note_server(self, ev: LeaseObserved) -> None:
        """Restart every stopwatch when another database server answers."""
        s = self.s
        if not ev.server or ev.server == s.server:
            return
        w = self.t.wait_interval
        if s.server is None:
            s.server = ev.server
            if ev.exists and ev.row_server != ev.server:
                # first contact, and the row was written through another server (or by
                # a version that did not record it): this one may lack the last writes
                s.server_watch_until = self.now + w
                self.log("database_row_from_other_server", "warning", server=ev.server,
                         row_server=ev.row_server, watch_for=w)
            elif ev.server_uptime is not None and ev.server_uptime < w:
                # it started moments ago: it may lack the last writes
                s.server_watch_until = self.now + w
                self.log("database_server_young", "warning", server=ev.server,
                         uptime=round(ev.server_uptime, 3), watch_for=w)
            return
        self.log("database_server_changed", "warning", before=s.server, after=ev.server,
                 watch_for=w)
        s.server = ev.server
        s.server_watch_until = self.now + w
        s.seen = None
        s.seen_since = None

    def note_conflict(self, conflict: str | None) -> None:
        s = self.s
        if conflict is None:
            if s.name_conflict is not None:
                self.log("machine_name_conflict_cleared")
            s.name_conflict = None
            s.name_conflict_logged_at = None
            return
        last = s.name_conflict_logged_at
        if s.name_conflict != conflict or last is None or self.now - last >= self.t.error_repeat:
            self.log("machine_name_conflict", "error", detail=conflict)
            s.name_conflict_logged_at = self.now
        s.name_conflict = conflict

    def on_observed(self, ev: LeaseObserved) -> None:
        s = self.s
        s.lease_op = None
        self.database_answered()
        s.holder = ev.holder
        self.note_server(ev)
        if s.state != State.STANDBY or s.shutting_down:
            return
        if ev.version != s.seen:
            self.log("lease_seen", "debug", holder=ev.holder, epoch=ev.version.epoch,
                     free=ev.free, expired=ev.expired)
            s.seen = ev.version
            s.seen_since = self.now
        if ev.mine:
            # An acquire we gave up on committed after all: hand it back at once.
            self.log("lease_stray_released", "warning", epoch=ev.version.epoch)
            self.begin_op("release", ReleaseLease(ev.version.epoch, self.op_timeout()))
            return
        self.note_conflict(ev.name_conflict)
        watch_until = s.server_watch_until
        if watch_until is not None and self.now < watch_until:
            # Only time watched on our own clock since the server changed counts.
            s.next_observe_at = min(self.now + self.t.poll_interval, watch_until)
            return
        if ev.free:
            expected = ev.version if ev.exists else None
            self.begin_op("acquire", AcquireLease(expected, None, s.server, self.op_timeout()))
            return
        if ev.reclaimable is not None:
            self.log("lease_takeover_from_dead_predecessor", pid=ev.reclaimable.pid)
            self.begin_op("acquire", AcquireLease(ev.version, ev.reclaimable, s.server,
                                                  self.op_timeout()))
            return
        assert s.seen_since is not None
        unchanged_for = self.now - s.seen_since
        if ev.expired and unchanged_for >= self.t.wait_interval:
            self.begin_op("acquire", AcquireLease(ev.version, None, s.server,
                                                  self.op_timeout()))
            return
        next_at = self.now + self.t.poll_interval
        if ev.expired or unchanged_for + self.t.poll_interval >= self.t.wait_interval:
            next_at = min(next_at, s.seen_since + self.t.wait_interval)
        s.next_observe_at = max(self.now, next_at)

    def on_acquired(self, epoch: int, sent_at: float) -> None:
        s = self.s
        s.lease_op = None
        self.database_answered()
        s.epoch = epoch
        s.renewed_sent_at = sent_at
        s.next_renew_at = sent_at + self.t.update_interval
        s.seen = None
        s.seen_since = None
        s.consecutive_crashes = 0
        s.crash_times = ()
        self.log("lease_acquired", epoch=epoch, sent_at=round(sent_at, 6))
        if s.shutting_down:
            self.s.after_stop = "exit"
            self.s.state = State.STOPPING
            self.give_up_lease()
            return
        term_at = term_deadline(s, self.t)
        if term_at is not None and self.now >= term_at:
            # The answer came too late to run a node safely on this lease: hand it back.
            self.log("lease_acquired_too_late", "warning", epoch=epoch,
                     late_by=round(self.now - term_at, 3))
            s.after_stop = "standby"
            s.state = State.STOPPING
            self.give_up_lease()
            return
        self.start_node()

    def on_renewed(self, ev: LeaseRenewed) -> None:
        s = self.s
        s.lease_op = None
        self.database_answered()
        if s.epoch is None:
            return  # we gave the lease up meanwhile; the release is owed separately
        s.renewed_sent_at = max(s.renewed_sent_at or ev.sent_at, ev.sent_at)
        s.next_renew_at = s.renewed_sent_at + self.t.update_interval
        kill_at = kill_deadline(s, self.t)
        # sent_at is CLOCK_MONOTONIC: comparable across processes of one machine
        self.log("lease_renewed", "debug", epoch=s.epoch, sent_at=round(ev.sent_at, 6),
                 answered_after=round(self.now - ev.sent_at, 6))
        if kill_at is not None and s.node is not NodePhase.NONE:
            self.actions.append(SetNodeDeadline(kill_at))
        if ev.handover_requested and s.after_stop != "cooldown_handover" and not s.shutting_down:
            self.on_handover()

    def on_handover(self) -> None:
        s = self.s
        if s.epoch is None or s.state == State.STOPPING:
            return
        self.log("handover_requested", epoch=s.epoch)
        self.stop_for("cooldown_handover", "handover")

    def on_lost(self) -> None:
        s = self.s
        s.lease_op = None
        self.database_answered()
        if s.epoch is None:
            return
        self.log("lease_lost", "error", epoch=s.epoch, reason="renewal matched no row")
        s.epoch = None
        s.renewed_sent_at = None
        s.next_renew_at = None
        s.state = State.STOPPING if s.node is not NodePhase.NONE else s.state
        if s.node is not NodePhase.NONE:
            s.after_stop = "exit" if s.shutting_down else "standby"
            self.kill_node("lease_lost")
        elif not s.shutting_down:
            self.s.restart_at = None
            self.enter_standby()

    def on_released(self, released: bool) -> None:
        s = self.s
        s.lease_op = None
        self.database_answered()
        epoch = s.release_epoch
        s.release_epoch = None
        if released:
            self.log("lease_released", epoch=epoch)
        else:
            self.log("lease_release_noop", "warning", epoch=epoch)
        self.after_release()

    def after_release(self) -> None:
        s = self.s
        if s.node is not NodePhase.NONE or s.epoch is not None:
            return
        if s.shutting_down or s.after_stop == "exit":
            return  # reconcile exits
        if s.after_stop == "cooldown_crash":
            self.enter_cooldown(self.t.crash_cooldown)
        elif s.after_stop == "cooldown_handover":
            self.enter_cooldown(self.t.handover_cooldown)
        elif s.state == State.STOPPING or s.state == State.STANDBY:
            self.enter_standby(self.now + self.t.retry_interval)
        s.after_stop = "standby"

    def enter_cooldown(self, duration: float) -> None:
        self.s.state = State.COOLDOWN
        self.s.cooldown_until = self.now + duration
        self.log("cooldown_started", seconds=round(duration, 3))

    def on_call_failed(self, op: LeaseOpKind, reason: str) -> None:
        s = self.s
        s.lease_op = None
        if op == "renew" and s.epoch is not None:
            self.note_failure(reason)
            kill_at = kill_deadline(s, self.t)
            left = None if kill_at is None else round(kill_at - self.now, 3)
            self.log("lease_renewal_failed", "warning", epoch=s.epoch, reason=reason,
                     time_left=left)
            s.next_renew_at = self.now + self.t.renew_retry
        elif op == "release":
            self.note_failure(reason)
            epoch = s.release_epoch
            s.release_epoch = None
            self.log("lease_release_failed", "warning", epoch=epoch, reason=reason)
            self.after_release()
        else:
            self.database_failed(op, reason)
            # We lost sight of the row: we can no longer vouch it stayed unchanged.
            s.seen = None
            s.seen_since = None
            s.next_observe_at = self.now + self.t.retry_interval

    # -- node results

    def on_node_started(self, pid: int) -> None:
        s = self.s
        if s.node is NodePhase.STARTING:
            s.node = NodePhase.RUNNING
        s.node_pid = pid
        self.log("node_started", pid=pid, epoch=s.epoch)

    def on_node_exited(self, ev: NodeExited) -> None:
        s = self.s
        if s.node is NodePhase.NONE:
            return
        expected = s.stop_sent
        runtime = ev.runtime
        self.log("node_exited", "info" if expected else "error", pid=s.node_pid,
                 exit_code=ev.returncode, signal=ev.signal, runtime=round(runtime, 3),
                 killed_by=ev.killed_by, expected=expected, epoch=s.epoch)
        s.node = NodePhase.NONE
        s.node_pid = None
        s.stop_sent = False
        s.kill_sent = False
        if s.shutting_down:
            s.after_stop = "exit"
            s.state = State.STOPPING
            self.give_up_lease()
            return
        if expected:
            self.give_up_lease()
            if s.release_epoch is None:
                self.after_release()
            return
        self.on_crash(runtime)

    def on_crash(self, runtime: float) -> None:
        s = self.s
        if runtime >= self.t.reset_after:
            s.consecutive_crashes = 0
        s.consecutive_crashes += 1
        s.crash_times = tuple(t for t in s.crash_times if self.now - t < self.t.crash_window)
        s.crash_times += (self.now,)
        if len(s.crash_times) >= self.t.max_crashes:
            self.log("crash_loop", "error", crashes=len(s.crash_times),
                     window=self.t.crash_window, epoch=s.epoch)
            s.crash_times = ()
            s.consecutive_crashes = 0
            if s.lease_enabled:
                s.after_stop = "cooldown_crash"
                s.state = State.STOPPING
                self.give_up_lease()
                if s.release_epoch is None:
                    self.after_release()
            else:
                self.enter_cooldown(self.t.crash_cooldown)
            return
        delay = backoff_delay(s.consecutive_crashes, self.t)
        s.restart_at = self.now + delay
        s.state = State.BACKOFF
        self.log("node_restart_scheduled", delay=round(delay, 3), crashes=s.consecutive_crashes,
                 epoch=s.epoch)

    def on_shutdown(self, signal: str) -> None:
        s = self.s
        if s.shutting_down:
            self.kill_node("second_shutdown_request")
            return
        s.shutting_down = True
        self.log("shutdown_requested", signal=signal, epoch=s.epoch)
        s.restart_at = None
        s.cooldown_until = None
        s.after_stop = "exit"
        if s.node is not NodePhase.NONE:
            s.state = State.STOPPING
            self.stop_node("shutdown", self.planned_grace())
        else:
            s.state = State.STOPPING
            self.give_up_lease()

    # -- timers and the work they imply

    def reconcile(self) -> None:
        s, now, t = self.s, self.now, self.t
        if s.state == State.EXITED:
            return
        # 1. Fencing deadlines come first and never wait for anything.
        kill_at = kill_deadline(s, t)
        if kill_at is not None:
            if now >= kill_at:
                self.log("lease_lost", "error", epoch=s.epoch, reason="renewal deadline passed")
                if s.node is not NodePhase.NONE:
                    self.kill_node("renewal_deadline")
                    if not s.shutting_down:
                        s.after_stop = "standby"
                    s.state = State.STOPPING
                self.give_up_lease()
                if s.node is NodePhase.NONE and not s.shutting_down:
                    s.restart_at = None
                    self.enter_standby()
            elif (now >= kill_at - t.loss_grace and s.node is not NodePhase.NONE
                  and not s.stop_sent):
                self.log("lease_renewal_overdue", "error", epoch=s.epoch,
                         time_left=round(kill_at - now, 3))
                s.after_stop = "exit" if s.shutting_down else "standby"
                s.state = State.STOPPING
                self.stop_node("renewal_overdue", kill_at - now)
                self.give_up_lease()
        # A renewal keeps trying (hedged) until the kill deadline; say so early.
        if (s.lease_op == "renew" and s.epoch is not None and not s.renewal_slow_logged
                and now >= s.lease_op_since + 2 * t.renew_hedge):
            s.renewal_slow_logged = True
            kill_at = kill_deadline(s, t)
            self.log("lease_renewal_failed", "warning", epoch=s.epoch,
                     reason=f"no answer within {2 * t.renew_hedge:g} s; retrying on fresh "
                            "connections",
                     time_left=None if kill_at is None else round(kill_at - now, 3))
        # 2. Timers.
        if s.restart_at is not None and now >= s.restart_at and s.node is NodePhase.NONE:
            s.restart_at = None
            term_at = term_deadline(s, t)
            if not s.lease_enabled or (s.epoch is not None and term_at is not None
                                       and now < term_at):
                s.restarts += 1
                self.log("node_restarting", restarts=s.restarts, epoch=s.epoch)
                self.start_node()
            elif s.epoch is not None:
                s.restart_at = now + t.retry_interval  # wait for a renewal first
        if s.cooldown_until is not None and now >= s.cooldown_until:
            s.cooldown_until = None
            self.log("cooldown_ended")
            if s.lease_enabled:
                self.enter_standby()
            else:
                self.start_node()
        # 3. One lease call at a time.
        if s.lease_enabled and s.lease_op is None:
            if s.epoch is not None and s.next_renew_at is not None and now >= s.next_renew_at:
                # One renewal may keep trying (hedged) up to the kill deadline; the
                # deadlines above never wait for it.
                timeout = self.op_timeout() if kill_at is None else max(0.05, kill_at - now)
                self.begin_op("renew", RenewLease(s.epoch, timeout, self.t.renew_hedge))
            elif s.release_epoch is not None and s.node is NodePhase.NONE:
                self.begin_op("release", ReleaseLease(s.release_epoch, self.op_timeout()))
            elif (s.state == State.STANDBY and not s.shutting_down and s.begun
                  and now >= s.next_observe_at):
                self.begin_op("observe", ObserveLease(self.op_timeout()))
        # 4. Leaving.
        if (s.shutting_down and s.node is NodePhase.NONE and s.epoch is None
                and s.release_epoch is None and s.lease_op is None):
            s.state = State.EXITED
            self.log("supervisor_exiting", code=0)
            self.actions.append(Exit(0))
