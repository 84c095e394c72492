"""The core's whole output on scripted journeys, compared with a recorded trace.

Every action (lease calls, node commands, and every log event with its level and
fields), the next wake-up and the takeover readiness after each step of each journey
below is written out and compared with tests/core_trace.txt. The log events are the
supervisor's interface to operators and to the renewal audit (tests/harness/renewal_audit.py
reads `lease_acquired` and `lease_renewed`): a change to any of them, or to any
decision on these journeys, fails here with the diff. After an intended change,
regenerate with `CORE_TRACE_WRITE=1 python -m pytest tests/test_core_trace.py` and
review the diff of tests/core_trace.txt like code. Pure: a fake clock, no I/O.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from supervisor import core
from supervisor.core import (
    Begin,
    HandoverRequested,
    LeaseAcquired,
    LeaseCallFailed,
    LeaseLost,
    LeaseNotAcquired,
    LeaseObserved,
    LeaseReleased,
    LeaseRenewed,
    NodeExited,
    NodeReady,
    NodeStarted,
    PeerReleased,
    SeenVersion,
    ShutdownRequested,
    Tick,
    Timing,
)
from supervisor.core.identity import ProcessRef
from supervisor.core.messages import Event, FencingChecked, SharedDirsChecked
from tests.harness.coredriver import FREE, SERVER, TIMING, V1, V2, free_row, held_by_other

pytestmark = pytest.mark.timeout(30)

GOLDEN = Path(__file__).with_name("core_trace.txt")
OTHER = "10.0.0.2:5432 up since 2000"
READY = dataclasses.replace(TIMING, ready_timeout=3.0, error_repeat=5.0)


class Journey:
    """Feeds events at fake times and writes down everything that comes out.

    With `scale`, every time and interval (the timing's, the events', the journey's) is
    multiplied by it: the same journey, with values whose every decimal counts."""

    def __init__(self, lease: bool = True, timing: Timing = TIMING, scale: float = 1.0) -> None:
        self.state = core.initial_state(lease_enabled=lease)
        self.scale = scale
        self.timing = dataclasses.replace(timing, **{
            f.name: getattr(timing, f.name) * scale for f in dataclasses.fields(timing)
            if f.name not in ("multiplier", "max_crashes") and getattr(timing, f.name)
            is not None})
        self.now = 0.0
        self.lines: list[str] = []

    def __call__(self, at: float, event: Event) -> None:
        at *= self.scale
        if isinstance(event, LeaseAcquired | LeaseRenewed):
            event = dataclasses.replace(event, sent_at=event.sent_at * self.scale)
        if isinstance(event, NodeExited):
            event = dataclasses.replace(event, runtime=event.runtime * self.scale)
        assert at >= self.now
        self.now = at
        self.state, actions = core.step(self.state, event, at, self.timing)
        self.lines.append(f"{at!r} {event!r}")
        self.lines += [f"    {a!r}" for a in actions]
        ok, why = core.takeover_readiness(self.state, at)
        wake = core.next_wakeup(self.state, self.timing)
        term = core.term_deadline(self.state, self.timing)
        self.lines.append(f"    wake={wake!r} ready={ok} {why!r} term={term!r}")
        self.lines.append(f"    status {status(self.state, at, self.timing)}")

    def tick(self, at: float) -> None:
        self(at, Tick())


def status(s: core.CoreState, now: float, timing: Timing) -> str:
    """What the daemon's `status` (and /status, the metrics) shows of the core's state
    (supervisor/daemon/status.py `status_view`)."""
    kill_at = core.kill_deadline(s, timing)
    shown: dict[str, object] = dict(
        state=str(s.state), epoch=s.lease.epoch, holder=s.lease.holder, node_pid=s.node.pid,
        node_running=s.node.phase is core.NodePhase.RUNNING, node_ready=s.node.ready,
        restarts=s.crashes.restarts, paused=s.paused, name_conflict=s.name_conflict,
        last_renewal_age=(None if s.lease.renewed_sent_at is None
                          else round(now - s.lease.renewed_sent_at, 3)),
        kill_deadline_in=None if kill_at is None else round(kill_at - now, 3),
        reachable=s.db.ok_at is not None and s.db.failures == 0, last_error=s.db.error,
        failing_for=None if s.db.error_since is None else round(now - s.db.error_since, 3),
        failures_in_a_row=s.db.failures,
        last_answer_age=None if s.db.ok_at is None else round(now - s.db.ok_at, 3),
        server=s.lease.server)
    return " ".join(f"{k}={v!r}" for k, v in shown.items())


def acquired_and_running(j: Journey, t: float = 0.0, epoch: int = 4) -> None:
    j(t, Begin())
    j(t, free_row())
    j(t + 0.01, LeaseAcquired(epoch=epoch, sent_at=t))
    j(t + 0.02, NodeStarted(pid=100))


def holder_renews_then_hands_over(j: Journey) -> None:
    acquired_and_running(j)
    j(0.03, NodeReady(pid=100))
    j.tick(0.5)
    j(0.52, LeaseRenewed(sent_at=0.5, handover_requested=False, renewed_at="r1"))
    j.tick(1.0)
    j(1.2, LeaseRenewed(sent_at=1.0, handover_requested=True, renewed_at="r2"))
    j(1.3, HandoverRequested())
    j(1.5, NodeExited(returncode=0, signal=None, runtime=1.5, killed_by="stop"))
    j(1.6, LeaseReleased(released=True))
    j.tick(1.6 + TIMING.handover_cooldown)


def standby_waits_w_then_takes_over(j: Journey) -> None:
    j(0.0, Begin())
    j(0.0, held_by_other(V1))
    j.tick(0.25)
    j(0.26, held_by_other(V2, expired=True))
    j.tick(1.0)
    j(1.01, LeaseCallFailed("observe", "timeout"))
    j.tick(1.2)
    j(1.21, held_by_other(V2, expired=True))
    j.tick(3.3)
    j(3.31, held_by_other(V2, expired=True))
    j(3.4, LeaseNotAcquired())
    j.tick(3.5)
    j(3.51, held_by_other(V2, expired=True))
    j(3.6, LeaseAcquired(epoch=2, sent_at=3.51))
    j(3.61, PeerReleased())


def reclaim_stray_and_reserved(j: Journey) -> None:
    j(0.0, Begin())
    j(0.0, LeaseObserved(version=V1, free=False, expired=False, holder="host-a", mine=False,
                         reclaimable=ProcessRef(77, 5), server=SERVER, row_server=SERVER))
    j(0.1, LeaseCallFailed("acquire", "refused"))
    j.tick(0.3)
    j(0.3, LeaseObserved(version=V1, free=False, expired=False, holder="host-a", mine=True,
                         server=SERVER, row_server=SERVER))
    j(0.4, LeaseReleased(released=False))
    j.tick(0.5)
    j(0.5, LeaseObserved(version=FREE, free=True, expired=False, holder=None, mine=False,
                         server=SERVER, row_server=SERVER, reserved_for_other="host-c",
                         handover_requested=True))
    j(0.6, PeerReleased())
    j(0.6, LeaseObserved(version=FREE, free=True, expired=False, holder=None, mine=False,
                         server=SERVER, row_server=SERVER, handover_requested=True))
    j(0.7, LeaseNotAcquired())
    j.tick(0.8)
    j(0.8, LeaseObserved(version=SeenVersion(0, None, None), free=True, expired=False,
                         holder=None, mine=False, exists=False, server=SERVER,
                         row_server=None))


def renewals_fail_until_the_deadlines(j: Journey) -> None:
    acquired_and_running(j)
    j.tick(0.5)
    j(0.9, LeaseCallFailed("renew", "timeout"))
    j.tick(0.925)
    j.tick(1.1)
    j(1.2, LeaseCallFailed("renew", "refused"))
    j.tick(1.3)
    j.tick(1.5)
    j(1.8, NodeExited(returncode=None, signal=9, runtime=1.8, killed_by="guard"))
    j(1.9, LeaseCallFailed("release", "timeout"))
    j.tick(2.0)


def lease_lost_and_killed(j: Journey) -> None:
    acquired_and_running(j)
    j.tick(0.5)
    j(0.6, LeaseLost())
    j(0.7, NodeExited(returncode=None, signal=9, runtime=0.7, killed_by="kill"))
    j.tick(0.8)
    j(0.9, LeaseLost())


def keep_renewing(j: Journey, until: float) -> None:
    """Answer every renewal that falls due before `until` on time (the pair stays paused
    or not), then tick to it."""
    while True:
        due = None if j.state.lease.next_renew_at is None else j.state.lease.next_renew_at / j.scale
        if due is None or due >= until or j.state.lease.op is not None:
            break
        j.tick(due)
        j(due + 0.01, LeaseRenewed(sent_at=due, handover_requested=False,
                                   paused=j.state.paused))
    j.tick(until)


def crashes_back_off_then_loop(j: Journey) -> None:
    acquired_and_running(j, epoch=7)
    t = 0.1
    for n in range(4):
        j(t, NodeExited(returncode=1, signal=None, runtime=0.08, killed_by=None))
        if j.state.crashes.restart_at is None:
            break
        keep_renewing(j, j.state.crashes.restart_at / j.scale)
        t = j.now / j.scale + 0.1
        j(j.now / j.scale + 0.01, NodeStarted(pid=200 + n))
    j(t + 0.1, LeaseReleased(released=True))
    j.tick(t + 0.1 + TIMING.crash_cooldown)


def not_ready_in_time(j: Journey) -> None:
    acquired_and_running(j)
    j(0.03, NodeReady(pid=999))  # another pid: not ours
    j.tick(0.5)
    j(0.51, LeaseRenewed(sent_at=0.5, handover_requested=False))
    j.tick(1.0)
    j(1.01, LeaseRenewed(sent_at=1.0, handover_requested=False))
    j.tick(1.5)
    j(1.51, LeaseRenewed(sent_at=1.5, handover_requested=False))
    j.tick(2.0)
    j(2.01, LeaseRenewed(sent_at=2.0, handover_requested=False))
    j.tick(2.5)
    j(2.51, LeaseRenewed(sent_at=2.5, handover_requested=False))
    j.tick(3.0)
    j(3.01, LeaseRenewed(sent_at=3.0, handover_requested=False))
    j.tick(3.02)
    j(3.1, NodeExited(returncode=None, signal=9, runtime=3.1, killed_by="kill"))
    j(3.2, NodeReady(pid=100))


def paused_pair(j: Journey) -> None:
    acquired_and_running(j)
    j.tick(0.5)
    j(0.51, LeaseRenewed(sent_at=0.5, handover_requested=True, paused=True))
    j(0.6, NodeExited(returncode=1, signal=None, runtime=0.6))
    j.tick(1.0)
    j(1.01, LeaseRenewed(sent_at=1.0, handover_requested=False, paused=False))
    j.tick(1.01)
    j(1.05, NodeStarted(pid=101))
    j.tick(1.5)
    j(1.51, LeaseRenewed(sent_at=1.5, handover_requested=False, paused=True))
    j.tick(2.0)
    j(2.01, LeaseRenewed(sent_at=2.0, handover_requested=False, paused=False))


def paused_standby(j: Journey) -> None:
    j(0.0, Begin())
    j(0.0, LeaseObserved(version=V1, free=False, expired=True, holder="host-b", mine=False,
                         server=SERVER, row_server=SERVER, paused=True))
    j.tick(0.25)
    j(0.25, LeaseObserved(version=V1, free=False, expired=True, holder="host-b", mine=False,
                          server=SERVER, row_server=SERVER, paused=False))


def shutdown_paths(j: Journey) -> None:
    acquired_and_running(j)
    j.tick(0.5)
    j(0.51, ShutdownRequested("SIGTERM"))
    j(0.52, LeaseRenewed(sent_at=0.5, handover_requested=True))
    j(0.6, ShutdownRequested("SIGINT"))
    j(0.7, NodeExited(returncode=None, signal=9, runtime=0.7, killed_by="kill"))
    j(0.8, LeaseReleased(released=True))
    j.tick(0.9)


def shutdown_while_acquiring(j: Journey) -> None:
    j(0.0, Begin())
    j(0.0, free_row())
    j(0.05, ShutdownRequested("SIGTERM"))
    j(0.1, LeaseAcquired(epoch=9, sent_at=0.0))
    j(0.2, LeaseCallFailed("release", "refused"))


def acquired_too_late(j: Journey) -> None:
    j(0.0, Begin())
    j(0.0, free_row())
    j(1.4, LeaseAcquired(epoch=3, sent_at=0.0))
    j(1.5, LeaseReleased(released=True))
    j.tick(1.6)


def database_down_and_back(j: Journey) -> None:
    j(0.0, Begin())
    for t in (0.0, 0.1, 2.0, 5.0, 5.5, 10.1):
        j.tick(t)
        j(t + 0.01, LeaseCallFailed("observe", f"down at {t}"))
    j.tick(10.3)
    j(10.31, held_by_other(V1))


def servers_and_names(j: Journey) -> None:
    j(0.0, Begin())
    j(0.0, LeaseObserved(version=V1, free=False, expired=False, holder="host-b", mine=False,
                         server=SERVER, row_server=OTHER, name_conflict="host-a runs as pid 5"))
    j.tick(0.25)
    j(0.25, LeaseObserved(version=V1, free=False, expired=False, holder="host-b", mine=False,
                          server=SERVER, row_server=SERVER, name_conflict="host-a runs as pid 5"))
    j.tick(6.0)
    j(6.0, LeaseObserved(version=V1, free=False, expired=False, holder="host-b", mine=False,
                         server=SERVER, row_server=SERVER, name_conflict="host-a runs as pid 6"))
    j.tick(6.25)
    j(6.25, LeaseObserved(version=V1, free=False, expired=True, holder="host-b", mine=False,
                          server=OTHER, row_server=OTHER))
    j.tick(6.5)
    j(6.5, free_row(OTHER))


def young_server(j: Journey) -> None:
    j(0.0, Begin())
    j(0.0, LeaseObserved(version=FREE, free=True, expired=False, holder=None, mine=False,
                         server=SERVER, row_server=SERVER, server_uptime=0.12345))
    j.tick(0.25)
    j(0.25, LeaseObserved(version=FREE, free=True, expired=False, holder=None, mine=False,
                          server="", row_server=SERVER))
    j.tick(2.0)  # watched for exactly W: ready from this instant
    j.tick(2.0)


def server_up_for_exactly_w(j: Journey) -> None:
    j(0.0, Begin())
    j(0.0, LeaseObserved(version=FREE, free=True, expired=False, holder=None, mine=False,
                         server=SERVER, row_server=SERVER, server_uptime=TIMING.wait_interval))


def checks_and_fencing(j: Journey) -> None:
    j(0.0, Begin())
    j(0.0, SharedDirsChecked(problem="/shared: not writable"))
    j(0.0, FencingChecked(problem="no role", pending=True))
    j(0.0, FencingChecked(problem="no role: the node group has no member"))
    j(0.0, free_row())
    j(0.1, SharedDirsChecked(problem=None))
    j(0.1, FencingChecked(problem=None))
    j.tick(0.25)
    j(0.25, free_row())


def slow_renewal(j: Journey) -> None:
    acquired_and_running(j)
    j.tick(0.5)
    j.tick(0.5 + 2 * TIMING.renew_hedge)
    j(0.9, LeaseRenewed(sent_at=0.5, handover_requested=False))
    j(0.95, LeaseRenewed(sent_at=0.4, handover_requested=False))
    j(0.96, HandoverRequested())  # asked locally: a planned stop, like a handover


def kill_deadline_while_the_node_is_down(j: Journey) -> None:
    acquired_and_running(j)
    j(0.1, NodeExited(returncode=1, signal=None, runtime=0.08))
    j.tick(0.5)
    j(0.6, LeaseCallFailed("renew", "timeout"))
    j.tick(1.3)  # the term deadline: no node to stop
    j.tick(1.8)  # the kill deadline: the lease is given up


def handover_stop_outlives_the_kill_deadline(j: Journey) -> None:
    acquired_and_running(j)
    j.tick(0.5)
    j(0.51, LeaseRenewed(sent_at=0.5, handover_requested=True))  # StopNode(S), planned
    j.tick(1.0)
    j(1.1, LeaseCallFailed("renew", "timeout"))
    keep_failing = [1.125, 1.2, 1.5, 2.0]
    for at in keep_failing:
        j.tick(at)
        if j.state.lease.op == "renew":
            j(at + 0.05, LeaseCallFailed("renew", "timeout"))
    j.tick(2.3)  # t + W - M: the node still stops: killed, the lease given up
    j(2.35, NodeExited(returncode=None, signal=9, runtime=2.33, killed_by="kill"))
    j(2.4, LeaseReleased(released=True))


def not_ready_while_it_stops(j: Journey) -> None:
    acquired_and_running(j)
    j.tick(0.5)
    j(0.51, LeaseRenewed(sent_at=0.5, handover_requested=True))  # stops before it is ready
    keep_renewing(j, 3.1)  # the readiness deadline passes while it stops: no kill for it
    j(3.2, NodeExited(returncode=0, signal=None, runtime=3.18, killed_by="stop"))


def reclaimed_from_our_predecessor(j: Journey) -> None:
    j(0.0, Begin())
    j(0.0, LeaseObserved(version=V1, free=False, expired=False, holder="host-a", mine=False,
                         reclaimable=ProcessRef(77, 5), server=SERVER, row_server=SERVER))
    j(0.1, LeaseAcquired(epoch=2, sent_at=0.0))


def lease_off(j: Journey) -> None:
    j(0.0, Begin())
    j(0.1, NodeStarted(pid=300))
    t = 0.1
    for n in range(4):
        j(t + 0.5, NodeExited(returncode=2, signal=None, runtime=0.5))
        t = (core.next_wakeup(j.state, j.timing) or 0.0) / j.scale
        j.tick(t)
        j(t, NodeStarted(pid=301 + n))
    j.tick(t + TIMING.crash_cooldown)
    t += TIMING.crash_cooldown
    j(t + 0.5, NodeExited(returncode=2, signal=None, runtime=0.5))  # counted from 1 again
    j.tick(t + 1.5)
    j(t + 40, NodeExited(returncode=2, signal=None, runtime=TIMING.reset_after))  # reset
    j(t + 41, ShutdownRequested())
    j(t + 41, NodeStarted(pid=400))


def crashes_an_hour_in(j: Journey) -> None:
    """Crashes counted in the window by their age: the first falls out exactly at 60 s."""
    j(3600.0, Begin())
    j(3600.0, NodeStarted(pid=500))
    for at, runtime in ((3600.5, 0.5), (3602.0, 0.5), (3604.5, 0.5), (3660.5, 52.0)):
        j(at, NodeExited(returncode=3, signal=None, runtime=runtime))
        wake = core.next_wakeup(j.state, j.timing)
        if wake is not None:
            j.tick(wake / j.scale)
            j(wake / j.scale, NodeStarted(pid=int(at)))


def ready_in_time_and_restarted(j: Journey) -> None:
    acquired_and_running(j)
    j(0.3, NodeReady(pid=100))
    j(0.4, NodeExited(returncode=1, signal=None, runtime=0.38))
    keep_renewing(j, 1.4)
    j(1.41, NodeStarted(pid=101))
    keep_renewing(j, 1.6)
    j(1.61, LeaseRenewed(sent_at=1.5, handover_requested=True))
    j(1.7, ShutdownRequested("SIGTERM"))  # a second stop: nothing new to send
    j(1.8, NodeExited(returncode=0, signal=None, runtime=0.39, killed_by="stop"))
    j(1.9, LeaseReleased(released=False))


def crash_then_pause_then_lost(j: Journey) -> None:
    acquired_and_running(j)
    j(0.1, NodeExited(returncode=1, signal=None, runtime=0.08))  # restart due at 1.1
    j.tick(0.5)
    j(0.51, LeaseRenewed(sent_at=0.5, handover_requested=False, paused=True))
    keep_renewing(j, 1.1)  # the restart scheduled before the pause
    j(1.11, NodeStarted(pid=102))
    j(1.2, NodeExited(returncode=1, signal=None, runtime=0.09))  # paused: not restarted
    keep_renewing(j, 1.5)
    j(1.51, LeaseRenewed(sent_at=1.5, handover_requested=False, paused=False))  # resumed
    j.tick(1.51)
    j(1.52, NodeStarted(pid=103))
    j(1.6, NodeExited(returncode=1, signal=None, runtime=0.08))  # not paused: backoff
    keep_renewing(j, 2.0)
    j(2.01, LeaseRenewed(sent_at=2.0, handover_requested=False, paused=True))
    j.tick(2.5)
    j(2.51, LeaseRenewed(sent_at=2.5, handover_requested=False, paused=False))
    j.tick(3.0)
    j(3.01, LeaseLost())  # node down, in backoff: back to standby


def conflicts_come_and_go(j: Journey) -> None:
    j(0.0, Begin())

    def seen(at: float, conflict: str | None) -> None:
        j.tick(at)
        j(at, LeaseObserved(version=V1, free=False, expired=False, holder="host-b", mine=False,
                            server=SERVER, row_server=SERVER, name_conflict=conflict))

    j(0.0, LeaseObserved(version=V1, free=False, expired=False, holder="host-b", mine=False,
                         server=SERVER, row_server=SERVER, name_conflict="pid 5"))
    seen(2.0, "pid 7")  # changed within error_repeat: said at once
    seen(3.0, "pid 7")  # the same, 1 s later: not again
    seen(7.0, "pid 7")  # the same, exactly error_repeat later: again
    seen(7.25, None)
    seen(7.5, "pid 8")
    j(7.5, SharedDirsChecked(problem="/a: not writable: EROFS"))
    seen(7.75, None)
    j(7.75, SharedDirsChecked(problem="/b: not writable: EROFS"))
    seen(8.0, None)


def acquired_at_the_term_deadline(j: Journey) -> None:
    j(0.0, Begin())
    j(0.0, free_row())
    term = 0.0 + TIMING.wait_interval - TIMING.margin - TIMING.loss_grace
    j(term, LeaseAcquired(epoch=3, sent_at=0.0))


JOURNEYS: dict[str, tuple[Callable[[Journey], None], bool, Timing]] = {
    "holder renews, then hands over": (holder_renews_then_hands_over, True, TIMING),
    "standby waits W, then takes over": (standby_waits_w_then_takes_over, True, TIMING),
    "reclaim, stray, reserved": (reclaim_stray_and_reserved, True, TIMING),
    "renewals fail until the deadlines": (renewals_fail_until_the_deadlines, True, TIMING),
    "lease lost, node killed": (lease_lost_and_killed, True, TIMING),
    "crashes back off, then loop": (crashes_back_off_then_loop, True, TIMING),
    "not ready in time": (not_ready_in_time, True, READY),
    "paused pair (holder)": (paused_pair, True, TIMING),
    "paused pair (standby)": (paused_standby, True, TIMING),
    "shutdown": (shutdown_paths, True, TIMING),
    "shutdown while acquiring": (shutdown_while_acquiring, True, TIMING),
    "acquired too late": (acquired_too_late, True, TIMING),
    "database down, then back": (database_down_and_back, True, READY),
    "servers and names": (servers_and_names, True, READY),
    "young server": (young_server, True, TIMING),
    "checks and fencing": (checks_and_fencing, True, TIMING),
    "slow renewal": (slow_renewal, True, TIMING),
    "lease off": (lease_off, False, TIMING),
    "crashes an hour in": (crashes_an_hour_in, False, TIMING),
    "ready in time, restarted": (ready_in_time_and_restarted, True, READY),
    "crash, pause, lost": (crash_then_pause_then_lost, True, TIMING),
    "conflicts come and go": (conflicts_come_and_go, True, READY),
    "server up for exactly W": (server_up_for_exactly_w, True, TIMING),
    "kill deadline while the node is down": (kill_deadline_while_the_node_is_down, True,
                                             TIMING),
    "reclaimed from our predecessor": (reclaimed_from_our_predecessor, True, TIMING),
    "handover stop outlives the kill deadline": (handover_stop_outlives_the_kill_deadline,
                                                 True, TIMING),
    "not ready while it stops": (not_ready_while_it_stops, True, READY),
}
# once more with every time and interval scaled: values whose every decimal counts
SCALE = 1.01234567


def trace() -> str:
    lines = []
    for scale in (1.0, SCALE):
        for name, (journey, lease, timing) in JOURNEYS.items():
            j = Journey(lease, timing, scale)
            journey(j)
            lines += [f"## {name} (times x {scale})", *j.lines, ""]
    j = Journey()
    acquired_at_the_term_deadline(j)  # exactly: unscaled only
    lines += ["## acquired at the term deadline", *j.lines, ""]
    return "\n".join(lines)


def test_the_core_says_and_does_exactly_what_was_recorded() -> None:
    got = trace()
    if os.environ.get("CORE_TRACE_WRITE"):
        GOLDEN.write_text(got)
    want = GOLDEN.read_text()
    if got != want:
        diff = "\n".join(difflib.unified_diff(want.splitlines(), got.splitlines(),
                                              "recorded", "now", lineterm="", n=2))
        pytest.fail(f"the core's trace changed (tests/core_trace.txt):\n{diff[:8000]}")
