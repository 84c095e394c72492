"""The core's safety rules at production shape: Corda's timing ratio with a JVM-sized
stopTimeout, server identity, machine identity, and a standby that says when it cannot
take over. Pure: a fake clock, no I/O (see tests/harness/coredriver.py for the Driver)."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pytest

from supervisor import core
from supervisor.core import (
    AcquireLease,
    Action,
    Begin,
    KillNode,
    LeaseAcquired,
    LeaseCallFailed,
    LeaseObserved,
    LeaseReleased,
    LeaseRenewed,
    Log,
    NodeExited,
    NodeStarted,
    ObserveLease,
    ReleaseLease,
    RenewLease,
    SetNodeDeadline,
    ShutdownRequested,
    StartNode,
    State,
    StopNode,
    Timing,
)
from supervisor.core.identity import ProcessRef
from supervisor.core.messages import FencingChecked
from supervisor.core.timing import MIN_RENEWAL_WINDOW, stop_graces
from tests.harness.config import lease, seconds, write_config
from tests.harness.coredriver import (
    FREE,
    SERVER,
    TIMING,
    V1,
    V2,
    Driver,
    W,
    events,
    feed,
    free_row,
    held_by_other,
    of,
)

pytestmark = pytest.mark.timeout(30)

# Corda's documented 20000 / 40000 ms with a 60 s JVM stop, scaled down 10x.
CU, CW, CM, CS, COP = 2.0, 4.0, 0.4, 6.0, 2.0
CG = stop_graces(CU, CW, CM, CS, COP)
CORDA = dataclasses.replace(
    TIMING, update_interval=CU, wait_interval=CW, margin=CM, stop_timeout=CS,
    loss_grace=CG.loss_grace, operation_timeout=COP, poll_interval=1.0, renew_hedge=0.25,
    renew_retry=0.1, handover_cooldown=2 * CW)

OTHER_SERVER = "10.0.0.2:5432 up since 2000"


def corda_active() -> Driver:
    d = Driver(core.initial_state(lease_enabled=True))
    feed(d, Begin(), 0.0, CORDA)
    feed(d, free_row(), 0.0, CORDA)
    acts = feed(d, LeaseAcquired(epoch=1, sent_at=0.0), 0.05, CORDA)
    (start,) = of(StartNode, acts)
    assert isinstance(start, StartNode) and start.kill_deadline == pytest.approx(CW - CM)
    feed(d, NodeStarted(pid=10), 0.1, CORDA)
    return d


# ------------------------------------------------------------------ the timing rule


def test_stop_graces_at_cordas_documented_timing() -> None:
    g = stop_graces(20.0, 40.0, 2.0, 60.0, 5.0)
    assert g.renewal_window == pytest.approx(18.0)
    assert g.renewal_allowance == pytest.approx(5.0)
    assert g.loss_grace == pytest.approx(13.0)
    assert g.planned_grace == 60.0
    assert g.term_after == pytest.approx(25.0)  # after the renewal due at 20 s
    assert g.kill_after == pytest.approx(38.0)
    assert g.loss_grace < g.planned_grace
    lab = stop_graces(0.5, 2.0, 0.2, 0.5, 0.4)
    assert lab.loss_grace == pytest.approx(0.5) == lab.planned_grace
    assert lab.term_after == pytest.approx(1.3)


def test_grace_never_leaves_the_due_renewal_without_its_allowance() -> None:
    for u, w, m, s, op in [(20, 40, 2, 60, 5), (2, 4, 0.4, 6, 2), (0.5, 2, 0.2, 0.5, 0.4),
                           (1, 1.2, 0.05, 30, 5), (10, 11, 0.5, 0.1, 5)]:
        g = stop_graces(u, w, m, s, op)
        assert g.term_after >= u + g.renewal_allowance - 1e-9
        assert g.kill_after == pytest.approx(w - m)
        assert 0 < g.loss_grace <= s
    assert stop_graces(20, 21, 2, 60, 5).renewal_window < MIN_RENEWAL_WINDOW


def test_cordas_ratio_runs_one_node_steadily_for_many_renewals() -> None:
    """The loss grace: at 20:40 with a 60 s stop (scaled), renewals answered within R
    never stop the node; on the old rule it got SIGTERM before the first renewal."""
    d = corda_active()
    answer = CG.renewal_allowance - 0.01  # every renewal answered just within R
    renewals = 0
    while d.now < 100 * CU:
        wake = core.next_wakeup(d.state, CORDA)
        assert wake is not None
        acts = feed(d, core.Tick(), wake, CORDA)
        for a in acts:
            if isinstance(a, RenewLease):
                sent = d.now
                acts2 = feed(d, LeaseRenewed(sent_at=sent, handover_requested=False),
                             sent + answer, CORDA)
                (dl,) = of(SetNodeDeadline, acts2)
                assert isinstance(dl, SetNodeDeadline)
                assert dl.kill_deadline == pytest.approx(sent + CW - CM)
                renewals += 1
    assert renewals >= 99
    assert not of(StopNode, d.log) and not of(KillNode, d.log)
    assert d.state.state is State.ACTIVE


def test_lost_lease_at_cordas_ratio_term_at_w_m_g_kill_at_w_m_exactly() -> None:
    """Renewals stop after one success at t: SIGTERM (grace G) exactly at t + W - M - G,
    never earlier; the guard deadline stays t + W - M."""
    d = corda_active()
    t = CU
    feed(d, core.Tick(), t, CORDA)
    feed(d, LeaseRenewed(sent_at=t, handover_requested=False), t + 0.1, CORDA)
    term_at = t + CW - CM - CG.loss_grace
    # the next renewal hangs; nothing happens before the term deadline
    while True:
        wake = core.next_wakeup(d.state, CORDA)
        assert wake is not None
        if wake >= term_at - 1e-9:
            break
        acts = feed(d, core.Tick(), wake, CORDA)
        assert not of(StopNode, acts) and not of(KillNode, acts)
        for a in acts:
            if isinstance(a, RenewLease):
                # a hung renewal: its bound is the kill deadline, never later
                assert d.now + a.timeout <= t + CW - CM + 1e-9
    assert core.next_wakeup(d.state, CORDA) == pytest.approx(term_at)
    acts = feed(d, core.Tick(), term_at - 1e-6, CORDA)
    assert not of(StopNode, acts)
    acts = feed(d, core.Tick(), term_at, CORDA)
    (stop,) = of(StopNode, acts)
    assert isinstance(stop, StopNode)
    assert stop.grace == pytest.approx(CG.loss_grace)
    assert term_at + stop.grace == pytest.approx(t + CW - CM)
    assert [a.kill_deadline for a in of(SetNodeDeadline, d.log)][-1] == pytest.approx(t + CW - CM)


def test_planned_stop_keeps_full_s_while_renewals_go_on() -> None:
    """SIGTERM of the supervisor at Corda's ratio: the node gets S = 6 s although that is
    more than W - M; renewals continue, the release waits for the node's exit."""
    d = corda_active()
    acts = feed(d, ShutdownRequested("SIGTERM"), 0.5, CORDA)
    (stop,) = of(StopNode, acts)
    assert isinstance(stop, StopNode) and stop.grace == pytest.approx(CS)
    renewed = 0
    while d.now < 5.5:
        wake = core.next_wakeup(d.state, CORDA)
        assert wake is not None
        acts = feed(d, core.Tick(), wake, CORDA)
        assert not of(ReleaseLease, acts) and not of(KillNode, acts)
        for a in acts:
            if isinstance(a, RenewLease):
                acts2 = feed(d, LeaseRenewed(sent_at=d.now, handover_requested=False),
                             d.now + 0.05, CORDA)
                assert of(SetNodeDeadline, acts2)
                renewed += 1
    assert renewed >= 2
    acts = feed(d, NodeExited(0, None, 5.5), 6.0, CORDA)
    (rel,) = of(ReleaseLease, acts)
    assert isinstance(rel, ReleaseLease) and rel.epoch == 1


