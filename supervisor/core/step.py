"""`step(state, event, now, timing) -> (state, actions)`: one transition."""

from __future__ import annotations

from supervisor.core.candidates import CandidateRules
from supervisor.core.lifecycle import NodeRules
from supervisor.core.messages import (
    Action,
    Begin,
    Event,
    Exit,
    FencingChecked,
    HandoverRequested,
    LeaseAcquired,
    LeaseCallFailed,
    LeaseLost,
    LeaseNotAcquired,
    LeaseObserved,
    LeaseReleased,
    LeaseRenewed,
    Log,
    NodeExited,
    NodeReady,
    NodeStarted,
    NodeStartRefused,
    ObserveLease,
    PeerReleased,
    PeersSeen,
    ReleaseLease,
    RenewLease,
    ScheduleSettled,
    SharedDirsChecked,
    ShutdownRequested,
    Tick,
)
from supervisor.core.standby import StandbyRules
from supervisor.core.state import (
    CoreState,
    NodePhase,
    Timing,
    kill_deadline,
    term_deadline,
)
from supervisor.core.transitions import State, change


def step(
    state: CoreState, event: Event, now: float, timing: Timing
) -> tuple[CoreState, list[Action]]:
    """Feed one event; return the new state and the actions to carry out, in order."""
    s = state.copy()
    actions: list[Action] = []
    before = state.state
    _Step(s, now, timing, actions).handle(event)
    if s.state != before:
        # after its cause: the events that moved the state are logged first
        actions.append(Log("state_changed", "info", (("from", str(before)), ("to", str(s.state)),
                                                     ("epoch", s.lease.epoch))))
    return s, actions


