"""Rules of a standby: reading the row, the W stopwatch, server and machine identity,
taking the lease (docs/design.md, "The lease")."""

from __future__ import annotations

from supervisor.core.base import _Base
from supervisor.core.candidacy import priority_wait
from supervisor.core.messages import (
    AcquireLease,
    LeaseObserved,
    ReleaseLease,
)
from supervisor.core.state import (
    takeover_readiness,
    term_deadline,
)
from supervisor.core.transitions import State, change


class StandbyRules(_Base):
    """What a contender does with an observation and with an acquisition."""

    def note_server(self, ev: LeaseObserved) -> None:
        """Restart every stopwatch when another database server answers."""
        s = self.s
        if not ev.server or ev.server == s.lease.server:
            return
        w = self.t.wait_interval
        if s.lease.server is None:
            s.lease.server = ev.server
            if ev.exists and ev.row_server != ev.server:
                # first contact, and the row was written through another server (or by
                # a version that did not record it): this one may lack the last writes
                s.lease.server_watch_until = self.now + w
                self.log("database_row_from_other_server", "warning", server=ev.server,
                         row_server=ev.row_server, watch_for=w)
            elif ev.server_uptime is not None and ev.server_uptime < w:
                # it started moments ago: it may lack the last writes
                s.lease.server_watch_until = self.now + w
                self.log("database_server_young", "warning", server=ev.server,
                         uptime=round(ev.server_uptime, 3), watch_for=w)
            return
        self.log("database_server_changed", "warning", before=s.lease.server, after=ev.server,
                 watch_for=w)
        s.lease.server = ev.server
        s.lease.server_watch_until = self.now + w
        s.lease.seen = None
        s.lease.seen_since = None

    def note_conflict(self, conflict: str | None) -> None:
        s = self.s
        if conflict is None:
            if s.name_conflict is not None:
                self.log("machine_name_conflict_cleared")
            s.name_conflict = None
            s.logged.name_conflict_at = None
            return
        last = s.logged.name_conflict_at
        if s.name_conflict != conflict or last is None or self.now - last >= self.t.error_repeat:
            self.log("machine_name_conflict", "error", detail=conflict)
            s.logged.name_conflict_at = self.now
        s.name_conflict = conflict

    def on_observed(self, ev: LeaseObserved) -> None:
        s = self.s
        s.lease.op = None
        self.database_answered()
        s.lease.holder = ev.holder
        self.note_server(ev)
        if s.state != State.STANDBY or s.shutting_down:
            return
        if ev.version != s.lease.seen:
            self.log("lease_seen", "debug", holder=ev.holder, epoch=ev.version.epoch,
                     free=ev.free, expired=ev.expired)
            s.lease.seen = ev.version
            s.lease.seen_since = self.now
        if ev.mine:
            # An acquire we gave up on committed after all: hand it back at once.
            self.log("lease_stray_released", "warning", epoch=ev.version.epoch)
            self.begin_op("release", ReleaseLease(ev.version.epoch, self.op_timeout()))
            return
        self.note_conflict(ev.name_conflict)
        if not ev.free and ev.holder is not None:
            s.lease.last_holder = ev.holder
            s.lease.handover_seen = ev.handover_requested
        self.log_view(ev)
        self.note_paused(ev)
        if self.takes_nothing(ev):
            return
        self.contend(ev)

    def contend(self, ev: LeaseObserved) -> None:
        """A standby that may take the lease: take a free row (after any priority
        wait), reclaim a dead predecessor's, or an expired one unchanged for W plus the
        priority wait; otherwise read the row again when it could next be taken."""
        s = self.s
        assert s.lease.seen_since is not None
        unchanged_for = self.now - s.lease.seen_since
        extra = priority_wait(s.candidacy, self.t.update_interval)
        if ev.free and unchanged_for < extra:
            # a live candidate of higher priority goes first (only ever a longer wait)
            s.lease.next_observe_at = min(self.now + self.t.poll_interval,
                                          s.lease.seen_since + extra)
            return
        if ev.free:
            expected = ev.version if ev.exists else None
            if not ev.exists:
                self.note_acquire("new lease (no row yet)", None)
            else:
                handed_over = s.lease.handover_seen or ev.handover_requested
                self.note_acquire("handed over" if handed_over else "released",
                                  s.lease.last_holder)
            self.begin_op("acquire", AcquireLease(expected, None, s.lease.server,
                                                  self.op_timeout()))
            return
        if ev.reclaimable is not None:
            self.log("lease_takeover_from_dead_predecessor", pid=ev.reclaimable.pid)
            self.note_acquire(f"reclaimed after a restart (our predecessor pid "
                              f"{ev.reclaimable.pid} is gone)", ev.holder)
            self.begin_op("acquire", AcquireLease(ev.version, ev.reclaimable, s.lease.server,
                                                  self.op_timeout()))
            return
        wait = self.t.wait_interval + extra
        if ev.expired and unchanged_for >= wait:
            after = f", priority wait {extra:g} s" if extra else ""
            self.note_acquire(f"expired: unchanged for {unchanged_for:.3g} s (W = "
                              f"{self.t.wait_interval:g} s{after}) and past expires_at",
                              ev.holder)
            self.begin_op("acquire", AcquireLease(ev.version, None, s.lease.server,
                                                  self.op_timeout()))
            return
        next_at = self.now + self.t.poll_interval
        if ev.expired or unchanged_for + self.t.poll_interval >= wait:
            next_at = min(next_at, s.lease.seen_since + wait)
        s.lease.next_observe_at = max(self.now, next_at)

    def note_paused(self, ev: LeaseObserved) -> None:
        s = self.s
        if ev.paused != s.paused:
            if ev.paused:
                self.log("pair_paused", holder=ev.holder)
            else:
                self.log("pair_resumed", holder=ev.holder)
            s.paused = ev.paused

    def takes_nothing(self, ev: LeaseObserved) -> bool:
        """True (the next look scheduled) when this host may take nothing now: never
        (`candidate.nofailover`), not ready, cannot fence, paused, handed over to a named
        other machine, or a new server not watched for W yet."""
        s = self.s
        if (s.candidacy.nofailover
                or s.shared_problem is not None
                or s.fencing_problem is not None
                or ev.paused
                or (ev.free and ev.reserved_for_other)):
            s.lease.next_observe_at = self.now + self.t.poll_interval
            return True
        watch_until = s.lease.server_watch_until
        if watch_until is not None and self.now < watch_until:
            # Only time watched on our own clock since the server changed counts.
            s.lease.next_observe_at = min(self.now + self.t.poll_interval, watch_until)
            return True
        return False

    def note_acquire(self, how: str, previous: str | None) -> None:
        self.s.lease.acquire_how = how
        self.s.lease.acquire_from = previous

    def log_view(self, ev: LeaseObserved) -> None:
        """A standby says at INFO what it sees, whenever that changes: the holder, the
        epoch, and whether it could take over (and why not)."""
        s = self.s
        can, why = takeover_readiness(s, self.now)
        # the reason's kind, not its details (a countdown, an error text) decides a change
        kind = None if can else why.split(":", 1)[0]
        view = (ev.holder, None if ev.free else ev.version.epoch, can, kind)
        if view != s.logged.standby_view:
            s.logged.standby_view = view
            self.log("standby_view", holder=ev.holder, epoch=view[1], free=ev.free,
                     could_take_over=can, reason=why)

    def on_acquired(self, epoch: int, sent_at: float) -> None:
        s = self.s
        s.lease.op = None
        self.database_answered()
        s.lease.epoch = epoch
        s.lease.renewed_sent_at = sent_at
        s.lease.next_renew_at = sent_at + self.t.update_interval
        s.lease.seen = None
        s.lease.seen_since = None
        s.crashes.consecutive = 0
        s.crashes.times = ()
        self.log("lease_acquired", epoch=epoch, sent_at=round(sent_at, 6),
                 how=s.lease.acquire_how or "unknown", previous_holder=s.lease.acquire_from)
        s.logged.standby_view = None
        if s.shutting_down:
            self.s.after_stop = "exit"
            change(self.s, State.STOPPING)
            self.give_up_lease()
            return
        term_at = term_deadline(s, self.t)
        if term_at is not None and self.now >= term_at:
            # The answer came too late to run a node safely on this lease: hand it back.
            self.log("lease_acquired_too_late", "warning", epoch=epoch,
                     late_by=round(self.now - term_at, 3))
            s.after_stop = "standby"
            change(s, State.STOPPING)
            self.give_up_lease()
            return
        self.start_node()