def test_planned_stop_is_cut_short_at_the_kill_deadline_when_renewals_fail() -> None:
    d = corda_active()
    feed(d, core.Tick(), CU, CORDA)
    feed(d, LeaseRenewed(sent_at=CU, handover_requested=False), CU + 0.1, CORDA)
    feed(d, ShutdownRequested("SIGTERM"), CU + 0.2, CORDA)
    kill_at = CU + CW - CM
    while True:
        wake = core.next_wakeup(d.state, CORDA)
        assert wake is not None
        if wake >= kill_at - 1e-9:
            break
        acts = feed(d, core.Tick(), wake, CORDA)
        assert not of(KillNode, acts)
        for a in acts:
            if isinstance(a, RenewLease):
                feed(d, LeaseCallFailed("renew", "timeout"), d.now + 0.05, CORDA)
    acts = feed(d, core.Tick(), kill_at, CORDA)
    assert of(KillNode, acts)


def test_handover_keeps_full_s() -> None:
    d = corda_active()
    feed(d, core.Tick(), CU, CORDA)
    acts = feed(d, LeaseRenewed(sent_at=CU, handover_requested=True), CU + 0.1, CORDA)
    (stop,) = of(StopNode, acts)
    assert isinstance(stop, StopNode) and stop.grace == pytest.approx(CS)


