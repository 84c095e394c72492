"""The daemon in the test's own event loop (tests/harness/inproc.py), with the in-memory
lease store (tests/harness/fakestore.py), which can be told to answer late, never
(ignoring cancellation, like a call stuck in libpq), raise an unexpected exception, or
block the whole event loop (a frozen supervisor). The node is the real guard with
tests/harness/fake_node.py: the deadlines that matter are the guard's.
U = 0.5 s, W = 2 s, M = 0.2 s, operationTimeout = 0.4 s.

Paths reached here that no end-to-end test reaches: a lease call that overruns its
bound, a store raising unexpected exceptions, a node start that raises, the node
killed because the daemon left with it running, a second SIGTERM, the deadline
passing during a planned stop, and the guard holding the deadline while the
daemon's loop is frozen.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from supervisor import clock, core
from supervisor.core.messages import ShutdownRequested
from supervisor.daemon.loop import CALL_GRACE
from supervisor.lease import (
    LeaseUnavailable,
)
from tests.harness.aio import run
from tests.harness.fakestore import hang
from tests.harness.inproc import OP, DeathWatch, M, Run, W, make_config, started
from tests.harness.nodeproc import our_guards
from tests.harness.proc import Reaper, pid_alive

pytestmark = pytest.mark.timeout(60)


# ------------------------------------------------------------------ lease calls


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


# ------------------------------------------------------------------ the node


def test_a_start_that_raises_is_a_crash(
        reaper: Reaper, tmp_path: Path, daemon_logs: list[dict[str, Any]]) -> None:
    """NodeProcess.start raising (here: an environment value the guard spec cannot
    carry) is logged (node_start_error) and reported as a refused start: the core counts
    a crash and schedules a restart; the half-started guard exits."""
    config = make_config(tmp_path)
    config = dataclasses.replace(config, node=dataclasses.replace(
        config.node, environment={"NOT_JSON": object()}))  # type: ignore[dict-item]

    async def body() -> None:
        before = our_guards()
        r = await started(config, reaper, daemon_logs)
        try:
            await r.until(lambda: r.events("node_restart_scheduled"), 10, "a restart")
            assert r.events("node_start_error")
            (refused, *_) = r.events("node_start_refused")
            assert "start failed" in refused["reason"] and refused["expected"] is False
            for pid in our_guards() - before:
                reaper.track_group(pid)
            await r.until(lambda: not (our_guards() - before), 5, "the aborted guard to exit")
            r.daemon.events.put_nowait(ShutdownRequested("SIGTERM"))
            assert await r.exit_code(10) == 0
        finally:
            await r.close()
    run(body(), timeout=50)


def test_a_node_that_cannot_be_executed_is_a_crash(
        reaper: Reaper, tmp_path: Path, daemon_logs: list[dict[str, Any]]) -> None:
    config = make_config(tmp_path)
    config = dataclasses.replace(config, node=dataclasses.replace(
        config.node, command=(str(tmp_path / "no-such-corda"),)))

    async def body() -> None:
        r = await started(config, reaper, daemon_logs)
        try:
            await r.until(lambda: r.events("node_restart_scheduled"), 10, "a restart")
            (spawn,) = r.events("node_spawn_failed")[:1]
            assert "no-such-corda" in spawn["error"]
            assert r.events("node_exited")[0]["exit_code"] == 127
            r.daemon.events.put_nowait(ShutdownRequested("SIGTERM"))
            assert await r.exit_code(10) == 0
        finally:
            await r.close()
    run(body(), timeout=50)


def test_node_killed_when_the_daemon_leaves_with_it_running(
        reaper: Reaper, tmp_path: Path, daemon_logs: list[dict[str, Any]]) -> None:
    """The daemon's run() is cancelled (any way out but the orderly one) while its
    node runs: it daemon_logs node_killed_on_exit and kills the node at once, not only when
    the guard's deadline (t + W - M, 1.8 s after the renewal just made) passes."""

    async def body() -> None:
        r = await started(make_config(tmp_path), reaper, daemon_logs)
        try:
            pid = await r.node_up()
            await r.until(lambda: r.store.renewed >= 1, 5, "a renewal")
            renewed = r.store.calls["renew"][0][0]
            assert r.task is not None
            watch = DeathWatch(pid)
            cancelled = time.monotonic()
            r.task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(r.task, 10)
            watch.stop()
            assert r.events("node_killed_on_exit")
            assert watch.died is not None, "the node outlived the daemon's run()"
            print(f"node dead {watch.died - cancelled:.3f} s after the cancel "
                  f"({cancelled - renewed:.3f} s after the last renewal)")
            assert watch.died - cancelled < 0.8
            assert watch.died < renewed + W - M - 0.2, "it died by the guard's deadline only"
            assert r.store.closed
        finally:
            await r.close()
    run(body(), timeout=50)


def test_shutdown_while_the_node_starts(
        reaper: Reaper, tmp_path: Path, daemon_logs: list[dict[str, Any]]) -> None:
    """SIGTERM after StartNode, before the guard reported the node started: the stop
    is held until the node runs, then applied; the daemon exits 0 with no node left."""

    async def body() -> None:
        r = await started(make_config(tmp_path), reaper, daemon_logs)
        try:
            await r.until(lambda: r.daemon.node.starting, 10, "a node start")
            assert r.daemon.node.process is None and r.daemon.state.node.pid is None
            r.daemon.events.put_nowait(ShutdownRequested("SIGTERM"))
            await r.until(lambda: r.daemon.node.process is not None
                          or r.daemon.exit_code is not None, 10, "the node handle")
            r.track()
            assert await r.exit_code(8) == 0
            names = [e["event"] for e in daemon_logs]
            assert names.index("shutdown_requested") < names.index("node_started")
            (exited,) = r.events("node_exited")
            assert exited["expected"] is True and exited["killed_by"] == "stop"
            pid = exited["pid"]
            assert pid is not None and not pid_alive(pid)
        finally:
            await r.close()
    run(body(), timeout=50)


