"""Driving the pure decision core (`supervisor.core`) on a fake clock: the lab timing,
row observations, and a `Driver` that feeds events and keeps every action. No I/O.

The lab timing: U = 0.5 s, W = 2 s, M = 0.2 s, S = G = 0.5 s (G, the loss grace:
min(S, W - M - U - R) with R = min(0.4, (W - M - U) / 2) = 0.4).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from supervisor import core
from supervisor.core import (
    AcquireLease,
    Action,
    Begin,
    CoreState,
    Event,
    LeaseAcquired,
    LeaseObserved,
    Log,
    NodeStarted,
    ObserveLease,
    SeenVersion,
    StartNode,
    State,
    Tick,
    Timing,
)

U, W, M, S = 0.5, 2.0, 0.2, 0.5
G = 0.5  # loss grace: min(S, W - M - U - R), R = min(0.4, (W - M - U) / 2) = 0.4

TIMING = Timing(
    update_interval=U, wait_interval=W, margin=M, stop_timeout=S, loss_grace=G,
    operation_timeout=0.4,
    poll_interval=0.25, retry_interval=0.1, renew_hedge=0.0625, renew_retry=0.025,
    handover_cooldown=4.0, initial_delay=1.0,
    multiplier=2.0, max_delay=8.0, reset_after=30.0, max_crashes=4, crash_window=60.0,
    crash_cooldown=20.0,
)

V1 = SeenVersion(epoch=1, instance="other", renewed_at="t1")
V2 = SeenVersion(epoch=1, instance="other", renewed_at="t2")
FREE = SeenVersion(epoch=3, instance=None, renewed_at="t0")
SERVER = "10.0.0.1:5432 up since 1000"


def held_by_other(version: SeenVersion = V1, expired: bool = False) -> LeaseObserved:
    """The row as read: held by host-b (`expired`: by the database clock)."""
    return LeaseObserved(version=version, free=False, expired=expired, holder="host-b",
                         mine=False, server=SERVER, row_server=SERVER)


def free_row(server: str | None = None, row_server: str | None = None) -> LeaseObserved:
    """The row as read: free, answered by `server`, written last by `row_server`
    (default: the answering server)."""
    server = server or SERVER
    return LeaseObserved(version=FREE, free=True, expired=False, holder=None, mine=False,
                         server=server, row_server=row_server or server)


@dataclass
class Driver:
    """Feeds events at fake times and keeps every action for inspection."""

    state: CoreState
    now: float = 0.0
    log: list[Action] = field(default_factory=list)

    def feed(self, event: Event, at: float | None = None) -> list[Action]:
        """One step at `at` (never earlier than the last), with the lab timing."""
        if at is not None:
            assert at >= self.now
            self.now = at
        self.state, actions = core.step(self.state, event, self.now, TIMING)
        self.log.extend(actions)
        return actions

    def tick_to(self, at: float) -> list[Action]:
        return self.feed(Tick(), at)

    def events(self, actions: list[Action]) -> list[str]:
        return events(actions)


def feed(d: Driver, event: Event, at: float, timing: Timing) -> list[Action]:
    """One step of `d` at `at` (an earlier time counts as now) with another timing."""
    d.now = max(d.now, at)
    d.state, actions = core.step(d.state, event, d.now, timing)
    d.log.extend(actions)
    return actions


def of(kind: type, actions: list[Action]) -> list[Action]:
    """The actions of one kind."""
    return [a for a in actions if isinstance(a, kind)]


def events(actions: list[Action]) -> list[str]:
    """The names of the log events among `actions`."""
    return [a.event for a in actions if isinstance(a, Log)]


def active_driver() -> Driver:
    """A supervisor that acquired a free lease at t=0 (sent at 0) and started its node."""
    d = Driver(core.initial_state(lease_enabled=True))
    acts = d.feed(Begin())
    assert of(ObserveLease, acts)
    acts = d.feed(free_row(), 0.0)
    assert of(AcquireLease, acts)
    acts = d.feed(LeaseAcquired(epoch=4, sent_at=0.0), 0.01)
    (start,) = of(StartNode, acts)
    assert isinstance(start, StartNode)
    assert start.epoch == 4
    assert start.kill_deadline == pytest.approx(W - M)
    d.feed(NodeStarted(pid=100), 0.02)
    assert d.state.state == State.ACTIVE
    return d
