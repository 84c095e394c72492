"""The daemon in the test's own event loop (tests/harness/inproc.py), with the in-memory
lease store (tests/harness/fakestore.py), which can be told to answer late, never
(ignoring cancellation, like a call stuck in libpq), raise an unexpected exception, or
block the whole event loop (a frozen supervisor). The node is the real guard with
tests/harness/fake_node.py: the deadlines that matter are the guard's.
U = 0.5 s, W = 2 s, M = 0.2 s, operationTimeout = 0.4 s.

Its node, on paths no end-to-end test reaches: a node start that raises, a node that
cannot be executed, the node killed because the daemon left with it running, a
shutdown while the node starts, a second SIGTERM, the deadline passing during a planned
stop, and the guard holding the deadline while the daemon's loop is frozen.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from supervisor.core.messages import ShutdownRequested
from supervisor.lease import (
    LeaseUnavailable,
)
from tests.harness.aio import run
from tests.harness.inproc import DeathWatch, M, Run, W, make_config, started
from tests.harness.nodeproc import our_guards
from tests.harness.proc import Reaper, pid_alive

pytestmark = pytest.mark.timeout(60)


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
