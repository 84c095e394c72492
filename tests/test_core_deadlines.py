"""Exact deadlines of the core: SIGTERM at t + W - M - G, KillNode at t + W - M, not a
moment earlier, not a moment later, and a wake-up scheduled for each. Pure: a fake
clock (see tests/harness/coredriver.py for the Driver); U = 0.5, W = 2, M = 0.2, S = G = 0.5."""

from __future__ import annotations

import dataclasses

import pytest

from supervisor import core
from supervisor.core import (
    Action,
    KillNode,
    LeaseCallFailed,
    LeaseRenewed,
    NodeExited,
    ReleaseLease,
    RenewLease,
    SetNodeDeadline,
    ShutdownRequested,
    StartNode,
    State,
    StopNode,
)
from tests.harness.coredriver import TIMING, Driver, M, S, U, W, active_driver, events, of

G = TIMING.loss_grace
EPS = 1e-6

pytestmark = pytest.mark.timeout(30)


def renewed_at(d: Driver, t: float) -> None:
    """Let the renewal due at `t` be sent at `t` and answered 10 ms later."""
    acts = d.tick_to(t)
    assert of(RenewLease, acts), "a renewal is due"
    acts = d.feed(LeaseRenewed(sent_at=t, handover_requested=False), t + 0.01)
    (deadline,) = of(SetNodeDeadline, acts)
    assert isinstance(deadline, SetNodeDeadline)
    assert deadline.kill_deadline == pytest.approx(t + W - M, abs=1e-9)


def run_until(d: Driver, until: float, *, fail_renewals: bool) -> list[Action]:
    """Follow the core's own wake-ups up to (not including) `until`; renewals either
    fail fast or hang (never answered). Returns every action taken meanwhile."""
    taken: list[Action] = []
    while True:
        wake = core.next_wakeup(d.state, TIMING)
        assert wake is not None, "the core must keep a wake-up while it holds a lease"
        if wake >= until - 1e-12:
            return taken
        acts = d.tick_to(max(wake, d.now))
        taken += acts
        if fail_renewals and of(RenewLease, acts):
            taken += d.feed(LeaseCallFailed("renew", "timeout"), d.now)


def test_planned_stop_of_a_deaf_node_is_killed_exactly_at_t_w_m() -> None:
    """SIGTERM of the supervisor (StopNode(S)), the node ignores it and the next renewal
    never answers: KillNode exactly at t + W - M, a wake-up for exactly that moment,
    nothing before, one KillNode only."""
    d = active_driver()
    t = U
    renewed_at(d, t)
    acts = d.feed(ShutdownRequested("SIGTERM"), t + 0.05)
    (stop,) = of(StopNode, acts)
    assert isinstance(stop, StopNode) and stop.grace == pytest.approx(S)
    kill_at = t + W - M
    before = run_until(d, kill_at, fail_renewals=False)  # the renewal at 2U hangs
    assert not of(KillNode, before)
    assert core.next_wakeup(d.state, TIMING) == pytest.approx(kill_at, abs=1e-9)
    assert not of(KillNode, d.tick_to(kill_at - EPS))
    acts = d.tick_to(kill_at)
    assert len(of(KillNode, acts)) == 1
    for later in (kill_at + 0.1, kill_at + 1.0):
        assert not of(KillNode, d.tick_to(later))
    acts = d.feed(NodeExited(None, 9, 2.0, "kill"), kill_at + 1.1)
    assert d.state.lease.epoch is None


def test_planned_stop_with_failing_renewals_is_killed_exactly_at_t_w_m() -> None:
    """The same with renewals that fail fast and are retried every renew_retry."""
    d = active_driver()
    t = U
    renewed_at(d, t)
    d.feed(ShutdownRequested("SIGTERM"), t + 0.05)
    kill_at = t + W - M
    before = run_until(d, kill_at, fail_renewals=True)
    assert of(RenewLease, before), "renewals go on during a planned stop"
    assert not of(KillNode, before)
    assert not of(KillNode, d.tick_to(kill_at - EPS))
    assert of(KillNode, d.tick_to(kill_at))


def test_lost_lease_sigterm_exactly_at_term_deadline_and_guard_holds_kill_deadline() -> None:
    """Renewals fail after one success at t: StopNode exactly at t + W - M - G with the
    grace that ends exactly at t + W - M; nothing earlier; the guard's last deadline is
    t + W - M (it kills the SIGTERM-deaf node there)."""
    d = active_driver()
    t = U
    renewed_at(d, t)
    term_at, kill_at = t + W - M - G, t + W - M
    before = run_until(d, term_at, fail_renewals=True)
    assert not of(StopNode, before) and not of(KillNode, before)
    assert core.next_wakeup(d.state, TIMING) == pytest.approx(term_at, abs=1e-9)
    assert not of(StopNode, d.tick_to(term_at - EPS))
    acts = d.tick_to(term_at)
    (stop,) = of(StopNode, acts)
    assert isinstance(stop, StopNode)
    assert term_at + stop.grace == pytest.approx(kill_at, abs=1e-9)
    assert stop.grace == pytest.approx(G)
    deadlines = [a.kill_deadline for a in of(SetNodeDeadline, d.log)]
    assert deadlines and deadlines[-1] == pytest.approx(kill_at, abs=1e-9)
    assert d.state.state is State.STOPPING


