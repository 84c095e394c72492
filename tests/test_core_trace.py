"""The core's whole output on scripted journeys, compared with a recorded trace.

Every action (lease calls, node commands, and every log event with its level and
fields), the next wake-up and the takeover readiness after each step of each journey
below is written out and compared with tests/core_trace.txt. The log events are the
supervisor's interface to operators and to the renewal audit (tests/renewal_audit.py
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
from supervisor.identity import ProcessRef
from supervisor.messages import Event, FencingChecked, SharedDirsChecked
from tests.test_core import FREE, SERVER, TIMING, V1, V2, free_row, held_by_other

pytestmark = pytest.mark.timeout(30)

GOLDEN = Path(__file__).with_name("core_trace.txt")
OTHER = "10.0.0.2:5432 up since 2000"
READY = dataclasses.replace(TIMING, ready_timeout=3.0, error_repeat=5.0)


class Journey:
    """Feeds events at fake times and writes down everything that comes out."""

    def __init__(self, lease: bool = True, timing: Timing = TIMING) -> None:
        self.state = core.initial_state(lease_enabled=lease)
        self.timing = timing
        self.now = 0.0
        self.lines: list[str] = []

    def __call__(self, at: float, event: Event) -> None:
        assert at >= self.now
        self.now = at
        self.state, actions = core.step(self.state, event, at, self.timing)
        self.lines.append(f"{at!r} {event!r}")
        self.lines += [f"    {a!r}" for a in actions]
        ok, why = core.takeover_readiness(self.state, at)
        wake = core.next_wakeup(self.state, self.timing)
        term = core.term_deadline(self.state, self.timing)
        self.lines.append(f"    wake={wake!r} ready={ok} {why!r} term={term!r}")

    def tick(self, at: float) -> None:
        self(at, Tick())


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
    """Answer every renewal that falls due before `until` on time, then tick to it."""
    while True:
        due = j.state.next_renew_at
        if due is None or due >= until or j.state.lease_op is not None:
            break
        j.tick(due)
        j(due + 0.01, LeaseRenewed(sent_at=due, handover_requested=False))
    j.tick(until)


def crashes_back_off_then_loop(j: Journey) -> None:
    acquired_and_running(j, epoch=7)
    t = 0.1
    for n in range(4):
        j(t, NodeExited(returncode=1, signal=None, runtime=0.08, killed_by=None))
        if j.state.restart_at is None:
            break
        keep_renewing(j, j.state.restart_at)
        t = j.now + 0.1
        j(j.now + 0.01, NodeStarted(pid=200 + n))
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
                         server=SERVER, row_server=SERVER, server_uptime=0.5))
    j.tick(0.25)
    j(0.25, LeaseObserved(version=FREE, free=True, expired=False, holder=None, mine=False,
                          server="", row_server=SERVER))


def checks_and_fencing(j: Journey) -> None:
    j(0.0, Begin())
    j(0.0, SharedDirsChecked(problem="/shared: not writable"))
    j(0.0, FencingChecked(problem="no role", pending=True))
    j(0.0, FencingChecked(problem="no role"))
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


def lease_off(j: Journey) -> None:
    j(0.0, Begin())
    j(0.1, NodeStarted(pid=300))
    t = 0.1
    for n in range(4):
        j(t + 0.5, NodeExited(returncode=2, signal=None, runtime=0.5))
        t = core.next_wakeup(j.state, j.timing) or t
        j.tick(t)
        j(t, NodeStarted(pid=301 + n))
    j.tick(t + TIMING.crash_cooldown)
    j(t + TIMING.crash_cooldown + 40, NodeExited(returncode=2, signal=None, runtime=40.0))
    j(t + TIMING.crash_cooldown + 41, ShutdownRequested())
    j(t + TIMING.crash_cooldown + 41, NodeStarted(pid=400))


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
}


def trace() -> str:
    lines = []
    for name, (journey, lease, timing) in JOURNEYS.items():
        j = Journey(lease, timing)
        journey(j)
        lines += [f"## {name}", *j.lines, ""]
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
