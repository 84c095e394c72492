"""Rules of this host as a candidate (`supervisor.core.candidacy` holds the values): the
members seen (and the timing settings they publish), a handover set for a time (`handover
--at`), carried out by the holder within one renewal of the time when a live standby can
take over then, else cancelled."""

from __future__ import annotations

from supervisor.core.candidacy import best_candidate, live_candidates, timing_settings
from supervisor.core.holder import HolderRules
from supervisor.core.messages import LeaseRenewed, PeersSeen, SettleSchedule
from supervisor.core.transitions import State


class CandidateRules(HolderRules):
    """What the core does with the member table and with a handover set for a time."""

    def on_peers(self, ev: PeersSeen) -> None:
        """Remember the members; say once per change when they disagree on timing."""
        c = self.s.candidacy
        c.peers = ev.peers
        settings = timing_settings(ev.peers)
        if settings == c.settings:
            return
        before = c.settings
        c.settings = settings
        shown = sorted(f"updateInterval={u} waitInterval={w} margin={m} version={v}"
                       for u, w, m, v in settings)
        if len(settings) > 1:
            self.log("timing_mismatch", "warning", mismatch=True, settings=len(settings),
                     members=shown, message="the members publish different timing settings "
                     "or versions; the lease stays safe (the row carries the holder's W), "
                     "but failover times differ by host")
        elif len(before) > 1:
            self.log("timing_mismatch", mismatch=False, settings=len(settings), members=shown,
                     message="every member publishes the same timing settings again")

    def note_schedule(self, ev: LeaseRenewed) -> None:
        """A renewal says whether a handover is set for a time (in seconds from the
        database's now): mapped onto our clock, never earlier than the answer came."""
        c = self.s.candidacy
        if ev.handover_in is None:
            if c.handover_due_at is not None:
                self.log("handover_schedule_seen", at_in=None, epoch=self.s.lease.epoch)
            c.handover_due_at = None
            c.handover_at_to = None
            return
        due = self.now + max(0.0, ev.handover_in)
        if c.handover_due_at is None:
            self.log("handover_schedule_seen", at_in=round(ev.handover_in, 3),
                     to=ev.handover_at_to, epoch=self.s.lease.epoch)
        c.handover_due_at = due
        c.handover_at_to = ev.handover_at_to

    def schedule_due(self) -> None:
        """The set time has come: hand over to a live standby (the named one, else the
        best), or cancel the schedule when none could take over now."""
        s, c = self.s, self.s.candidacy
        due = c.handover_due_at
        if due is None or self.now < due:
            return
        c.handover_due_at = None
        if s.lease.epoch is None or s.shutting_down or s.state not in (
                State.ACTIVE, State.BACKOFF, State.PAUSED):
            return
        live = live_candidates(c.peers)
        if c.handover_at_to is not None:
            live = [p for p in live if p.machine_name == c.handover_at_to]
        if s.paused or not live:
            c.settle = (False, None)
            return
        to = c.handover_at_to or best_candidate(c.peers)
        c.settle = (True, to)

    def settle_call(self) -> bool:
        """Begin the lease call that takes a due schedule off the row; True if begun."""
        c, lease = self.s.candidacy, self.s.lease
        if c.settle is None or lease.epoch is None:
            c.settle = None
            return False
        proceed, to = c.settle
        self.begin_op("schedule", SettleSchedule(lease.epoch, proceed, to, self.op_timeout()))
        return True

    def on_settled(self, applied: bool) -> None:
        s, c = self.s, self.s.candidacy
        s.lease.op = None
        self.database_answered()
        settle, c.settle = c.settle, None
        if settle is None or not applied:
            self.log("handover_schedule_changed", "debug", epoch=s.lease.epoch)
            return
        proceed, to = settle
        if not proceed:
            why = ("the pair is paused" if s.paused else
                   "no live standby could take over at the set time")
            self.log("handover_schedule_cancelled", "warning", epoch=s.lease.epoch,
                     reason=why, to=c.handover_at_to)
            return
        self.log("handover_schedule_due", epoch=s.lease.epoch, to=to)
        self.on_handover()

    def settle_failed(self) -> None:
        """The call failed: try again on the next renewal's word."""
        self.s.candidacy.settle = None