def test_timing_from_config_uses_the_rule(tmp_path: Path) -> None:
    from supervisor.config import load_config

    path = write_config(tmp_path / "supervisor.conf", lease=lease("a", 20000, 40000),
                        database={"url": "postgresql://h/db"},
                        node={"command": ["/bin/true"], "stopTimeout": seconds(60)})
    t = Timing.from_config(load_config(str(path)))
    assert t.stop_timeout == 60.0
    assert t.loss_grace == pytest.approx(13.0)


# ------------------------------------------------------------------ server identity


def standby() -> Driver:
    d = Driver(core.initial_state(lease_enabled=True))
    d.feed(Begin())
    return d


def test_server_change_makes_the_standby_wait_w_even_for_a_free_row() -> None:
    """Server identity: after a failover to a replica that may have lost the last writes,
    a free row (or our dead predecessor's) is taken only after W watched on our clock."""
    d = standby()
    d.feed(held_by_other(V1), 0.0)
    acts = d.feed(free_row(OTHER_SERVER), 0.3)
    assert not of(AcquireLease, acts)
    assert "database_server_changed" in events(acts)
    t = 0.3
    while True:
        wake = core.next_wakeup(d.state, TIMING)
        assert wake is not None
        t = wake
        acts = d.tick_to(t)
        if of(ObserveLease, acts):
            acts = d.feed(free_row(OTHER_SERVER), t)
            if of(AcquireLease, acts):
                break
    assert t == pytest.approx(0.3 + W)
    (acq,) = of(AcquireLease, acts)
    assert isinstance(acq, AcquireLease) and acq.server == OTHER_SERVER


def test_server_change_blocks_the_dead_predecessor_shortcut_for_w() -> None:
    d = standby()
    d.feed(free_row(SERVER), 0.0)  # acquire in flight against SERVER
    d.feed(core.LeaseNotAcquired(), 0.05)
    ev = LeaseObserved(version=V1, free=False, expired=False, holder="me", mine=False,
                       reclaimable=ProcessRef(7, 8), server=OTHER_SERVER, row_server=SERVER)
    d.tick_to(0.2)
    acts = d.feed(ev, 0.2)
    assert not of(AcquireLease, acts)
    d.tick_to(0.2 + W - 0.01)
    acts = d.feed(ev, 0.2 + W - 0.01)
    assert not of(AcquireLease, acts)
    d.tick_to(0.2 + W)
    acts = d.feed(ev, 0.2 + W)
    (acq,) = of(AcquireLease, acts)
    assert isinstance(acq, AcquireLease) and acq.takeover == ProcessRef(7, 8)