def test_second_sigterm_kills_the_node(
        reaper: Reaper, tmp_path: Path, daemon_logs: list[dict[str, Any]]) -> None:
    """Real signals: the first SIGTERM stops the node (S = 30 s, the node ignores it),
    the second kills it at once; the daemon exits 0 long before S."""

    async def body() -> None:
        config = make_config(tmp_path, "--ignore-sigterm", stop="30s")
        r = await started(config, reaper, daemon_logs)
        try:
            pid = await r.node_up()
            await r.until(lambda: r.store.renewed >= 1, 5, "a renewal")
            signal.raise_signal(signal.SIGTERM)  # the daemon's handler is installed
            await r.until(lambda: r.events("node_stopping"), 5, "node_stopping")
            assert r.events("node_stopping")[0]["grace"] == pytest.approx(30.0)
            assert pid_alive(pid)
            t0 = time.monotonic()
            signal.raise_signal(signal.SIGTERM)
            assert await r.exit_code(5) == 0
            print(f"second SIGTERM: exit after {time.monotonic() - t0:.3f} s")
            assert [e["reason"] for e in r.events("node_killed")] == [
                "second_shutdown_request"]
            assert not pid_alive(pid)
        finally:
            await r.close()
    run(body(), timeout=50)


def test_the_deadline_passes_during_a_planned_stop(
        reaper: Reaper, tmp_path: Path, daemon_logs: list[dict[str, Any]]) -> None:
    """SIGTERM of the daemon gives the node S = 30 s, but renewals start failing: the
    node dies at the kill deadline t + W - M (before t + W), not after S."""

    async def body() -> None:
        config = make_config(tmp_path, "--ignore-sigterm", stop="30s")
        r = await started(config, reaper, daemon_logs)
        try:
            pid = await r.node_up()
            await r.until(lambda: r.store.renewed >= 1, 5, "a renewal")
            ok = r.store.renewed

            async def failing(n: int) -> None:
                raise LeaseUnavailable("database gone")
            r.store.hooks["renew"] = failing
            r.store.hooks["release"] = failing
            r.daemon.events.put_nowait(ShutdownRequested("SIGTERM"))
            assert r.store.renewed == ok
            t = r.store.calls["renew"][ok - 1][0]  # sent at or just before this
            watch = DeathWatch(pid)
            assert await r.exit_code(10) == 0
            watch.stop()
            assert watch.died is not None
            print(f"node dead at t + {watch.died - t:.3f} s (kill deadline t + {W - M:.1f})")
            assert watch.died < t + W, "the node outlived its lease"
            assert watch.died >= t + W - M - 0.2, "killed before the kill deadline"
            assert any(e["reason"] == "renewal_deadline" for e in r.events("node_killed"))
        finally:
            await r.close()
    run(body(), timeout=50)


@pytest.mark.parametrize("freeze_at", [1, 3], ids=["first_renewal", "third_renewal"])
def test_guard_kills_at_the_deadline_while_the_loop_is_frozen(
        reaper: Reaper, tmp_path: Path, daemon_logs: list[dict[str, Any]], freeze_at: int) -> None:
    """A store call blocks the whole event loop (a frozen supervisor) at renewal
    `freeze_at`; earlier renewals are answered 0.3 s after they are sent. Only the
    guard can act: the node dies at t + W - M by the deadline it was last given, t
    being the send time of the last successful renewal (or of the acquisition): not
    later (before t + W), and not earlier (the deadline moved with each renewal)."""

    async def body() -> None:
        armed = asyncio.Event()  # the test watches the node before the loop freezes
        frozen: list[float] = []  # when the loop froze and thawed

        def setup(r: Run) -> None:
            async def renew(n: int) -> None:
                if n < freeze_at:
                    await asyncio.sleep(0.3)
                    return
                await armed.wait()
                frozen.append(time.monotonic())
                time.sleep(W + 0.5)  # blocks the loop: nothing of the daemon runs
                frozen.append(time.monotonic())
                raise LeaseUnavailable("frozen")
            r.store.hooks["renew"] = renew

        r = await started(make_config(tmp_path), reaper, daemon_logs, setup)
        try:
            await r.until(lambda: r.daemon.state.node.pid is not None, 10, "node")
            pid = r.daemon.state.node.pid
            assert pid is not None
            r.track()
            watch = DeathWatch(pid)
            armed.set()
            await r.until(lambda: len(frozen) == 2, 15, "the freeze to end")
            watch.stop()
            if freeze_at == 1:
                t = r.store.calls["acquire"][0][0]
            else:
                t = r.store.calls["renew"][freeze_at - 2][0]
            assert r.store.renewed == freeze_at - 1
            assert frozen[0] < t + W - M - 0.1, "froze too late to show anything (slow start)"
            assert watch.died is not None, "the node survived the frozen supervisor"
            print(f"frozen at renewal {freeze_at} (t + {frozen[0] - t:.3f} s): node dead at "
                  f"t + {watch.died - t:.3f} s (deadline t + {W - M:.1f})")
            assert watch.died < t + W, "the node outlived its lease"
            assert watch.died >= t + W - M - 0.2, "killed before its deadline"
            r.daemon.events.put_nowait(ShutdownRequested("SIGTERM"))
            assert await r.exit_code(10) == 0
        finally:
            await r.close()
    run(body(), timeout=50)
