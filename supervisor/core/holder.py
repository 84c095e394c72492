"""Rules of the holder: renewal results, handover, loss, release."""

from __future__ import annotations

from supervisor.core.base import _Base
from supervisor.core.messages import (
    LeaseOpKind,
    LeaseRenewed,
    SetNodeDeadline,
)
from supervisor.core.state import (
    NodePhase,
    kill_deadline,
)
from supervisor.core.transitions import State, change


class HolderRules(_Base):
    """What the holder does with renewal results, a handover request, a loss, a release."""

    def on_renewed(self, ev: LeaseRenewed) -> None:
        s = self.s
        s.lease.op = None
        self.database_answered()
        if s.lease.epoch is None:
            return  # we gave the lease up meanwhile; the release is owed separately
        s.lease.renewed_sent_at = max(s.lease.renewed_sent_at or ev.sent_at, ev.sent_at)
        s.lease.next_renew_at = s.lease.renewed_sent_at + self.t.update_interval
        kill_at = kill_deadline(s, self.t)
        # sent_at is CLOCK_MONOTONIC: comparable across processes of one machine
        self.log("lease_renewed", "debug", epoch=s.lease.epoch, sent_at=round(ev.sent_at, 6),
                 answered_after=round(self.now - ev.sent_at, 6),
                 renewed_at=None if ev.renewed_at is None else str(ev.renewed_at))
        if kill_at is not None and s.node.phase is not NodePhase.NONE:
            self.actions.append(SetNodeDeadline(kill_at))
        if ev.paused != s.paused:
            self.on_paused(ev.paused)
        self.note_schedule(ev)
        if ev.handover_requested and s.after_stop != "cooldown_handover" and not s.shutting_down:
            if s.paused:
                self.log("handover_ignored_while_paused", "warning", epoch=s.lease.epoch)
            else:
                self.on_handover()

    def note_schedule(self, ev: LeaseRenewed) -> None:
        """A handover set for a time (`supervisor.core.candidates`)."""

    def on_paused(self, paused: bool) -> None:
        """The pair was paused or resumed (seen on a renewal). Paused: the node is left
        alone (no restart on a crash, no stop); the deadlines still apply."""
        s = self.s
        s.paused = paused
        if paused:
            self.log("pair_paused", epoch=s.lease.epoch)
            if s.state == State.BACKOFF and s.crashes.restart_at is not None:
                # a restart that was due: left for `resume` like a crash while paused
                s.crashes.restart_at = None
                s.crashes.restart_when_resumed = True
                change(s, State.PAUSED)
                self.log("node_not_restarted_while_paused", "warning", epoch=s.lease.epoch)
            return
        self.log("pair_resumed", epoch=s.lease.epoch)
        if not s.crashes.restart_when_resumed:
            return
        s.crashes.restart_when_resumed = False
        if s.node.phase is NodePhase.NONE and s.lease.epoch is not None:
            s.crashes.restart_at = self.now  # the timers restart it (if the lease allows)

    def on_handover(self) -> None:
        s = self.s
        if s.lease.epoch is None or s.state == State.STOPPING:
            return
        self.log("handover_requested", epoch=s.lease.epoch)
        self.stop_for("cooldown_handover", "handover")

    def on_lost(self) -> None:
        s = self.s
        s.lease.op = None
        self.database_answered()
        if s.lease.epoch is None:
            return
        self.log("lease_lost", "error", epoch=s.lease.epoch, reason="renewal matched no row")
        s.lease.epoch = None
        s.lease.renewed_sent_at = None
        s.lease.next_renew_at = None
        if s.node.phase is not NodePhase.NONE:
            change(s, State.STOPPING)
        if s.node.phase is not NodePhase.NONE:
            s.after_stop = "exit" if s.shutting_down else "standby"
            self.kill_node("lease_lost")
        elif not s.shutting_down:
            self.s.crashes.restart_at = None
            self.enter_standby()

    def on_released(self, released: bool) -> None:
        s = self.s
        s.lease.op = None
        self.database_answered()
        epoch = s.lease.release_epoch
        s.lease.release_epoch = None
        if released:
            self.log("lease_released", epoch=epoch)
        else:
            self.log("lease_release_noop", "warning", epoch=epoch)
        self.after_release()

    def on_call_failed(self, op: LeaseOpKind, reason: str, refused: bool = False) -> None:
        s = self.s
        s.lease.op = None
        if op == "renew" and s.lease.epoch is not None:
            self.note_failure(reason, refused)
            kill_at = kill_deadline(s, self.t)
            left = None if kill_at is None else round(kill_at - self.now, 3)
            self.log("lease_renewal_failed", "warning", epoch=s.lease.epoch, reason=reason,
                     time_left=left)
            s.lease.next_renew_at = self.now + self.t.renew_retry
        elif op == "release":
            self.note_failure(reason, refused)
            epoch = s.lease.release_epoch
            s.lease.release_epoch = None
            self.log("lease_release_failed", "warning", epoch=epoch, reason=reason)
            self.after_release()
        else:
            self.database_failed(op, reason, refused)
            # We lost sight of the row: we can no longer vouch it stayed unchanged.
            s.lease.seen = None
            s.lease.seen_since = None
            s.lease.next_observe_at = self.now + self.t.retry_interval