def test_acquire_names_the_server_it_watched() -> None:
    d = standby()
    acts = d.feed(free_row(SERVER), 0.0)
    (acq,) = of(AcquireLease, acts)
    assert isinstance(acq, AcquireLease) and acq.server == SERVER


def test_young_server_at_cold_start_is_watched_for_w() -> None:
    d = standby()
    young = dataclasses.replace(free_row(SERVER), server_uptime=0.5)
    acts = d.feed(young, 0.0)
    assert not of(AcquireLease, acts)
    assert "database_server_young" in events(acts)
    d.tick_to(W)
    acts = d.feed(young, W)
    assert of(AcquireLease, acts)


def test_old_server_at_cold_start_is_a_baseline() -> None:
    d = standby()
    acts = d.feed(dataclasses.replace(free_row(SERVER), server_uptime=3600.0), 0.0)
    assert of(AcquireLease, acts)


@pytest.mark.parametrize("row_server", [OTHER_SERVER, None])
def test_first_read_of_a_row_written_through_another_server_waits_w(
        row_server: str | None) -> None:
    """A supervisor (re)started after a failover has nothing to compare with; the row
    itself says which server wrote it (None: an older version wrote it). Found by the
    replica test's restart-after-promotion variant."""
    d = standby()
    dead_self = LeaseObserved(version=V1, free=False, expired=False, holder="me", mine=False,
                              reclaimable=ProcessRef(7, 8), server=SERVER,
                              row_server=row_server)
    acts = d.feed(dead_self, 0.0)
    assert not of(AcquireLease, acts)
    assert "database_row_from_other_server" in events(acts)
    d.tick_to(W - 0.01)
    assert not of(AcquireLease, d.feed(dead_self, W - 0.01))
    d.tick_to(W)
    assert of(AcquireLease, d.feed(dead_self, W))
    # a free row too
    d2 = standby()
    assert not of(AcquireLease, d2.feed(free_row(SERVER, row_server or "x"), 0.0))


def test_no_row_yet_is_no_reason_to_wait() -> None:
    d = standby()
    empty = LeaseObserved(version=FREE, free=True, expired=False, holder=None, mine=False,
                          exists=False, server=SERVER, row_server=None)
    assert of(AcquireLease, d.feed(empty, 0.0))


def test_server_change_restarts_the_held_row_stopwatch() -> None:
    d = standby()
    d.feed(held_by_other(V1, expired=True), 0.0)
    d.tick_to(1.9)
    moved = dataclasses.replace(held_by_other(V1, expired=True), server=OTHER_SERVER)
    d.feed(moved, 1.9)
    d.tick_to(W + 0.1)
    acts = d.feed(moved, W + 0.1)
    assert not of(AcquireLease, acts)  # would have been taken without the change
    d.tick_to(1.9 + W)
    acts = d.feed(moved, 1.9 + W)
    assert of(AcquireLease, acts)


# ------------------------------------------------------------------ machine identity


def test_name_conflict_is_an_error_never_a_takeover() -> None:
    d = standby()
    ev = LeaseObserved(version=V1, free=False, expired=False, holder="me", mine=False,
                       name_conflict="held by another machine", server=SERVER,
                       row_server=SERVER)
    acts = d.feed(ev, 0.0)
    assert not of(AcquireLease, acts)
    errs = [a for a in acts if isinstance(a, Log) and a.event == "machine_name_conflict"]
    assert errs and errs[0].level == "error"
    ok, why = core.takeover_readiness(d.state, 0.1)
    assert not ok and "another machine" in why
    # logged again at least once a minute while it lasts, not on every read
    d.tick_to(1.0)
    acts = d.feed(ev, 1.0)
    assert "machine_name_conflict" not in events(acts)
    d.tick_to(61.0)
    acts = d.feed(ev, 61.0)
    assert "machine_name_conflict" in events(acts)
    # a live conflicting holder that stops renewing is taken by the normal rule only
    d.tick_to(62.0)
    d.feed(held_by_other(V2, expired=True), 62.0)
    d.tick_to(62.0 + W)
    acts = d.feed(held_by_other(V2, expired=True), 62.0 + W)
    assert of(AcquireLease, acts)
    assert "machine_name_conflict_cleared" in events(d.log)


