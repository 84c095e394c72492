"""Property test of the core against a world model of the lease row, both ways.

The world answers the core's actions at random, like a database and a second
host would: rows that are free, held and renewed by another host, held and
expired, released, regressed to an older version (a replica that lost writes),
and answered by a new server (a failover). Lease calls succeed, fail, hang until
their timeout, or find the lease lost. The node starts, crashes or is killed by
its guard's deadline. Checked on every step:

- the node is guarded by t + W - M from its first instant, and every successful
  renewal moves the guard's deadline to exactly t + W - M (t: its send time);
  the deadline is never later than that (safety) and never earlier (the node is
  not killed while renewals succeed in time);
- SIGTERM / SIGKILL of the node only for a reason: a planned stop (shutdown,
  handover), a lost lease, or the term / kill deadline of the last success;
- the lease is released only once the node is gone (never while it stops);
- one lease call at a time;
- a standby acquires a held row only after the world has answered that very
  version, without a failure in between, for W; after a server change it
  acquires nothing before it has watched the new server for W, and it names that
  server in the acquire.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor import core
from supervisor.core import (
    AcquireLease,
    Action,
    Begin,
    Event,
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
    ReleaseLease,
    RenewLease,
    SeenVersion,
    SetNodeDeadline,
    ShutdownRequested,
    StartNode,
    StopNode,
    Tick,
)
from tests.harness.coredriver import TIMING, Driver, M, W

G = TIMING.loss_grace
TOL = 1e-9

pytestmark = pytest.mark.timeout(120)


@dataclass(frozen=True)
class Row:
    """The lease row as the database holds it."""

    holder: str | None  # None (free), "other" or "me"
    version: int  # grows on every write; a regressed row reuses an old one
    epoch: int
    born: float  # world time of the write (renewed_at)
    server: str  # the server that wrote it


@dataclass
class World:
    row: Row = field(default_factory=lambda: Row(None, 0, 0, -100.0, "s0"))
    history: list[Row] = field(default_factory=list)
    next_version: int = 1
    server: str = "s0"
    server_born: float = -3600.0  # s0 is an old server: a baseline at cold start
    servers_seen: list[str] = field(default_factory=list)  # in order of first answer
    server_first_answer: float = 0.0  # when the core first heard the current server
    # the first server may be trusted at once only when it is old and the row it showed
    # first was written through it (else it may lack the last writes: watch it for W)
    baseline_ok: bool = False
    # the standby's stopwatch as the rule defines it
    same_version: int | None = None
    same_since: float = 0.0
    # the node and its guard
    node_up: bool = False
    node_started_reported: bool = False
    guard_deadline: float | None = None
    last_success_sent: float | None = None
    # reasons that justify stopping the node
    shutdown: bool = False
    handover: bool = False
    lost: bool = False
    pending: Action | None = None
    sent_at: float = 0.0

    def write(self, holder: str | None, at: float, epoch: int | None = None) -> None:
        self.history.append(self.row)
        self.row = Row(holder, self.next_version,
                       self.row.epoch if epoch is None else epoch, at, self.server)
        self.next_version += 1

    def expired(self, at: float) -> bool:
        return self.row.holder is not None and at - self.row.born >= W

    def observation(self, at: float) -> LeaseObserved:
        r = self.row
        version = SeenVersion(r.epoch, r.holder, r.version)
        return LeaseObserved(
            version=version, free=r.holder is None, expired=self.expired(at),
            holder=r.holder, mine=r.holder == "me", exists=True, server=self.server,
            server_uptime=at - self.server_born, row_server=r.server)


def check_actions(d: Driver, world: World, actions: list[Action]) -> None:
    now = d.now
    t = world.last_success_sent
    for a in actions:
        if isinstance(a, ObserveLease | AcquireLease | RenewLease | ReleaseLease):
            assert world.pending is None, "two lease calls at once"
            world.pending = a
            world.sent_at = now
        if isinstance(a, ReleaseLease):
            assert not world.node_up, "lease released while the node may still run"
        if isinstance(a, AcquireLease):
            row = world.row
            held = a.expected is not None and row.holder is not None and a.takeover is None
            if held:
                assert world.same_version == row.version, "acquire of a version not watched"
                assert now - world.same_since >= W - TOL, (
                    f"held row taken after watching it only {now - world.same_since:.3f} s")
            assert a.server == world.server, "acquire must name the server it watched"
            trusted = world.servers_seen == [world.server] and world.baseline_ok
            if not trusted:
                assert now - world.server_first_answer >= W - TOL, (
                    "acquire before the answering server was watched for W")
        elif isinstance(a, StartNode):
            assert not world.node_up
            assert t is not None and a.kill_deadline is not None, "an unguarded node"
            assert a.kill_deadline == pytest.approx(t + W - M, abs=TOL), (
                "the guard's first deadline must be exactly t + W - M")
            assert now < a.kill_deadline - G + TOL, "node started too late to stop"
            world.node_up = True
            world.node_started_reported = False
            world.guard_deadline = a.kill_deadline
        elif isinstance(a, SetNodeDeadline):
            assert t is not None
            assert a.kill_deadline <= t + W - M + TOL, "deadline beyond t + W - M"
            world.guard_deadline = a.kill_deadline
        elif isinstance(a, StopNode):
            planned = world.shutdown or world.handover
            assert planned or world.lost or (t is not None and now >= t + W - M - G - TOL), (
                f"SIGTERM at {now:.3f} without a reason (t = {t})")
        elif isinstance(a, KillNode):
            assert world.lost or world.shutdown or (t is not None and now >= t + W - M - TOL), (
                f"SIGKILL at {now:.3f} without a reason (t = {t})")
            world.guard_deadline = now


def answer(world: World, op: Action, choice: int, at: float) -> Event:
    """The world's answer to `op` at `at`; updates the world like a database would."""
    if choice >= 5:  # the call failed (or hung until its timeout)
        kind = {ObserveLease: "observe", AcquireLease: "acquire", RenewLease: "renew",
                ReleaseLease: "release"}[type(op)]  # type: ignore[index]
        if kind in ("observe", "acquire"):
            world.same_version = None  # the rule: a failed read breaks the stopwatch
        return LeaseCallFailed(kind, "timeout")  # type: ignore[arg-type]
    if isinstance(op, ObserveLease):
        if not world.servers_seen:
            world.baseline_ok = (at - world.server_born >= W
                                 and world.row.server == world.server)
        if not world.servers_seen or world.servers_seen[-1] != world.server:
            world.servers_seen.append(world.server)
            world.server_first_answer = at
            world.same_version = None
        if world.same_version != world.row.version:
            world.same_version = world.row.version
            world.same_since = at
        return world.observation(at)
    if isinstance(op, AcquireLease):
        r = world.row
        ok_server = op.server is None or op.server == world.server
        takeable = r.holder is None or (op.expected is not None and world.expired(at)
                                        and op.expected.renewed_at == r.version)
        if choice < 3 and ok_server and takeable:
            epoch = r.epoch + 1
            world.write("me", at, epoch)
            world.last_success_sent = world.sent_at
            world.lost = False
            world.handover = False
            world.same_version = None
            return LeaseAcquired(epoch=epoch, sent_at=world.sent_at)
        return LeaseNotAcquired()
    if isinstance(op, RenewLease):
        r = world.row
        if r.holder == "me" and r.epoch == op.epoch and not world.expired(at):
            world.write("me", at)
            if world.last_success_sent is None or world.sent_at > world.last_success_sent:
                world.last_success_sent = world.sent_at
            handover = choice == 4
            world.handover = world.handover or handover
            return LeaseRenewed(sent_at=world.sent_at, handover_requested=handover)
        world.lost = True
        return LeaseLost()
    assert isinstance(op, ReleaseLease)
    if world.row.holder == "me" and world.row.epoch == op.epoch:
        world.write(None, at)
        return LeaseReleased(True)
    return LeaseReleased(False)


