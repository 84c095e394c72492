"""One transition's working copy and the helpers every rule uses.

A `_Base` (through the rule mixins and `step._Step`) mutates a private copy of
the state and appends actions; it never does I/O or reads a clock.
"""

from __future__ import annotations

from typing import Literal

from supervisor.core.messages import (
    Action,
    KillNode,
    LeaseOpKind,
    Log,
    StartNode,
    StopNode,
)
from supervisor.core.state import (
    AfterStop,
    CoreState,
    NodePhase,
    Timing,
    kill_deadline,
)
from supervisor.core.transitions import State, change


class _Base:
    """One transition, mutating a private copy of the state."""

    def __init__(self, s: CoreState, now: float, timing: Timing, actions: list[Action]) -> None:
        self.s = s
        self.now = now
        self.t = timing
        self.actions = actions

    def log(self, event: str, level: Literal["debug", "info", "warning", "error"] = "info",
            **fields: object) -> None:
        self.actions.append(Log(event, level, tuple(fields.items())))

    def op_timeout(self) -> float:
        return self.t.operation_timeout

    def begin_op(self, kind: LeaseOpKind, action: Action) -> None:
        self.s.lease.op = kind
        self.s.lease.op_since = self.now
        self.s.lease.slow_logged = False
        self.actions.append(action)

    def give_up_lease(self) -> None:
        """Stop renewing; owe a release if the row may still name us."""
        if self.s.lease.epoch is not None:
            self.s.lease.release_epoch = self.s.lease.epoch
        self.s.lease.epoch = None
        self.s.lease.renewed_sent_at = None
        self.s.lease.next_renew_at = None

    def stop_node(self, reason: str, grace: float) -> None:
        if self.s.node.phase is NodePhase.NONE or self.s.node.stop_sent:
            return
        grace = max(0.0, grace)
        self.s.node.stop_sent = True
        self.s.node.phase = NodePhase.STOPPING
        self.log("node_stopping", reason=reason, grace=round(grace, 3), pid=self.s.node.pid)
        self.actions.append(StopNode(grace, planned=reason in ("shutdown", "handover")))

    def kill_node(self, reason: str) -> None:
        if self.s.node.phase is NodePhase.NONE or self.s.node.kill_sent:
            return
        self.s.node.kill_sent = True
        self.s.node.stop_sent = True
        self.s.node.phase = NodePhase.STOPPING
        self.log("node_killed", "warning", reason=reason, pid=self.s.node.pid)
        self.actions.append(KillNode())

    def planned_grace(self) -> float:
        """A planned stop gets the full S; the guard still kills at the kill deadline
        if renewals stop meanwhile (renewals go on while the node stops)."""
        return self.t.stop_timeout

    def start_node(self) -> None:
        self.s.node.phase = NodePhase.STARTING
        self.s.node.pid = None
        self.s.node.stop_sent = False
        self.s.node.kill_sent = False
        self.s.crashes.restart_at = None
        change(self.s, State.ACTIVE if self.s.lease_enabled else State.DISABLED)
        self.actions.append(StartNode(self.s.lease.epoch, kill_deadline(self.s, self.t)))

    def enter_standby(self, observe_at: float | None = None) -> None:
        change(self.s, State.STANDBY if self.s.lease_enabled else State.DISABLED)
        self.s.lease.seen = None
        self.s.lease.seen_since = None
        self.s.lease.next_observe_at = self.now if observe_at is None else observe_at

    def stop_for(self, after: AfterStop, reason: str) -> None:
        """Begin the orderly way out of holding: stop the node, then release."""
        self.s.after_stop = after
        change(self.s, State.STOPPING)
        if self.s.node.phase is not NodePhase.NONE:
            self.stop_node(reason, self.planned_grace())
        else:
            self.give_up_lease()

    def after_release(self) -> None:
        s = self.s
        if s.node.phase is not NodePhase.NONE or s.lease.epoch is not None:
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
        change(self.s, State.COOLDOWN)
        self.s.cooldown_until = self.now + duration
        self.log("cooldown_started", seconds=round(duration, 3))

    def database_answered(self) -> None:
        """A lease call got an answer from the database (whatever it said)."""
        s = self.s
        if s.db.failures:
            since = s.db.error_since if s.db.error_since is not None else self.now
            self.log("lease_call_recovered", failures_in_a_row=s.db.failures,
                     failed_for=round(self.now - since, 3))
        s.db.failures = 0
        s.db.refused = None
        s.db.error = None
        s.db.error_since = None
        s.db.error_logged_at = None
        s.db.ok_at = self.now

    def note_failure(self, reason: str, refused: bool = False) -> None:
        """Count a failed lease call (for status and the recovery log line). `refused`:
        the database answered that this role may not do it (a missing privilege), which
        is said as such, once, never as an unreachable database."""
        s = self.s
        s.db.failures += 1
        s.db.error = reason
        if s.db.error_since is None:
            s.db.error_since = self.now
        if refused and s.db.refused is None:
            self.log("database_privilege_missing", "error", reason=reason,
                     message="the database answers but refuses this role a privilege the "
                             "lease needs: a DBA runs what `corda-ha-supervisor schema` "
                             "prints (the supervisor keeps trying meanwhile)")
        s.db.refused = reason if refused else None

    def database_failed(self, op: LeaseOpKind, reason: str, refused: bool = False) -> None:
        """Record a failed standby call; log the first one and then at least every
        `error_repeat` seconds while the failures last."""
        s = self.s
        self.note_failure(reason, refused)
        last = s.db.error_logged_at
        if last is None or self.now - last >= self.t.error_repeat:
            s.db.error_logged_at = self.now
            failing_for = self.now - (s.db.error_since or self.now)
            self.log("lease_call_failed", "warning" if last is None else "error", op=op,
                     reason=reason, failures_in_a_row=s.db.failures,
                     failing_for=round(failing_for, 3))
        else:
            self.log("lease_call_failed", "debug", op=op, reason=reason,
                     failures_in_a_row=s.db.failures)