# ------------------------------------------------------------------ loud standby


def test_failing_database_is_logged_at_least_once_a_minute_and_shown() -> None:
    d = standby()
    d.feed(held_by_other(V1), 0.0)
    assert core.takeover_readiness(d.state, 0.0) == (True, "standby, database reachable")
    loud: list[tuple[float, str]] = []
    t = 0.0
    while t < 200.0:
        wake = core.next_wakeup(d.state, TIMING)
        assert wake is not None
        t = wake
        acts = d.tick_to(t)
        if of(ObserveLease, acts):
            acts = d.feed(LeaseCallFailed("observe", "password authentication failed"), t)
        loud += [(t, a.level) for a in acts if isinstance(a, Log)
                 and a.event == "lease_call_failed" and a.level != "debug"]
    times = [x for x, _ in loud]
    assert times[0] == pytest.approx(0.25, abs=0.01)
    assert loud[0][1] == "warning" and all(level == "error" for _, level in loud[1:])
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps and max(gaps) <= 60.0 + TIMING.retry_interval + 1e-6
    assert len(loud) >= 3
    ok, why = core.takeover_readiness(d.state, t)
    assert not ok and "password authentication failed" in why
    assert d.state.db.error_since == pytest.approx(times[0])
    d.tick_to(t + 1)
    acts = d.feed(held_by_other(V1), t + 1)
    assert "lease_call_recovered" in events(acts)
    assert core.takeover_readiness(d.state, t + 1)[0]


def test_holder_is_not_a_takeover_candidate() -> None:
    d = standby()
    d.feed(free_row(), 0.0)
    d.feed(LeaseAcquired(epoch=1, sent_at=0.0), 0.01)
    assert core.takeover_readiness(d.state, 0.02) == (False, "this host holds the lease")


def test_release_after_planned_stop_then_standby_contends() -> None:
    d = corda_active()
    feed(d, ShutdownRequested("SIGTERM"), 0.5, CORDA)
    feed(d, NodeExited(0, None, 0.5), 1.0, CORDA)
    acts = feed(d, LeaseReleased(True), 1.1, CORDA)
    assert d.state.state is State.EXITED
    assert [a for a in acts if isinstance(a, core.Exit)]


# ------------------------------------------------------------------ logs for an operator


def logs(actions: list[Action], name: str) -> list[dict[str, object]]:
    return [dict(a.fields) for a in actions if isinstance(a, Log) and a.event == name]


def test_standby_logs_its_view_at_info_only_when_it_changes() -> None:
    d = standby()
    acts = d.feed(held_by_other(V1), 0.0)
    (view,) = logs(acts, "standby_view")
    assert view["holder"] == "host-b" and view["could_take_over"] is True
    assert [a.level for a in acts if isinstance(a, Log) and a.event == "standby_view"] == ["info"]
    d.tick_to(0.25)
    assert not logs(d.feed(held_by_other(V2), 0.25), "standby_view")  # a renewal: same view
    d.tick_to(0.5)
    moved = dataclasses.replace(held_by_other(V2), holder="host-c",
                                version=core.SeenVersion(2, "c", "t9"))
    assert logs(d.feed(moved, 0.5), "standby_view")[0]["holder"] == "host-c"


@pytest.mark.parametrize(("events", "how", "previous"), [
    ([dataclasses.replace(held_by_other(V1), handover_requested=True), free_row()],
     "handed over", "host-b"),
    ([held_by_other(V1), free_row()], "released", "host-b"),
    # the request and the release happened between two looks: the free row says so
    ([held_by_other(V1), dataclasses.replace(free_row(), handover_requested=True)],
     "handed over", "host-b"),
    ([LeaseObserved(version=FREE, free=True, expired=False, holder=None, mine=False,
                    exists=False, server=SERVER)], "new lease (no row yet)", None),
])
def test_acquisition_says_how_and_from_whom(events: list[LeaseObserved], how: str,
                                            previous: str | None) -> None:
    d = standby()
    t = 0.0
    for ev in events:
        d.tick_to(t)
        d.feed(ev, t)
        t += 0.1
    acts = d.feed(LeaseAcquired(epoch=9, sent_at=t), t + 0.01)
    (acquired,) = logs(acts, "lease_acquired")
    assert (acquired["how"], acquired["previous_holder"]) == (how, previous)