class _Step(StandbyRules, CandidateRules, NodeRules):
    """Dispatches one event to its rule, then `reconcile()` lets the deadlines (first,
    never waiting for anything), the timers and the next lease call act."""

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
                s.lease.op = None
                self.database_answered()
                s.lease.next_observe_at = self.now + self.t.retry_interval
            case LeaseRenewed():
                self.on_renewed(event)
            case LeaseLost():
                self.on_lost()
            case LeaseReleased(released=released):
                self.on_released(released)
            case LeaseCallFailed(op="schedule", reason=reason, missing_privilege=refused):
                s.lease.op = None
                self.note_failure(reason, refused)
                self.settle_failed()
            case LeaseCallFailed(op=op, reason=reason, missing_privilege=refused):
                self.on_call_failed(op, reason, refused)
            case PeersSeen():
                self.on_peers(event)
            case ScheduleSettled(applied=applied):
                self.on_settled(applied)
            case PeerReleased():
                if s.state == State.STANDBY:
                    s.lease.next_observe_at = self.now
            case NodeStarted(pid=pid):
                self.on_node_started(pid)
            case NodeReady(pid=pid):
                self.on_node_ready(pid)
            case SharedDirsChecked(problem=problem):
                self.on_shared_dirs(problem)
            case FencingChecked(problem=problem, pending=pending):
                self.on_fencing(problem, pending)
            case NodeExited():
                self.on_node_exited(event)
            case NodeStartRefused(reason=reason):
                self.on_node_start_refused(reason)
            case ShutdownRequested(signal=signal):
                self.on_shutdown(signal)
            case HandoverRequested():
                self.on_handover()
        self.reconcile()

    def on_shared_dirs(self, problem: str | None) -> None:
        """The shared directories' check: logged when its answer changes."""
        s = self.s
        if problem != s.shared_problem:
            if problem is None:
                self.log("shared_dirs_ok")
            else:
                self.log("shared_dirs_failed", "error", problem=problem)
        s.shared_problem = problem

    def on_fencing(self, problem: str | None, pending: bool) -> None:
        """The database fencing check: logged when its answer changes."""
        s = self.s
        if problem != s.fencing_problem:
            if pending:
                self.log("fencing_pending", "debug", problem=problem)
            elif problem is None:
                self.log("fencing_ready")
            else:
                self.log("fencing_unavailable", "error", problem=problem)
        s.fencing_problem = problem

    def reconcile(self) -> None:
        """After every event: the deadlines first (they never wait for anything), then
        the timers, then the next lease call, then leaving."""
        if self.s.state == State.EXITED:
            return
        self.deadlines()
        self.timers()
        self.next_lease_call()
        self.leave_when_done()

    def deadlines(self) -> None:
        s, now, t = self.s, self.now, self.t
        kill_at = kill_deadline(s, t)
        if kill_at is not None:
            if now >= kill_at:
                self.log("lease_lost", "error", epoch=s.lease.epoch,
                         reason="renewal deadline passed")
                if s.node.phase is not NodePhase.NONE:
                    self.kill_node("renewal_deadline")
                    if not s.shutting_down:
                        s.after_stop = "standby"
                    change(s, State.STOPPING)
                self.give_up_lease()
                if s.node.phase is NodePhase.NONE and not s.shutting_down:
                    s.crashes.restart_at = None
                    self.enter_standby()
            elif (now >= kill_at - t.loss_grace and s.node.phase is not NodePhase.NONE
                  and not s.node.stop_sent):
                self.log("lease_renewal_overdue", "error", epoch=s.lease.epoch,
                         time_left=round(kill_at - now, 3))
                s.after_stop = "exit" if s.shutting_down else "standby"
                change(s, State.STOPPING)
                self.stop_node("renewal_overdue", kill_at - now)
                self.give_up_lease()
        # A renewal keeps trying (hedged) until the kill deadline; say so early.
        if (s.lease.op == "renew" and s.lease.epoch is not None and not s.lease.slow_logged
                and now >= s.lease.op_since + 2 * t.renew_hedge):
            s.lease.slow_logged = True
            kill_at = kill_deadline(s, t)
            self.log("lease_renewal_failed", "warning", epoch=s.lease.epoch,
                     reason=f"no answer within {2 * t.renew_hedge:g} s; retrying on fresh "
                            "connections",
                     time_left=None if kill_at is None else round(kill_at - now, 3))

    def timers(self) -> None:
        s, now, t = self.s, self.now, self.t
        self.check_readiness()
        self.schedule_due()
        restart_at = s.crashes.restart_at
        if restart_at is not None and now >= restart_at and s.node.phase is NodePhase.NONE:
            s.crashes.restart_at = None
            term_at = term_deadline(s, t)
            if not s.lease_enabled or (s.lease.epoch is not None and term_at is not None
                                       and now < term_at):
                s.crashes.restarts += 1
                self.log("node_restarting", restarts=s.crashes.restarts, epoch=s.lease.epoch)
                self.start_node()
            elif s.lease.epoch is not None:
                s.crashes.restart_at = now + t.retry_interval  # wait for a renewal first
        if s.cooldown_until is not None and now >= s.cooldown_until:
            s.cooldown_until = None
            self.log("cooldown_ended")
            if s.lease_enabled:
                self.enter_standby()
            else:
                self.start_node()

    def next_lease_call(self) -> None:
        """One lease call at a time: a renewal due, else a release owed, else a look."""
        s, now = self.s, self.now
        if not s.lease_enabled or s.lease.op is not None:
            return
        lease = s.lease
        renew_at = lease.next_renew_at
        if lease.epoch is not None and renew_at is not None and now >= renew_at:
            # One renewal may keep trying (hedged) up to the kill deadline; the
            # deadlines above never wait for it.
            kill_at = kill_deadline(s, self.t)
            timeout = self.op_timeout() if kill_at is None else max(0.05, kill_at - now)
            self.begin_op("renew", RenewLease(lease.epoch, timeout, self.t.renew_hedge))
        elif s.candidacy.settle is not None and self.settle_call():
            return
        elif lease.release_epoch is not None and s.node.phase is NodePhase.NONE:
            self.begin_op("release", ReleaseLease(lease.release_epoch, self.op_timeout()))
        elif (s.state == State.STANDBY and not s.shutting_down and s.begun
              and now >= lease.next_observe_at):
            self.begin_op("observe", ObserveLease(self.op_timeout()))

    def leave_when_done(self) -> None:
        s = self.s
        if (s.shutting_down and s.node.phase is NodePhase.NONE and s.lease.epoch is None
                and s.lease.release_epoch is None and s.lease.op is None):
            change(s, State.EXITED)
            self.log("supervisor_exiting", code=0)
            self.actions.append(Exit(0))
