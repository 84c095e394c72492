"""The daemon in the test's own event loop (tests/harness/inproc.py), with the in-memory
lease store (tests/harness/fakestore.py), which can be told to answer late, never
(ignoring cancellation, like a call stuck in libpq), raise an unexpected exception, or
block the whole event loop (a frozen supervisor). The node is the real guard with
tests/harness/fake_node.py: the deadlines that matter are the guard's.
U = 0.5 s, W = 2 s, M = 0.2 s, operationTimeout = 0.4 s.

Its lease calls, on paths no end-to-end test reaches: a call that overruns its bound,
a renewal that never answers (the deadlines hold), a store raising unexpected
exceptions, the server an acquire names, an acquisition counted from when it was sent,
a suspend longer than the lease.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from supervisor import clock, core
from supervisor.core.messages import ShutdownRequested
from supervisor.daemon.loop import CALL_GRACE
from tests.harness.aio import run
from tests.harness.fakestore import hang
from tests.harness.inproc import OP, DeathWatch, M, Run, W, make_config, started
from tests.harness.proc import Reaper, pid_alive

pytestmark = pytest.mark.timeout(60)


def test_an_observe_that_never_answers_is_failed_in_time(
        reaper: Reaper, tmp_path: Path, daemon_logs: list[dict[str, Any]]) -> None:
    """The first observe never answers and ignores cancellation: the daemon posts
    LeaseCallFailed after its timeout + CALL_GRACE, observes again and takes the lease."""

    async def body() -> None:
        def setup(r: Run) -> None:
            async def first_hangs(n: int) -> None:
                if n == 1:
                    await hang(r.store.release_hangs)
            r.store.hooks["observe"] = first_hangs

        r = await started(make_config(tmp_path), reaper, daemon_logs, setup)
        try:
            await r.until(lambda: r.store.calls["acquire"], 10, "an acquire")
            first = r.store.calls["observe"][0][0]
            acquired = r.store.calls["acquire"][0][0]
            failed = [e for e in r.events("lease_call_failed") if "overran" in e["reason"]]
            assert failed and failed[0]["op"] == "observe", r.events("lease_call_failed")
            took = acquired - first
            print(f"the hung observe was given up after {took:.3f} s (bound "
                  f"{OP + CALL_GRACE:.1f} s + retry)")
            assert OP + CALL_GRACE - 0.05 <= took < OP + CALL_GRACE + 2.0
            await r.node_up()
            r.daemon.events.put_nowait(ShutdownRequested("SIGTERM"))
            assert await r.exit_code(10) == 0
            assert r.store.holder is None  # released
        finally:
            await r.close()
    run(body(), timeout=50)


def test_a_renewal_that_never_answers_keeps_the_deadlines(
        reaper: Reaper, tmp_path: Path, daemon_logs: list[dict[str, Any]]) -> None:
    """Renewal 2 never answers (and ignores cancellation): the node gets SIGTERM at
    t + W - M - G and is gone by t + W - M; the hung call is failed after its own
    bound (up to the kill deadline) + CALL_GRACE."""

    async def body() -> None:
        def setup(r: Run) -> None:
            async def renew(n: int) -> None:
                if n == 2:
                    await hang(r.store.release_hangs)
            r.store.hooks["renew"] = renew

        r = await started(make_config(tmp_path), reaper, daemon_logs, setup)
        try:
            pid = await r.node_up()
            await r.until(lambda: len(r.store.calls["renew"]) >= 2, 5, "the hung renewal")
            t = r.store.calls["renew"][0][0]
            watch = DeathWatch(pid)
            await r.until(lambda: any("overran" in e["reason"] and e.get("op") == "renew"
                                      for e in r.events("lease_call_failed")),
                          W + CALL_GRACE + 3, "the hung renewal to be failed")
            watch.stop()
            g = r.daemon.timing.loss_grace
            (stop,) = [e for e in r.events("node_stopping") if e["reason"] == "renewal_overdue"]
            assert stop["grace"] == pytest.approx(g, abs=0.05)
            assert watch.died is not None
            print(f"node dead at t + {watch.died - t:.3f} s (SIGTERM due at t + "
                  f"{W - M - g:.1f}, SIGKILL at t + {W - M:.1f})")
            assert t + W - M - g - 0.2 <= watch.died < t + W, "outside [term, t + W)"
            r.daemon.events.put_nowait(ShutdownRequested("SIGTERM"))
            assert await r.exit_code(10) == 0
        finally:
            await r.close()
    run(body(), timeout=50)


def test_unexpected_store_exceptions_are_failed_calls(
        reaper: Reaper, tmp_path: Path, daemon_logs: list[dict[str, Any]]) -> None:
    """RuntimeError from observe, ValueError from a renewal: logged with the traceback
    (lease_call_error), treated as failed calls; the daemon carries on."""

    async def body() -> None:
        def setup(r: Run) -> None:
            async def observe(n: int) -> None:
                if n <= 2:
                    raise RuntimeError(f"store bug {n}")

            async def renew(n: int) -> None:
                if n == 1:
                    raise ValueError("renew bug")
            r.store.hooks["observe"] = observe
            r.store.hooks["renew"] = renew

        r = await started(make_config(tmp_path), reaper, daemon_logs, setup)
        try:
            pid = await r.node_up()
            await r.until(lambda: r.store.renewed >= 2, 5, "two successful renewals")
            errors = r.events("lease_call_error")
            assert [e["op"] for e in errors] == ["observe", "observe", "renew"]
            assert all(e.get("exc_info") for e in errors)
            reasons = [e["reason"] for e in r.events("lease_call_failed")]
            assert "RuntimeError: store bug 1" in reasons[0]
            assert any("ValueError: renew bug" in e["reason"]
                       for e in r.events("lease_renewal_failed"))
            assert pid_alive(pid) and r.daemon.state.node.pid == pid  # one failure: no stop
            r.daemon.events.put_nowait(ShutdownRequested("SIGTERM"))
            assert await r.exit_code(10) == 0
        finally:
            await r.close()
    run(body(), timeout=50)


def test_acquire_names_the_watched_server(
        reaper: Reaper, tmp_path: Path, daemon_logs: list[dict[str, Any]]) -> None:
    async def body() -> None:
        r = await started(make_config(tmp_path), reaper, daemon_logs,
                          lambda r: setattr(r.store, "server", "10.1.1.1:5432 up since 7"))
        try:
            await r.node_up()
            (_, args), = r.store.calls["acquire"]
            assert args["server"] == "10.1.1.1:5432 up since 7"
            r.daemon.events.put_nowait(ShutdownRequested("SIGTERM"))
            assert await r.exit_code(10) == 0
        finally:
            await r.close()
    run(body(), timeout=50)


def test_an_acquisition_counts_from_when_it_was_sent(
        reaper: Reaper, tmp_path: Path, daemon_logs: list[dict[str, Any]]) -> None:
    """An acquire answered 0.3 s late: its t (and so the node's kill deadline) is the
    time the call was sent, not the answer. Taken at the answer, a late answer moved the
    kill deadline past what the row allows (the row's expiry counts from its write)."""
    async def slow(n: int) -> None:
        await asyncio.sleep(0.3)

    async def body() -> None:
        r = await started(make_config(tmp_path), reaper, daemon_logs,
                          lambda r: r.store.hooks.__setitem__("acquire", slow))
        try:
            await r.until(lambda: r.daemon.state.lease.epoch is not None, 10, "the acquisition")
            deadline = core.kill_deadline(r.daemon.state, r.daemon.timing)  # before renewals
            ((called, _),) = r.store.calls["acquire"]
            assert deadline is not None and deadline <= called + W - M, (deadline, called)
            (acquired,) = r.events("lease_acquired")
            assert called - 0.05 <= acquired["sent_at"] <= called, (acquired, called)
            await r.node_up()
            r.daemon.events.put_nowait(ShutdownRequested("SIGTERM"))
            assert await r.exit_code(10) == 0
        finally:
            await r.close()
    run(body(), timeout=50)


def test_a_suspend_longer_than_the_lease_ends_the_run_at_once(
        reaper: Reaper, tmp_path: Path, daemon_logs: list[dict[str, Any]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon counts time on CLOCK_BOOTTIME (supervisor/clock.py), which runs on
    while the machine is suspended: resumed after 60 s, its kill deadline has passed, so
    it kills the node and gives the lease up before anything else, though every renewal
    would still answer. (On CLOCK_MONOTONIC, stopped meanwhile, it renewed on.) The
    suspend is played by moving this process's clock forward; the guard is frozen, so
    the daemon's own fence is what must act."""
    async def body() -> None:
        r = await started(make_config(tmp_path), reaper, daemon_logs)
        try:
            assert r.daemon.clock is clock.now  # the default: the deadline clock
            pid = await r.node_up()
            process = r.daemon.node.process
            assert process is not None and process.guard_pid is not None
            os.kill(process.guard_pid, signal.SIGSTOP)
            real = clock.now
            monkeypatch.setattr(clock, "now", lambda: real() + 60.0)
            r.daemon.clock = clock.now
            watch = DeathWatch(pid)
            resumed = time.monotonic()
            await r.until(lambda: watch.died is not None, 5, "the node's death")
            watch.stop()
            assert watch.died is not None and watch.died - resumed < 1.0
            await r.until(lambda: any(e.get("epoch") == 1 for e in r.events("lease_lost")), 5,
                          "the lease given up")
            (lost,) = [e for e in r.events("lease_lost") if e["epoch"] == 1]
            assert lost["reason"] == "renewal deadline passed", lost
            os.kill(process.guard_pid, signal.SIGCONT)
        finally:
            await r.close()
    run(body(), timeout=50)