def test_expired_acquisition_says_it_waited_w() -> None:
    d = standby()
    d.feed(held_by_other(V1, expired=True), 0.0)
    d.tick_to(W)
    d.feed(held_by_other(V1, expired=True), W)
    (acquired,) = logs(d.feed(LeaseAcquired(epoch=2, sent_at=W), W + 0.01), "lease_acquired")
    assert str(acquired["how"]).startswith("expired") and acquired["previous_holder"] == "host-b"


def test_state_changed_comes_after_its_cause() -> None:
    d = standby()
    d.feed(free_row(), 0.0)
    acts = d.feed(LeaseAcquired(epoch=1, sent_at=0.0), 0.01)
    names = [a.event for a in acts if isinstance(a, Log)]
    assert names.index("lease_acquired") < names.index("state_changed")


def test_standby_view_is_not_repeated_while_a_new_server_is_watched() -> None:
    """Found by the demo: the reason's countdown made every poll a "change"."""
    d = standby()
    young = dataclasses.replace(free_row(SERVER), server_uptime=0.1)
    views = []
    t = 0.0
    while t < W:
        acts = d.feed(young, t)
        views += logs(acts, "standby_view")
        t = core.next_wakeup(d.state, TIMING) or t + 0.25
        d.tick_to(t)
    assert len(views) == 1 and views[0]["could_take_over"] is False


# ------------------------------------------------------------------ readiness


READY_T = dataclasses.replace(TIMING, ready_timeout=3.0)


def test_a_node_that_never_becomes_ready_is_a_failed_start() -> None:
    d = Driver(core.initial_state(lease_enabled=True))
    feed(d, Begin(), 0.0, READY_T)
    feed(d, free_row(), 0.0, READY_T)
    feed(d, LeaseAcquired(epoch=1, sent_at=0.0), 0.01, READY_T)
    feed(d, NodeStarted(pid=5), 0.02, READY_T)
    assert not d.state.node.ready
    t = 0.02
    while t < 3.02 - 1e-9:  # renewals answered; no readiness
        wake = core.next_wakeup(d.state, READY_T)
        assert wake is not None
        t = min(wake, 3.02)
        acts = feed(d, core.Tick(), t, READY_T)
        for a in acts:
            if isinstance(a, RenewLease):
                feed(d, LeaseRenewed(sent_at=t, handover_requested=False), t + 0.01, READY_T)
        if t < 3.02:
            assert not of(KillNode, acts)
    assert "node_not_ready" in events(d.log) and of(KillNode, d.log)
    acts = feed(d, NodeExited(None, 9, 3.0, "kill"), 3.1, READY_T)
    assert "node_restart_scheduled" in events(acts)  # counted as a crash, not a stop
    assert d.state.state is State.BACKOFF and d.state.lease.epoch == 1


def test_a_ready_node_is_not_killed_and_the_flag_shows() -> None:
    quick = dataclasses.replace(READY_T, ready_timeout=1.0)
    d = Driver(core.initial_state(lease_enabled=True))
    feed(d, Begin(), 0.0, quick)
    feed(d, free_row(), 0.0, quick)
    feed(d, LeaseAcquired(epoch=1, sent_at=0.0), 0.01, quick)
    feed(d, NodeStarted(pid=5), 0.02, quick)
    assert d.state.node.ready_deadline == pytest.approx(1.02)
    acts = feed(d, core.NodeReady(pid=5), 0.5, quick)
    assert "node_ready" in events(acts) and d.state.node.ready
    assert d.state.node.ready_deadline is None
    assert not of(KillNode, feed(d, core.Tick(), 1.5, quick))  # past 1.02, before W - M