def other_host(world: World, choice: int, at: float) -> None:
    """What the other host (or a failover) does to the row meanwhile."""
    r = world.row
    if choice == 0 and (r.holder is None or world.expired(at)):
        world.write("other", at, r.epoch + 1)  # it acquires
    elif choice == 1 and r.holder == "other":
        world.write("other", at)  # it renews
    elif choice == 2 and r.holder == "other":
        world.write(None, at)  # it releases
    elif choice == 3 and world.history:
        # a replica that lost writes: the row goes back to an older version
        older = [h for h in world.history if h.version < r.version]
        if older:
            world.row = older[len(older) // 2]
    elif choice == 4:
        world.server = f"s{len(world.servers_seen) + 1}"  # a failover to another server
        world.server_born = at
        if world.history:
            world.row = world.history[-1]


STEP = st.tuples(st.floats(0.0, 0.7), st.integers(0, 14), st.integers(0, 7))

#: How the world looks when the supervisor starts: no row yet; a row held by the other
#: host, renewed a moment ago or long ago (already expired); a row written through
#: another server (a failover before this start); a server that started moments ago.
STARTS = {
    "free": Row(None, 0, 0, -100.0, "s0"),
    "held": Row("other", 0, 1, -0.5, "s0"),
    "held_long_ago": Row("other", 0, 1, -30.0, "s0"),
    "row_from_other_server": Row("other", 0, 1, -30.0, "s-old"),
    "young_server": Row(None, 0, 0, -100.0, "s0"),
}


@settings(max_examples=1000, deadline=None)
@given(st.sampled_from(sorted(STARTS)), st.lists(STEP, min_size=5, max_size=90))
def test_core_against_a_world_of_rows_and_deadlines(
        start: str, script: list[tuple[float, int, int]]) -> None:
    d = Driver(core.initial_state(lease_enabled=True))
    world = World(row=STARTS[start])
    if start == "young_server":
        world.server_born = -0.3
    check_actions(d, world, d.feed(Begin()))
    for dt, choice, sub in script:
        now = d.now + dt
        if world.node_up and world.guard_deadline is not None and now >= world.guard_deadline:
            # the guard kills the node at its deadline, whatever the core thinks
            at = max(d.now, world.guard_deadline)
            world.node_up = False
            check_actions(d, world, d.feed(NodeExited(None, 9, 1.0, "deadline"), at))
            continue
        op = world.pending
        if op is not None and choice < 7:
            world.pending = None
            hang = sub >= 6
            # a result never arrives later than the call's timeout
            at = max(d.now, min(now, world.sent_at + op.timeout))
            if hang:
                at = max(d.now, world.sent_at + op.timeout)
            ev = answer(world, op, 5 if hang else sub, at)
            check_actions(d, world, d.feed(ev, at))
            if isinstance(ev, LeaseRenewed) and world.node_up and d.state.lease.epoch is not None \
                    and not world.lost:
                # the other direction: a success moves the guard to exactly t + W - M
                assert world.last_success_sent is not None
                assert world.guard_deadline == pytest.approx(
                    world.last_success_sent + W - M, abs=TOL), (
                    "a renewal answered in time did not extend the guard's deadline")
        elif choice == 7 and world.node_up and not world.node_started_reported:
            world.node_started_reported = True
            check_actions(d, world, d.feed(NodeStarted(pid=9), now))
        elif choice == 8 and world.node_up:
            world.node_up = False
            check_actions(d, world, d.feed(NodeExited(3, None, 0.3), now))
        elif choice == 9 and not world.shutdown and sub == 0:
            world.shutdown = True
            check_actions(d, world, d.feed(ShutdownRequested(), now))
        elif choice >= 10:
            other_host(world, sub % 5, now)
            check_actions(d, world, d.feed(Tick(), now))
        else:
            check_actions(d, world, d.feed(Tick(), now))
        if world.node_up:
            t = world.last_success_sent
            assert world.guard_deadline is not None and t is not None
            assert world.guard_deadline <= t + W - M + TOL, "node outlives its lease"


def test_the_checks_are_not_vacuous() -> None:
    """Pinned: an early takeover and an unguarded or late-guarded start are caught."""
    d = Driver(core.initial_state(lease_enabled=True), now=1.0)
    world = World()
    world.write("other", 0.0, 1)
    world.same_version, world.same_since = world.row.version, 0.0
    early = AcquireLease(SeenVersion(1, "other", world.row.version), None, "s0", 0.4)
    with pytest.raises(AssertionError, match="held row taken"):
        check_actions(d, world, [early])
    world.pending = None
    world.last_success_sent = 0.5
    with pytest.raises(AssertionError, match="unguarded"):
        check_actions(d, world, [StartNode(1, None)])
    with pytest.raises(AssertionError, match="exactly"):
        check_actions(d, world, [StartNode(1, 0.5 + W)])
