"""The core's candidate rules, pure (a fake clock, no I/O): `candidate.nofailover` never
takes the lease; `candidate.priority` only ever adds waiting (k live candidates of a higher
priority: k * U more), never takes sooner than W, and equal priorities change nothing; the
members' timing settings are compared and a mismatch logged once per change; a handover
set for a time is carried out when it comes, or cancelled when no standby is live."""

from __future__ import annotations

import pytest

from supervisor import core
from supervisor.core import AcquireLease, Action, Begin, Log, State, StopNode
from supervisor.core.messages import (
    LeaseObserved,
    LeaseRenewed,
    Peer,
    PeersSeen,
    ScheduleSettled,
    SettleSchedule,
)
from tests.harness.coredriver import (
    TIMING,
    V1,
    Driver,
    U,
    W,
    active_driver,
    events,
    free_row,
    held_by_other,
    of,
)

pytestmark = pytest.mark.timeout(30)

STEP = 0.01
SETTINGS = (U, W, 0.2, "1.0")


def peer(name: str, priority: int = 0, *, fresh: bool = True, can: bool = True,
         nofailover: bool = False, me: bool = False,
         settings: tuple[object, ...] | None = SETTINGS) -> Peer:
    return Peer(instance=f"i-{name}", machine_name=name, me=me, fresh=fresh,
                can_take_over=can, priority=priority, nofailover=nofailover,
                settings=settings)


def candidate(priority: int = 0, nofailover: bool = False, *peers: Peer) -> Driver:
    d = Driver(core.initial_state(True, nofailover=nofailover, priority=priority))
    d.feed(Begin())
    d.feed(PeersSeen((peer("me", priority, me=True, nofailover=nofailover), *peers)))
    return d


def first_acquire(d: Driver, row: LeaseObserved, until: float) -> float | None:
    """Feed `row` (unchanged) every STEP from now on; when the core first acquires."""
    t = d.now
    while t <= until:
        if of(AcquireLease, d.feed(row, t)):
            return t
        t = round(t + STEP, 6)
    return None


def test_nofailover_never_takes_a_free_or_an_expired_row() -> None:
    d = candidate(0, True)
    assert first_acquire(d, free_row(), 10 * W) is None
    d = candidate(0, True)
    assert first_acquire(d, held_by_other(V1, expired=True), 10 * W) is None
    can, why = core.takeover_readiness(d.state, d.now)
    assert not can and why.startswith("candidate.nofailover = true")


def test_without_priorities_the_takeover_comes_at_w_as_before() -> None:
    taken = first_acquire(candidate(), held_by_other(V1, expired=True), 3 * W)
    assert taken == pytest.approx(W)
    taken = first_acquire(candidate(0, False, peer("b", 0)), held_by_other(V1, expired=True),
                          3 * W)
    assert taken == pytest.approx(W), "equal priorities change nothing"


def test_a_higher_live_candidate_makes_a_standby_wait_u_more() -> None:
    taken = first_acquire(candidate(0, False, peer("b", 5)), held_by_other(V1, expired=True),
                          3 * W)
    assert taken == pytest.approx(W + U)
    two_above = candidate(0, False, peer("b", 5), peer("c", 3))
    assert first_acquire(two_above, held_by_other(V1, expired=True), 3 * W) == pytest.approx(
        W + 2 * U)


def test_priority_never_takes_sooner_than_w() -> None:
    """The highest host of three, and a host of a lower one: neither before W."""
    for d in (candidate(9, False, peer("b", 1), peer("c", 0)),
              candidate(0, False, peer("b", 1), peer("c", 9))):
        taken = first_acquire(d, held_by_other(V1, expired=True), 3 * W)
        assert taken is not None and taken >= W


def test_stale_or_nofailover_or_unready_peers_add_no_wait() -> None:
    for other in (peer("b", 5, fresh=False), peer("b", 5, nofailover=True),
                  peer("b", 5, can=False)):
        taken = first_acquire(candidate(0, False, other), held_by_other(V1, expired=True),
                              3 * W)
        assert taken == pytest.approx(W), other


def test_a_free_row_goes_first_to_the_higher_candidate() -> None:
    assert first_acquire(candidate(9, False, peer("b", 0)), free_row(), W) == 0.0
    assert first_acquire(candidate(0, False, peer("b", 9)), free_row(), W) == pytest.approx(U)


def test_timing_mismatch_is_logged_once_per_change() -> None:
    d = candidate()
    other = (U, 2 * W, 0.2, "1.0")
    first = d.feed(PeersSeen((peer("me", me=True), peer("b", settings=other))))
    (warning,) = [a for a in first if isinstance(a, Log) and a.event == "timing_mismatch"]
    assert warning.level == "warning" and dict(warning.fields)["settings"] == 2
    again = d.feed(PeersSeen((peer("me", me=True), peer("b", settings=other))))
    assert "timing_mismatch" not in events(again)
    back = d.feed(PeersSeen((peer("me", me=True), peer("b"))))
    (cleared,) = [a for a in back if isinstance(a, Log) and a.event == "timing_mismatch"]
    assert cleared.level == "info" and dict(cleared.fields)["mismatch"] is False
    assert len(d.state.candidacy.settings) == 1


DUE = 1.5


def renewed(d: Driver, at: float) -> list[Action]:
    """A renewal sent and answered at `at`, the row's schedule at DUE."""
    return d.feed(LeaseRenewed(sent_at=at, handover_requested=False, handover_in=DUE - at), at)


def holder_with_schedule(*peers: Peer) -> Driver:
    d = active_driver()
    d.feed(PeersSeen((peer("me", me=True, can=False), *peers)), 0.1)
    renewed(d, 0.5)
    renewed(d, 1.0)
    return d


def test_a_scheduled_handover_goes_to_the_best_live_standby_on_time() -> None:
    d = holder_with_schedule(peer("b", 1), peer("c", 7))
    assert not of(SettleSchedule, d.tick_to(1.49))
    assert not of(SettleSchedule, d.tick_to(1.5))  # the renewal due first
    (settle,) = of(SettleSchedule, renewed(d, 1.5))
    assert isinstance(settle, SettleSchedule) and settle.proceed and settle.to == "c"
    acts = d.feed(ScheduleSettled(True), 1.51)
    assert "handover_schedule_due" in events(acts)
    (stop,) = of(StopNode, acts)
    assert isinstance(stop, StopNode) and stop.planned and d.state.state is State.STOPPING


def test_a_scheduled_handover_without_a_live_standby_is_cancelled() -> None:
    d = holder_with_schedule(peer("b", 1, fresh=False), peer("c", nofailover=True))
    d.tick_to(1.5)
    (settle,) = of(SettleSchedule, renewed(d, 1.5))
    assert isinstance(settle, SettleSchedule) and not settle.proceed
    acts = d.feed(ScheduleSettled(True), 1.51)
    assert "handover_schedule_cancelled" in events(acts)
    assert not of(StopNode, acts) and d.state.state is State.ACTIVE


def test_a_changed_schedule_is_left_alone() -> None:
    d = holder_with_schedule(peer("b"))
    d.tick_to(1.5)
    renewed(d, 1.5)
    acts = d.feed(ScheduleSettled(False), 1.51)
    assert not of(StopNode, acts) and d.state.state is State.ACTIVE


def test_timing_is_the_lab_timing() -> None:
    assert TIMING.update_interval == U and TIMING.wait_interval == W