# ------------------------------------------------------------------ maintenance


def test_a_standby_takes_nothing_while_paused_or_reserved_for_another() -> None:
    d = standby()
    paused = dataclasses.replace(free_row(), paused=True)
    acts = d.feed(paused, 0.0)
    assert not of(AcquireLease, acts) and "pair_paused" in events(acts)
    assert core.takeover_readiness(d.state, 0.0)[0] is False
    d.tick_to(0.3)
    acts = d.feed(dataclasses.replace(free_row(), reserved_for_other="host-c"), 0.3)
    assert "pair_resumed" in events(acts) and not of(AcquireLease, acts)
    d.tick_to(0.6)
    assert of(AcquireLease, d.feed(free_row(), 0.6))


def test_a_paused_holder_neither_restarts_nor_hands_over_until_resumed() -> None:
    d = corda_active()
    feed(d, core.Tick(), CU, CORDA)
    acts = feed(d, LeaseRenewed(sent_at=CU, handover_requested=True, paused=True), CU + 0.1,
                CORDA)
    assert "pair_paused" in events(acts) and not of(StopNode, acts)
    acts = feed(d, NodeExited(3, None, 1.0), CU + 0.2, CORDA)
    assert "node_not_restarted_while_paused" in events(acts)
    assert d.state.lease.epoch == 1 and d.state.crashes.restart_at is None
    assert d.state.state == core.State.PAUSED  # not "backoff": no restart is coming
    feed(d, core.Tick(), 2 * CU, CORDA)
    acts = feed(d, LeaseRenewed(sent_at=2 * CU, handover_requested=False, paused=False),
                2 * CU + 0.1, CORDA)
    assert "pair_resumed" in events(acts)
    assert of(StartNode, acts) or of(StartNode, feed(d, core.Tick(), 2 * CU + 0.2, CORDA))


def test_a_restart_that_was_due_waits_for_resume_once_the_pair_is_paused() -> None:
    """The node crashed (a restart scheduled), then the pair was paused before the
    restart: the restart is left for `resume`, and the state says paused."""
    d = corda_active()
    acts = feed(d, NodeExited(3, None, 1.0), CU * 0.1, CORDA)
    assert d.state.state == core.State.BACKOFF and d.state.crashes.restart_at is not None
    acts = feed(d, LeaseRenewed(sent_at=CU * 0.1, handover_requested=False, paused=True),
                CU * 0.1 + 0.01, CORDA)
    assert "node_not_restarted_while_paused" in events(acts)
    assert d.state.state == core.State.PAUSED and d.state.crashes.restart_at is None
    acts = feed(d, core.Tick(), CU, CORDA)
    assert not of(StartNode, acts)
    acts = feed(d, LeaseRenewed(sent_at=CU, handover_requested=False, paused=False),
                CU + 0.1, CORDA)
    assert of(StartNode, acts) or of(StartNode, feed(d, core.Tick(), CU + 0.2, CORDA))
    assert d.state.state == core.State.ACTIVE


# ------------------------------------------------------------------ database fencing


def test_a_standby_that_cannot_fence_takes_nothing_and_says_why() -> None:
    d = standby()
    acts = d.feed(FencingChecked("not checked yet", pending=True), 0.0)
    assert "fencing_pending" in events(acts)
    assert not [a for a in acts if isinstance(a, Log) and a.level == "error"]
    assert not of(AcquireLease, d.feed(free_row(), 0.0))
    acts = d.feed(FencingChecked("no privilege"), 0.1)
    assert logs(acts, "fencing_unavailable")[0]["problem"] == "no privilege"
    assert core.takeover_readiness(d.state, 0.1) == (False, "database fencing: no privilege")
    d.tick_to(0.3)
    assert not of(AcquireLease, d.feed(free_row(), 0.3))
    assert "fencing_ready" in events(d.feed(FencingChecked(None), 0.4))
    d.tick_to(0.6)
    assert of(AcquireLease, d.feed(free_row(), 0.6))