def test_late_tick_kills_at_once() -> None:
    """A loop that wakes up late (after t + W - M) kills on that very turn."""
    d = active_driver()
    d.feed(ShutdownRequested("SIGTERM"), 0.05)  # planned stop: S, renewals go on
    run_until(d, U, fail_renewals=False)
    d.tick_to(U)  # the renewal at U hangs; t stays 0
    acts = d.tick_to(W - M + 0.3)
    assert of(KillNode, acts)


def test_second_shutdown_request_kills_at_once() -> None:
    d = active_driver()
    acts = d.feed(ShutdownRequested("SIGTERM"), 0.1)
    assert of(StopNode, acts) and not of(KillNode, acts)
    acts = d.feed(ShutdownRequested("SIGTERM"), 0.2)
    assert of(KillNode, acts)
    assert not of(KillNode, d.feed(ShutdownRequested("SIGINT"), 0.3))  # once is enough
    acts = d.feed(NodeExited(None, 9, 0.3, "kill"), 0.35)
    assert d.state.state is State.STOPPING  # release owed, then exit


def test_no_stop_and_no_kill_while_renewals_succeed() -> None:
    """The other direction: renewals answered in time never stop the node."""
    d = active_driver()
    t = U
    while t < 30 * U:
        renewed_at(d, t)
        t += U
    assert not of(StopNode, d.log) and not of(KillNode, d.log)
    assert d.state.state is State.ACTIVE
    assert core.next_wakeup(d.state, TIMING) == pytest.approx(t)



def test_no_release_while_the_node_stops() -> None:
    """The lease is given up at the term deadline, but released (which lets a standby
    take it at once) only after the node has exited: never while it still stops."""
    d = active_driver()
    t = U
    renewed_at(d, t)
    term_at, kill_at = t + W - M - G, t + W - M
    run_until(d, term_at, fail_renewals=True)
    acts = d.tick_to(term_at)
    assert of(StopNode, acts) and d.state.lease.epoch is None
    assert not of(ReleaseLease, acts)
    for at in (term_at + 0.1, term_at + 0.3, kill_at - EPS):
        assert not of(ReleaseLease, d.tick_to(at))
    acts = d.feed(NodeExited(None, 9, 2.0, "deadline"), kill_at)
    (release,) = of(ReleaseLease, acts)
    assert isinstance(release, ReleaseLease) and release.epoch == 4


def test_no_restart_after_the_term_deadline() -> None:
    """A crashed node is restarted under the same lease only while it could still be
    stopped in time: a restart due after t + W - M - G waits for a renewal."""
    d = active_driver()
    t = U
    renewed_at(d, t)
    d.feed(NodeExited(3, None, 0.5), t + 0.4)  # crash; restart due 1 s later
    restart_at = d.state.crashes.restart_at
    term_at, kill_at = t + W - M - G, t + W - M
    assert restart_at is not None and term_at < restart_at < kill_at
    taken = run_until(d, kill_at, fail_renewals=True)
    assert not of(StartNode, taken), "restarted after the term deadline"
    acts = d.tick_to(kill_at)
    assert not of(StartNode, acts)
    assert d.state.lease.epoch is None and d.state.state is State.STANDBY


def test_a_crash_loop_counts_every_crash_whatever_its_runtime() -> None:
    """resetAfter resets the backoff, never the crash count: with resetAfter = 1 s, a node
    that dies after every 2 s run still ends in a crash loop within the window and the
    lease goes to the other host. (Counting only short runs, it kept the lease for ever.)"""
    timing = dataclasses.replace(TIMING, reset_after=1.0, crash_window=60.0, max_crashes=4)
    state = core.initial_state(lease_enabled=True)
    now = 0.0
    log: list[Action] = []

    def feed(event: core.Event) -> list[Action]:
        nonlocal state
        state, actions = core.step(state, event, now, timing)
        log.extend(actions)
        return actions

    def run_until(t: float) -> None:
        """Answer every renewal and start promptly, up to `t`."""
        nonlocal now
        while (wake := core.next_wakeup(state, timing)) is not None and wake <= t:
            now = max(now, wake)
            for a in feed(core.Tick()):
                if isinstance(a, RenewLease):
                    feed(LeaseRenewed(sent_at=now, handover_requested=False))
                if isinstance(a, StartNode):
                    feed(core.NodeStarted(pid=300))
        now = t

    feed(core.Begin())
    feed(core.LeaseObserved(version=core.SeenVersion(0, None, None), free=True, expired=False,
                            holder=None, mine=False, exists=False, server="s"))
    feed(core.LeaseAcquired(epoch=7, sent_at=0.0))
    feed(core.NodeStarted(pid=300))
    for crash in range(1, timing.max_crashes + 1):
        run_until(now + 2.0)
        acts = feed(NodeExited(3, None, 2.0))
        if crash < timing.max_crashes:
            assert state.state is State.BACKOFF and "crash_loop" not in events(acts)
            run_until(state.crashes.restart_at or now)
            assert state.state is State.ACTIVE, f"restart after crash {crash}"
    assert "crash_loop" in events(acts), "four crashes in a minute are a crash loop"
    run_until(now + 0.1)
    assert any(isinstance(a, ReleaseLease) and a.epoch == 7 for a in log)
