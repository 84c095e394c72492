"""The pure decision core, driven by a fake clock (no I/O, no processes)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor import core
from supervisor.core import (
    AcquireLease,
    Action,
    Begin,
    Event,
    Exit,
    KillNode,
    LeaseAcquired,
    LeaseCallFailed,
    LeaseLost,
    LeaseNotAcquired,
    LeaseObserved,
    LeaseReleased,
    LeaseRenewed,
    NodeExited,
    NodeStarted,
    ObserveLease,
    PeerReleased,
    ReleaseLease,
    RenewLease,
    SetNodeDeadline,
    ShutdownRequested,
    StartNode,
    State,
    StopNode,
    Tick,
)
from supervisor.core.identity import ProcessRef
from tests.harness.coredriver import (
    SERVER,
    TIMING,
    V1,
    V2,
    Driver,
    G,
    M,
    S,
    U,
    W,
    active_driver,
    free_row,
    held_by_other,
    of,
)


def test_deadline_arithmetic() -> None:
    d = active_driver()
    assert core.kill_deadline(d.state, TIMING) == pytest.approx(W - M)
    assert core.term_deadline(d.state, TIMING) == pytest.approx(W - M - G)


def test_renews_every_update_interval_and_extends_guard_deadline() -> None:
    d = active_driver()
    assert core.next_wakeup(d.state, TIMING) == pytest.approx(U)
    acts = d.tick_to(U)
    (renew,) = of(RenewLease, acts)
    assert isinstance(renew, RenewLease) and renew.epoch == 4
    # one hedged renewal may keep trying up to the kill deadline, never beyond
    assert renew.timeout == pytest.approx(W - M - U)
    assert renew.hedge_after == TIMING.renew_hedge
    acts = d.feed(LeaseRenewed(sent_at=U, handover_requested=False), U + 0.05)
    (deadline,) = of(SetNodeDeadline, acts)
    assert isinstance(deadline, SetNodeDeadline)
    assert deadline.kill_deadline == pytest.approx(U + W - M)


def test_failed_renewals_stop_then_kill_by_the_deadlines() -> None:
    d = active_driver()
    d.tick_to(U)
    acts = d.feed(LeaseCallFailed("renew", "timeout"), U + 0.4)
    assert "lease_renewal_failed" in d.events(acts)
    # Retries keep going until the graceful-stop deadline t + W - M - G.
    t = U + 0.4
    while t < W - M - G - 0.11:
        t += 0.1
        acts = d.tick_to(t)
        if of(RenewLease, acts):
            d.feed(LeaseCallFailed("renew", "timeout"), t + 0.05)
            t += 0.05
        assert not of(StopNode, acts)
    wake = core.next_wakeup(d.state, TIMING)
    assert wake is not None and wake <= W - M - G + 1e-9
    acts = d.tick_to(W - M - G)
    (stop,) = of(StopNode, acts)
    assert isinstance(stop, StopNode)
    assert stop.grace == pytest.approx(G)
    assert d.state.state == State.STOPPING
    # The node ignores SIGTERM: it must be SIGKILLed by t + W - M at the latest.
    acts = d.feed(NodeExited(returncode=None, signal=9, runtime=1.3, killed_by="stop"), W - M)
    assert d.state.lease.epoch is None
    # A release is still owed; the database is down, so it fails, and we contend again.
    (_release,) = of(ReleaseLease, acts)
    acts = d.feed(LeaseCallFailed("release", "timeout"), W)
    assert d.state.state == State.STANDBY


def test_kill_at_kill_deadline_even_if_stop_not_finished() -> None:
    """A lost lease: SIGTERM at t + W - M - G with a grace that ends exactly at t + W - M,
    where the guard SIGKILLs a node that ignores SIGTERM; the core adds no KillNode of its
    own. (The core's own KillNode at exactly t + W - M: tests/test_core_deadlines.py.)"""
    d = active_driver()
    d.tick_to(U)
    d.feed(LeaseCallFailed("renew", "timeout"), U + 0.1)
    acts = d.tick_to(W - M - G)
    (stop,) = of(StopNode, acts)
    assert isinstance(stop, StopNode) and stop.grace == pytest.approx(G)
    assert d.state.lease.epoch is None  # the lease is given up at the term deadline
    # the stop's grace ends exactly at the kill deadline: the guard SIGKILLs there
    assert (W - M - G) + stop.grace == pytest.approx(W - M)
    # ... so the core needs nothing more before the node exits (no wake-up, no kill)
    assert core.next_wakeup(d.state, TIMING) is None
    assert not of(KillNode, d.tick_to(W - M - 1e-6))
    assert not of(KillNode, d.tick_to(W - M))
    assert not of(KillNode, d.log)


def test_lease_lost_kills_node_at_once() -> None:
    d = active_driver()
    d.tick_to(U)
    acts = d.feed(LeaseLost(), U + 0.01)
    assert of(KillNode, acts)
    assert "lease_lost" in d.events(acts)
    acts = d.feed(NodeExited(None, 9, 0.6, "kill"), U + 0.05)
    assert d.state.state == State.STANDBY
    assert not of(ReleaseLease, acts)


def test_standby_waits_w_of_unchanged_row_on_its_own_clock() -> None:
    d = Driver(core.initial_state(lease_enabled=True))
    d.feed(Begin())
    # Even though the database says "expired", the row must be seen unchanged for W.
    acts = d.feed(held_by_other(V1, expired=True), 0.0)
    assert not of(AcquireLease, acts)
    t = 0.0
    while t < W - 0.3:
        wake = core.next_wakeup(d.state, TIMING)
        assert wake is not None
        t = wake
        acts = d.tick_to(t)
        assert of(ObserveLease, acts)
        acts = d.feed(held_by_other(V1, expired=True), t)
        assert not of(AcquireLease, acts)
    wake = core.next_wakeup(d.state, TIMING)
    assert wake is not None and wake <= W + 1e-9
    d.tick_to(W)
    acts = d.feed(held_by_other(V1, expired=True), W)
    (acq,) = of(AcquireLease, acts)
    assert isinstance(acq, AcquireLease) and acq.expected == V1


def test_version_change_restarts_the_stopwatch() -> None:
    d = Driver(core.initial_state(lease_enabled=True))
    d.feed(Begin())
    d.feed(held_by_other(V1), 0.0)
    d.tick_to(1.5)
    d.feed(held_by_other(V2, expired=True), 1.5)  # the holder renewed: a new version
    d.tick_to(2.1)
    acts = d.feed(held_by_other(V2, expired=True), 2.1)
    assert not of(AcquireLease, acts)
    d.tick_to(3.5)
    acts = d.feed(held_by_other(V2, expired=True), 3.5)
    assert of(AcquireLease, acts)


def test_failed_observation_restarts_the_stopwatch() -> None:
    d = Driver(core.initial_state(lease_enabled=True))
    d.feed(Begin())
    d.feed(held_by_other(V1, expired=True), 0.0)
    d.tick_to(1.0)
    d.feed(LeaseCallFailed("observe", "timeout"), 1.4)
    d.tick_to(1.5)
    acts = d.feed(held_by_other(V1, expired=True), 2.1)
    assert not of(AcquireLease, acts)


def test_row_going_back_in_time_restarts_the_stopwatch() -> None:
    d = Driver(core.initial_state(lease_enabled=True))
    d.feed(Begin())
    d.feed(held_by_other(V1), 0.0)
    d.tick_to(0.5)
    d.feed(held_by_other(V2), 0.5)
    d.tick_to(2.5)
    acts = d.feed(held_by_other(V1, expired=True), 2.5)  # a replica that lost renewals
    assert not of(AcquireLease, acts)


def test_release_notification_wakes_standby_at_once() -> None:
    d = Driver(core.initial_state(lease_enabled=True))
    d.feed(Begin())
    d.feed(held_by_other(V1), 0.0)
    acts = d.feed(PeerReleased(), 0.01)
    assert of(ObserveLease, acts)
    acts = d.feed(free_row(), 0.02)
    assert of(AcquireLease, acts)


def test_acquire_answered_too_late_is_handed_back_not_run() -> None:
    """Found by the property test: an acquire whose answer arrives after t + W - M - G
    must not start a node (it could not be stopped gracefully in time)."""
    d = Driver(core.initial_state(lease_enabled=True))
    d.feed(Begin())
    d.feed(free_row(), 0.0)
    acts = d.feed(LeaseAcquired(epoch=2, sent_at=0.0), W - M - G + 0.01)
    assert not of(StartNode, acts)
    (_rel,) = of(ReleaseLease, acts)
    d.feed(LeaseReleased(True), d.now + 0.01)
    assert d.state.state == State.STANDBY


def test_lost_race_observes_again_soon() -> None:
    d = Driver(core.initial_state(lease_enabled=True))
    d.feed(Begin())
    d.feed(free_row(), 0.0)
    d.feed(LeaseNotAcquired(), 0.01)
    assert core.next_wakeup(d.state, TIMING) == pytest.approx(0.01 + TIMING.retry_interval)


def test_dead_predecessor_on_same_machine_is_taken_over_at_once() -> None:
    d = Driver(core.initial_state(lease_enabled=True))
    d.feed(Begin())
    ev = LeaseObserved(version=V1, free=False, expired=False, holder="me", mine=False,
                       reclaimable=ProcessRef(4242, 777), server=SERVER, row_server=SERVER)
    acts = d.feed(ev, 0.0)
    (acq,) = of(AcquireLease, acts)
    assert isinstance(acq, AcquireLease) and acq.takeover == ProcessRef(4242, 777)
    assert acq.server == SERVER


def test_stray_lease_of_our_own_is_released() -> None:
    d = Driver(core.initial_state(lease_enabled=True))
    d.feed(Begin())
    ev = LeaseObserved(version=V1, free=False, expired=False, holder="me", mine=True,
                       server=SERVER, row_server=SERVER)
    acts = d.feed(ev, 0.0)
    (rel,) = of(ReleaseLease, acts)
    assert isinstance(rel, ReleaseLease) and rel.epoch == V1.epoch


def crash(d: Driver, at: float, runtime: float = 0.2) -> list[Action]:
    return d.feed(NodeExited(returncode=3, signal=None, runtime=runtime), at)


def keep_renewing(d: Driver, until: float) -> None:
    """Answer every renewal promptly up to `until`."""
    while True:
        wake = core.next_wakeup(d.state, TIMING)
        if wake is None or wake > until:
            return
        acts = d.tick_to(max(wake, d.now))
        for a in acts:
            if isinstance(a, RenewLease):
                d.feed(LeaseRenewed(sent_at=d.now, handover_requested=False), d.now + 0.01)
            if isinstance(a, StartNode):
                d.feed(NodeStarted(pid=200), d.now + 0.01)


def test_crash_restarts_with_backoff_under_same_epoch_then_crash_loop_releases() -> None:
    d = active_driver()
    delays = []
    for i in range(TIMING.max_crashes - 1):
        acts = crash(d, d.now + 0.1)
        assert d.state.state == State.BACKOFF
        assert d.state.lease.epoch == 4
        restart_at = d.state.crashes.restart_at
        assert restart_at is not None
        delays.append(round(restart_at - d.now, 3))
        keep_renewing(d, restart_at)
        starts = [a for a in d.log if isinstance(a, StartNode)]
        assert starts[-1].epoch == 4, f"restart {i} must keep epoch"
        assert d.state.state == State.ACTIVE
    assert delays == [1.0, 2.0, 4.0]
    acts = crash(d, d.now + 0.1)
    assert "crash_loop" in d.events(acts)
    keep_renewing(d, d.now)
    rel = [a for a in d.log if isinstance(a, ReleaseLease)]
    assert rel and rel[-1].epoch == 4
    d.feed(LeaseReleased(True), d.now + 0.01)
    assert d.state.state == State.COOLDOWN
    until = d.state.cooldown_until
    assert until is not None
    acts = d.tick_to(until)
    assert d.state.state == State.STANDBY
    assert of(ObserveLease, acts)


def test_long_run_resets_backoff() -> None:
    d = active_driver()
    crash(d, 0.1)
    keep_renewing(d, d.state.crashes.restart_at or 0)
    crash(d, d.now + 0.1, runtime=TIMING.reset_after + 1)
    assert d.state.crashes.restart_at is not None
    assert d.state.crashes.restart_at - d.now == pytest.approx(TIMING.initial_delay)


def test_handover_stops_releases_and_cools_down() -> None:
    d = active_driver()
    d.tick_to(U)
    acts = d.feed(LeaseRenewed(sent_at=U, handover_requested=True), U + 0.01)
    assert "handover_requested" in d.events(acts)
    (_stop,) = of(StopNode, acts)
    acts = d.feed(NodeExited(0, None, 1.0), U + 0.2)
    (_rel,) = of(ReleaseLease, acts)
    acts = d.feed(LeaseReleased(True), U + 0.21)
    assert "lease_released" in d.events(acts)
    assert d.state.state == State.COOLDOWN
    assert d.state.cooldown_until == pytest.approx(U + 0.21 + TIMING.handover_cooldown)


def test_shutdown_stops_node_releases_and_exits_zero() -> None:
    d = active_driver()
    acts = d.feed(ShutdownRequested("SIGTERM"), 0.1)
    (stop,) = of(StopNode, acts)
    assert isinstance(stop, StopNode) and stop.grace == pytest.approx(S)
    acts = d.feed(NodeExited(0, None, 0.1), 0.2)
    (_rel,) = of(ReleaseLease, acts)
    acts = d.feed(LeaseReleased(True), 0.25)
    assert of(Exit, acts) == [Exit(0)]


def test_shutdown_waits_for_inflight_renewal_then_releases() -> None:
    d = active_driver()
    d.tick_to(U)  # renewal in flight
    d.feed(ShutdownRequested("SIGINT"), U + 0.01)
    acts = d.feed(NodeExited(0, None, 0.5), U + 0.02)
    assert not of(ReleaseLease, acts)  # one call at a time
    acts = d.feed(LeaseRenewed(sent_at=U, handover_requested=False), U + 0.03)
    assert of(ReleaseLease, acts)
    acts = d.feed(LeaseCallFailed("release", "timeout"), U + 0.5)
    assert of(Exit, acts) == [Exit(0)]


def test_shutdown_in_standby_exits_at_once() -> None:
    d = Driver(core.initial_state(lease_enabled=True))
    d.feed(Begin())
    d.feed(held_by_other(), 0.0)
    acts = d.feed(ShutdownRequested(), 0.1)
    assert of(Exit, acts) == [Exit(0)]


def test_disabled_mode_supervises_without_lease() -> None:
    d = Driver(core.initial_state(lease_enabled=False))
    acts = d.feed(Begin())
    (start,) = of(StartNode, acts)
    assert isinstance(start, StartNode) and start.epoch is None and start.kill_deadline is None
    d.feed(NodeStarted(pid=5), 0.1)
    assert d.state.state == State.DISABLED
    crash(d, 1.0)
    assert d.state.state == State.BACKOFF
    acts = d.tick_to(2.0)
    assert of(StartNode, acts)
    assert not [a for a in d.log if isinstance(a, ObserveLease | RenewLease | AcquireLease)]


# ------------------------------------------------------------- property test


@dataclass
class World:
    """Answers the core's actions at random and checks the fencing promise."""

    guard_deadline: float | None = None
    node_alive_since: float | None = None
    last_success_sent: float | None = None
    pending_op: Action | None = None
    op_sent_at: float = 0.0


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 0.7), st.integers(0, 9)), min_size=5, max_size=80))
def test_node_never_outlives_its_lease(script: list[tuple[float, int]]) -> None:
    """Whatever the database and the node do, a running node always has a guard deadline
    no later than (send time of the last successful renewal) + W - M."""
    d = Driver(core.initial_state(lease_enabled=True))
    world = World()
    node_up = False

    def apply(actions: list[Action]) -> None:
        nonlocal node_up
        for a in actions:
            if isinstance(a, ObserveLease | AcquireLease | RenewLease | ReleaseLease):
                assert world.pending_op is None, "two lease calls at once"
                world.pending_op = a
                world.op_sent_at = d.now
            elif isinstance(a, StartNode):
                assert not node_up
                assert a.kill_deadline is not None
                assert world.last_success_sent is not None
                assert a.kill_deadline <= world.last_success_sent + W - M + 1e-9
                assert d.now < a.kill_deadline - G + 1e-9, "node started too late to stop"
                world.guard_deadline = a.kill_deadline
                node_up = True
            elif isinstance(a, SetNodeDeadline):
                assert world.last_success_sent is not None
                assert a.kill_deadline <= world.last_success_sent + W - M + 1e-9
                world.guard_deadline = a.kill_deadline
            elif isinstance(a, KillNode):
                world.guard_deadline = d.now

    apply(d.feed(Begin()))
    for dt, choice in script:
        now = d.now + dt
        # the guard enforces its deadline no matter what the core thinks
        if node_up and world.guard_deadline is not None and now >= world.guard_deadline:
            apply(d.feed(NodeExited(None, 9, 1.0, "deadline"), world.guard_deadline
                         if world.guard_deadline >= d.now else d.now))
            node_up = False
            continue
        op = world.pending_op
        if op is not None and choice < 6:
            world.pending_op = None
            ok = choice < 4
            if isinstance(op, ObserveLease):
                ev: Event = (free_row() if ok else LeaseCallFailed("observe", "x"))
            elif isinstance(op, AcquireLease):
                if ok:
                    world.last_success_sent = world.op_sent_at
                    ev = LeaseAcquired(epoch=7, sent_at=world.op_sent_at)
                else:
                    ev = LeaseNotAcquired()
            elif isinstance(op, RenewLease):
                if ok:
                    world.last_success_sent = world.op_sent_at
                    ev = LeaseRenewed(sent_at=world.op_sent_at, handover_requested=choice == 3)
                else:
                    ev = LeaseCallFailed("renew", "timeout") if choice == 4 else LeaseLost()
            else:
                ev = LeaseReleased(ok)
            # a call's result never arrives later than its timeout
            at = max(d.now, min(now, world.op_sent_at + op.timeout))
            apply(d.feed(ev, at))
        elif choice == 6 and node_up:
            apply(d.feed(NodeStarted(pid=9), now))
        elif choice == 7 and node_up:
            node_up = False
            apply(d.feed(NodeExited(3, None, 0.3), now))
        elif choice == 8 and not d.state.shutting_down and dt > 0.6:
            apply(d.feed(ShutdownRequested(), now))
        else:
            apply(d.feed(Tick(), now))
        if node_up:
            assert world.guard_deadline is not None
            assert world.last_success_sent is not None
            assert world.guard_deadline <= world.last_success_sent + W - M + 1e-9
