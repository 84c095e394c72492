"""The scenarios that kill the generated SQL mutants (`sqlgen.py`), and which kills which.

A `Scenario` is one call of one lease-store operation on a row set up so that every
condition of the statement holds but the one it is about: that one alone decides
the outcome. `tests/test_sql_predicates.py` runs each against real PostgreSQL with
the database clock held at `T0` (times here are seconds relative to it; W = 10 s) and
checks the answer and every row afterwards. `KILLS` maps every generated mutant's key
to the scenario in which only its condition differs; `EQUIVALENT` lists the mutants no
behaviour can tell apart from the statement, with the reason.
`tests/test_sql_generated_mutants.py` checks that both cover the generated list exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Row = dict[str, Any]
LEASE = "lease-a"  # the scenarios' lease; rows of other leases name their own
W = 10.0
DAY = 86400.0

MINE: Row = dict(holder="node-a", holder_host="host-a", holder_pid=1111,
                 holder_machine="mach-a", holder_started=5555, instance="inst-a")
OTHER: Row = dict(holder="node-b", holder_host="host-b", holder_pid=2222,
                  holder_machine="mach-b", holder_started=6666, instance="inst-b")
NOBODY: Row = dict.fromkeys(MINE)
# our own process of before a restart: same machineName and machine identity
PREDECESSOR: Row = dict(MINE, holder_host="host-a-old", holder_pid=4242, holder_started=777,
                        instance="inst-old")
UNSCHEDULED: Row = dict(handover_at=None, handover_at_to=None)  # no `handover --at`
_QUIET: Row = dict(acquired_at=-100.0, handover_requested_at=None, server_id="old-server",
                   paused_at=None, handover_to=None, **UNSCHEDULED)

LIVE_OTHER: Row = dict(OTHER, epoch=3, renewed_at=-1.0, expires_at=9.0, **_QUIET)
EXPIRED_OTHER: Row = dict(LIVE_OTHER, renewed_at=-15.0, expires_at=-5.0)
# every column set, each unlike what an acquisition writes
EXPIRED_ASKED: Row = dict(EXPIRED_OTHER, handover_requested_at=-16.0, handover_to="node-c",
                          handover_at=30.0, handover_at_to="node-c")
RELEASED: Row = dict(NOBODY, epoch=3, renewed_at=-2.0, expires_at=-1.0, **_QUIET)
MY_LIVE: Row = dict(MINE, epoch=3, renewed_at=-1.0, expires_at=9.0, **_QUIET)
PREDECESSOR_LIVE: Row = dict(PREDECESSOR, epoch=3, renewed_at=-1.0, expires_at=9.0, **_QUIET)
# made by `pause` before the pair ever ran, then resumed
NEVER_RUN: Row = dict(NOBODY, epoch=0, acquired_at=None, renewed_at=None, expires_at=None,
                      handover_requested_at=None, server_id=None, paused_at=None,
                      handover_to=None, **UNSCHEDULED)
TAKEOVER = (4242, 777)  # PREDECESSOR's pid and start time


def row(base: Row, **changes: Any) -> Row:
    return {**base, **changes}


@dataclass(frozen=True)
class Scenario:
    """One operation on a set-up database, and what it must decide.

    `op`: acquire, renew, release, observe, request_handover, set_paused,
    record_acquired, record_ended, read_history, members_refresh, members_read,
    schedule_settle (the holder takes a due `handover --at` off the row: `settle_op`),
    schedule_set (`handover --at` / `--cancel`: `set_op`), schedule_read (`read_op`).
    `lease`: the row of `LEASE` before (None: none). `others`: rows of other leases
    (`lease_name` given), written first; they must not change. `history`, `members`:
    rows of those tables before (`lease_name` defaults to `LEASE`). `args`: the call's
    arguments (see the test module). `expect`: taken / renewed / released / requested
    (bool) for the lease writes; for `observe` the fields `expired`, `paused`,
    `reserved_for` that differ from their default (False, False, None); for
    `record_acquired` (epochs ended, row inserted); for `record_ended` whether the row
    was written; for `members_refresh` the instances removed; for `schedule_settle`
    whether the schedule was taken off (as a handover request to `args["to"]` when
    `args["proceed"]`, else as a cancellation). `schedule_set` and `schedule_read`
    decide nothing beyond which row they touch: the answer follows from the rows.
    """

    op: str
    lease: Row | None = None
    others: tuple[Row, ...] = ()
    history: tuple[Row, ...] = ()
    members: tuple[Row, ...] = ()
    args: dict[str, Any] = field(default_factory=dict)
    expect: Any = True
    why: str = ""


S = Scenario
_RESERVED = row(RELEASED, handover_to="node-c")  # released by `handover --to node-c`


def _reserved(released_at: float) -> Row:
    return row(_RESERVED, renewed_at=released_at - 1, expires_at=released_at)


def _held(renewed: float, expires: float) -> Row:
    return row(LIVE_OTHER, renewed_at=renewed, expires_at=expires)


ACQUIRE: dict[str, Scenario] = {
    "acq-insert": S("acquire", None, args={"expected": None}),
    "acq-insert-other-server": S("acquire", None, args={"expected": None, "server": "other"},
                                 expect=False),
    "acq-insert-any-server": S("acquire", None, args={"expected": None, "server": None}),
    "acq-free": S("acquire", RELEASED),
    "acq-free-no-expected": S("acquire", NEVER_RUN, args={"expected": None}, expect=False,
                              why="a row exists: it is taken only as the version watched"),
    "acq-free-paused": S("acquire", row(RELEASED, paused_at=-5.0), expect=False),
    "acq-free-stale-epoch": S("acquire", RELEASED, args={"expected": {"epoch": 2}},
                              expect=False),
    "acq-reserved-other": S("acquire", _reserved(-1.0), expect=False),
    "acq-reserved-me": S("acquire", row(_reserved(-1.0), handover_to="node-a")),
    "acq-reserved-other-2w-ago": S("acquire", _reserved(-2 * W)),
    "acq-reserved-other-long-ago": S("acquire", _reserved(-2.5 * W)),
    "acq-reserved-other-1.5w-ago": S("acquire", _reserved(-1.5 * W), expect=False),
    "acq-reserved-other-just-under-2w": S("acquire", _reserved(-2 * W + 0.5), expect=False),
    "acq-expired-held-reserved": S("acquire", row(EXPIRED_OTHER, handover_to="node-c"),
                                   why="the holder died before it released to node-c"),
    "acq-expired": S("acquire", EXPIRED_OTHER),
    "acq-expired-asked": S("acquire", EXPIRED_ASKED),
    "acq-expired-other-instance": S("acquire", EXPIRED_OTHER,
                                    args={"expected": {"instance": "inst-x"}}, expect=False),
    "acq-expired-other-renewal": S("acquire", EXPIRED_OTHER,
                                   args={"expected": {"renewed_at": -16.0}}, expect=False),
    "acq-live": S("acquire", LIVE_OTHER, expect=False),
    "acq-held-expires-later": S("acquire", _held(-15.0, 5.0), expect=False,
                                why="renewed W ago by a holder with a longer W"),
    "acq-held-expires-now": S("acquire", _held(-15.0, 0.0), expect=False),
    "acq-held-expired-0.5s": S("acquire", _held(-15.0, -0.5)),
    "acq-held-expires-in-0.5s": S("acquire", _held(-15.0, 0.5), expect=False),
    "acq-held-renewed-0.5w-ago": S("acquire", _held(-5.0, -1.0), expect=False,
                                   why="past expires_at (a holder with a shorter W) "
                                       "but renewed less than W ago"),
    "acq-held-renewed-w-ago": S("acquire", _held(-W, -1.0), expect=False),
    "acq-held-renewed-w+0.5s-ago": S("acquire", _held(-W - 0.5, -1.0)),
    "acq-held-renewed-w-0.5s-ago": S("acquire", _held(-W + 0.5, -1.0), expect=False),
    "acq-reclaim": S("acquire", PREDECESSOR_LIVE, args={"takeover": TAKEOVER}),
    "acq-reclaim-other-name": S("acquire", row(PREDECESSOR_LIVE, holder="node-x"),
                                args={"takeover": TAKEOVER}, expect=False),
    "acq-reclaim-other-machine": S("acquire", row(PREDECESSOR_LIVE, holder_machine="mach-x"),
                                   args={"takeover": TAKEOVER}, expect=False),
    "acq-reclaim-other-pid": S("acquire", PREDECESSOR_LIVE, args={"takeover": (4243, 777)},
                               expect=False),
    "acq-reclaim-other-start": S("acquire", PREDECESSOR_LIVE, args={"takeover": (4242, 778)},
                                 expect=False),
}

RENEW_RELEASE: dict[str, Scenario] = {
    "renew": S("renew", MY_LIVE),
    "renew-twin-lease": S("renew", MY_LIVE, others=(row(MY_LIVE, lease_name="lease-z"),),
                          why="the same process and epoch in another lease's row"),
    "renew-other-instance": S("renew", row(LIVE_OTHER, epoch=3), expect=False),
    "renew-old-epoch": S("renew", MY_LIVE, args={"epoch": 2}, expect=False),
    "renew-expired": S("renew", row(MY_LIVE, renewed_at=-15.0, expires_at=-5.0), expect=False),
    "renew-expires-now": S("renew", row(MY_LIVE, renewed_at=-W, expires_at=0.0), expect=False),
    "renew-expired-0.5s": S("renew", row(MY_LIVE, expires_at=-0.5), expect=False),
    "renew-expires-in-0.5s": S("renew", row(MY_LIVE, expires_at=0.5)),
    "release": S("release", MY_LIVE),
    "release-twin-lease": S("release", MY_LIVE, others=(row(MY_LIVE, lease_name="lease-z"),)),
    "release-other-instance": S("release", LIVE_OTHER, expect=False),
    "release-old-epoch": S("release", MY_LIVE, args={"epoch": 2}, expect=False),
    "handover": S("request_handover", LIVE_OTHER),
    "handover-again": S("request_handover", row(LIVE_OTHER, handover_requested_at=-3.0),
                        why="an earlier, still pending request keeps its time"),
    "handover-other-lease": S("request_handover", LIVE_OTHER,
                              others=(row(LIVE_OTHER, lease_name="lease-z"),)),
    "handover-free": S("request_handover", RELEASED, expect=False),
    "pause": S("set_paused", MY_LIVE, args={"paused": True}),
    "pause-again": S("set_paused", row(MY_LIVE, paused_at=-30.0), args={"paused": True}),
    "resume": S("set_paused", row(MY_LIVE, paused_at=-30.0), args={"paused": False}),
    "pause-before-run": S("set_paused", None, args={"paused": True}),
    "resume-before-run": S("set_paused", None, args={"paused": False}),
}

OBSERVE: dict[str, Scenario] = {
    "obs-none": S("observe", None, expect={}),
    "obs-other-lease-first": S("observe", RELEASED, others=(row(LIVE_OTHER, lease_name="lease-0"),),
                               expect={}),
    "obs-live": S("observe", LIVE_OTHER, expect={}),
    "obs-expired": S("observe", EXPIRED_OTHER, expect={"expired": True}),
    "obs-free-long-ago": S("observe", row(RELEASED, renewed_at=-30.0, expires_at=-25.0),
                           expect={}),
    "obs-held-expires-later": S("observe", _held(-15.0, 5.0), expect={}),
    "obs-held-expires-now": S("observe", _held(-15.0, 0.0), expect={}),
    "obs-held-expired-0.5s": S("observe", _held(-15.0, -0.5), expect={"expired": True}),
    "obs-held-expires-in-0.5s": S("observe", _held(-15.0, 0.5), expect={}),
    "obs-held-renewed-0.5w-ago": S("observe", _held(-5.0, -1.0), expect={}),
    "obs-held-renewed-w-ago": S("observe", _held(-W, -1.0), expect={}),
    "obs-held-renewed-w+0.5s-ago": S("observe", _held(-W - 0.5, -1.0), expect={"expired": True}),
    "obs-held-renewed-w-0.5s-ago": S("observe", _held(-W + 0.5, -1.0), expect={}),
    "obs-paused": S("observe", row(LIVE_OTHER, paused_at=-3.0), expect={"paused": True}),
    "obs-held-asked-to-node-c": S("observe", row(LIVE_OTHER, handover_requested_at=-1.0,
                                                 handover_to="node-c"), expect={}),
    "obs-reserved": S("observe", _reserved(-1.0), expect={"reserved_for": "node-c"}),
    "obs-reserved-1.5w-ago": S("observe", _reserved(-1.5 * W),
                               expect={"reserved_for": "node-c"}),
    "obs-reserved-2w-ago": S("observe", _reserved(-2 * W), expect={}),
    "obs-reserved-long-ago": S("observe", _reserved(-2.5 * W), expect={}),
    "obs-reserved-just-over-2w": S("observe", _reserved(-2 * W - 0.5), expect={}),
    "obs-reserved-just-under-2w": S("observe", _reserved(-2 * W + 0.5),
                                    expect={"reserved_for": "node-c"}),
}

_H = dict(holder="node-b", holder_host="host-b", how="released", previous_holder=None)


def _h(epoch: int, acquired: float, ended: float | None = None, reason: str | None = None,
       **more: Any) -> Row:
    return dict(_H, epoch=epoch, acquired_at=acquired, ended_at=ended, end_reason=reason,
                **more)


_PAST = (_h(2, -200.0, -150.0, "released"), _h(3, -100.0))
_OTHER_OPEN = _h(1, -300.0, lease_name="lease-z")
HISTORY: dict[str, Scenario] = {
    "hist-acquired": S("record_acquired", history=(*_PAST, _OTHER_OPEN),
                       args={"epoch": 4}, expect=({3}, True)),
    "hist-acquired-after-a-newer": S("record_acquired", history=(*_PAST, _h(5, -10.0)),
                                     args={"epoch": 4}, expect=({3}, True),
                                     why="a late record must not end a newer acquisition"),
    "hist-acquired-twice": S("record_acquired", history=(*_PAST, _h(4, -10.0)),
                             args={"epoch": 4}, expect=({3}, False)),
    "hist-ended": S("record_ended", history=(_h(3, -100.0), _h(3, -300.0, lease_name="lease-z")),
                    args={"epoch": 3}),
    "hist-ended-next-to-taken-over": S("record_ended",
                                       history=(_h(2, -200.0, -50.0, "taken over"),
                                                _h(3, -100.0)), args={"epoch": 3}),
    "hist-ended-by-its-holder": S("record_ended", history=(_h(3, -100.0, -5.0, "lost"),),
                                  args={"epoch": 3}, expect=False),
    "hist-ended-after-taken-over": S("record_ended",
                                     history=(_h(3, -100.0, -5.0, "taken over"),),
                                     args={"epoch": 3},
                                     why="the holder's own account wins, at the earlier time"),
    "hist-read": S("read_history", history=(*_PAST, _OTHER_OPEN), args={"limit": 10}),
}

_MB = dict(machine_name="node-b", machine_identity="mach-b", host="host-b", pid=2222,
           state="standby", can_take_over=True, reason="ok", version="1.0",
           started_at=-500.0, priority=0, nofailover=False, update_interval_ms=2000,
           wait_interval_ms=4000, margin_ms=400)


def _m(instance: str, last_seen: float, **more: Any) -> Row:
    return dict(_MB, instance=instance, last_seen=last_seen, **more)


_ME = _m("inst-a", -2.0, machine_name="node-a", machine_identity="mach-a", host="host-a",
         pid=1111, state="starting", can_take_over=False, reason="booting", version="0.9",
         started_at=-100.0)
_PRED = dict(machine_name="node-a", machine_identity="mach-a")
MEMBERS: dict[str, Scenario] = {
    "mem-new": S("members_refresh", members=(_m("inst-b", -1.0),), expect=set()),
    "mem-refresh": S("members_refresh", members=(_ME, _m("inst-b", -1.0)), expect=set()),
    "mem-own-row-stale": S("members_refresh", members=(row(_ME, last_seen=-10.0),),
                           expect=set()),
    "mem-36-hours": S("members_refresh", members=(_ME, _m("inst-old", -1.5 * DAY),
                                                  _m("inst-z", -1.5 * DAY, lease_name="lease-z")),
                      expect={"inst-old"}),
    "mem-24-hours": S("members_refresh", members=(_ME, _m("inst-old", -DAY)), expect=set()),
    "mem-24-hours-0.5s": S("members_refresh", members=(_ME, _m("inst-old", -DAY - 0.5)),
                           expect={"inst-old"}),
    "mem-24-hours-less-0.5s": S("members_refresh", members=(_ME, _m("inst-old", -DAY + 0.5)),
                                expect=set()),
    "mem-predecessor": S("members_refresh", members=(_ME, _m("inst-old", -10.0, **_PRED)),
                         expect={"inst-old"}),
    "mem-predecessor-fresh": S("members_refresh", members=(_ME, _m("inst-old", -1.0, **_PRED)),
                               expect=set()),
    "mem-predecessor-6s": S("members_refresh", members=(_ME, _m("inst-old", -6.0, **_PRED)),
                            expect=set()),
    "mem-predecessor-6.5s": S("members_refresh", members=(_ME, _m("inst-old", -6.5, **_PRED)),
                              expect={"inst-old"}),
    "mem-predecessor-5.5s": S("members_refresh", members=(_ME, _m("inst-old", -5.5, **_PRED)),
                              expect=set()),
    "mem-same-machine-other-name": S("members_refresh",
                                     members=(_ME, _m("inst-x", -10.0, machine_name="node-x",
                                                      machine_identity="mach-a")),
                                     expect=set()),
    "mem-same-name-other-machine": S("members_refresh",
                                     members=(_ME, _m("inst-x", -10.0, machine_name="node-a",
                                                      machine_identity="mach-x")),
                                     expect=set()),
    "mem-read": S("members_read", members=(_ME, _m("inst-b", -1.0),
                                           _m("inst-z", -1.0, lease_name="lease-z"))),
}

# the holder's row with a handover set for 5 s ago, to node-b (`handover --at ... --to`)
_DUE = row(MY_LIVE, handover_at=-5.0, handover_at_to="node-b")
# ... and a pending `handover --to node-c` of 3 s ago, not yet seen by the holder
_DUE_ASKED = row(_DUE, handover_requested_at=-3.0, handover_to="node-c")
_GO = {"proceed": True, "to": "node-b"}  # a live standby can take over: hand over
_STAY = {"proceed": False, "to": None}  # none can: cancel the schedule


def _due(at: float | None, to: str | None = "node-b") -> Row:
    return row(_DUE, handover_at=at, handover_at_to=to)


_SET = {"at": 60.0, "to": "node-c"}
_CANCEL = {"at": None, "to": None}
_Z_SCHEDULED = row(LIVE_OTHER, lease_name="lease-0", handover_at=30.0, handover_at_to="node-x")
SCHEDULE: dict[str, Scenario] = {
    "sched-settle": S("schedule_settle", _DUE, args=_GO),
    "sched-settle-asked-before": S("schedule_settle", _DUE_ASKED, args=_GO,
                                   why="an earlier, still pending request keeps its time"),
    "sched-cancel": S("schedule_settle", _DUE, args=_STAY),
    "sched-cancel-asked-before": S("schedule_settle", _DUE_ASKED, args=_STAY,
                                   why="a cancelled schedule leaves a pending request be"),
    "sched-due-now": S("schedule_settle", _due(0.0), args=_GO),
    "sched-due-0.5s-ago": S("schedule_settle", _due(-0.5), args=_GO),
    "sched-due-in-0.5s": S("schedule_settle", _due(0.5), args=_GO, expect=False),
    "sched-set-again-later": S("schedule_settle", _due(60.0, "node-c"), args=_GO,
                               expect=False, why="set again meanwhile, for a later time"),
    "sched-cancelled-meanwhile": S("schedule_settle", _due(None, None), args=_GO,
                                   expect=False, why="`handover --cancel` meanwhile"),
    "sched-other-instance": S("schedule_settle", row(LIVE_OTHER, handover_at=-5.0,
                                                     handover_at_to="node-a"),
                              args=_GO, expect=False),
    "sched-old-epoch": S("schedule_settle", _DUE, args={**_GO, "epoch": 2}, expect=False),
    "sched-twin-lease": S("schedule_settle", _DUE, others=(row(_DUE, lease_name="lease-z"),),
                          args=_GO, why="the same process and epoch in another lease's row"),
    "sched-set": S("schedule_set", MY_LIVE, args=_SET),
    "sched-set-other-lease": S("schedule_set", MY_LIVE, others=(_Z_SCHEDULED,), args=_SET),
    "sched-set-no-row": S("schedule_set", None, others=(_Z_SCHEDULED,), args=_SET),
    "sched-unset": S("schedule_set", _due(60.0), others=(_Z_SCHEDULED,), args=_CANCEL),
    "sched-read": S("schedule_read", _due(60.0, "node-c"), others=(_Z_SCHEDULED,)),
    "sched-read-other-lease-only": S("schedule_read", None, others=(_Z_SCHEDULED,)),
}

SCENARIOS: dict[str, Scenario] = {**ACQUIRE, **RENEW_RELEASE, **OBSERVE, **HISTORY, **MEMBERS,
                                  **SCHEDULE}
