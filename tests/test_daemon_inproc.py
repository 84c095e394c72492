"""The daemon in the test's own event loop, with a fake lease store.

`supervisor.daemon.Daemon` takes a store (the `LeaseStore` Protocol of daemon.py);
`FakeStore` below keeps one lease row in memory and can be told to answer late,
never (ignoring cancellation, like a call stuck in libpq), raise an unexpected
exception, or block the whole event loop (a frozen supervisor). The node is the
real guard with tests/harness/fake_node.py: the deadlines that matter are the guard's.
U = 0.5 s, W = 2 s, M = 0.2 s, operationTimeout = 0.4 s.

Paths reached here that no end-to-end test reaches: a lease call that overruns its
bound, a store raising unexpected exceptions, a node start that raises, the node
killed because the daemon left with it running, a second SIGTERM, the deadline
passing during a planned stop, and the guard holding the deadline while the
daemon's loop is frozen.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import psutil
import pytest
from structlog.testing import capture_logs

from supervisor import clock, core
from supervisor.config import Config, load_config
from supervisor.core.identity import Identity, ProcessRef
from supervisor.core.messages import ShutdownRequested
from supervisor.daemon.loop import CALL_GRACE, Daemon
from supervisor.lease import (
    LeaseSnapshot,
    LeaseUnavailable,
    LeaseVersion,
    Member,
    RenewResult,
)
from supervisor.lease.fence import FenceFailed, FenceResult
from supervisor.node.machine import this_process
from supervisor.observe.sdnotify import SystemdNotifier
from tests.harness.aio import run
from tests.harness.paths import FAKE_NODE
from tests.harness.proc import Reaper, pid_alive

pytestmark = pytest.mark.timeout(60)

U, W, M, OP = 0.5, 2.0, 0.2, 0.4
Hook = Callable[[int], Awaitable[None]]


def make_config(tmp_path: Path, *node_args: str, stop: str = "500ms") -> Config:
    records = tmp_path / "records"
    records.mkdir(exist_ok=True)
    command = [sys.executable, FAKE_NODE, "--record", str(records), *node_args]
    quoted = ", ".join(f'"{a}"' for a in command)
    path = tmp_path / "supervisor.conf"
    path.write_text(f"""
mutualExclusionConfiguration {{
  on = true
  machineName = "inproc"
  updateInterval = {int(U * 1000)}
  waitInterval = {int(W * 1000)}
}}
database {{
  url = "postgresql://127.0.0.1:9/unused"
  operationTimeout = {int(OP * 1000)}ms
}}
node {{
  command = [{quoted}]
  workingDirectory = "{tmp_path}"
  stopTimeout = {stop}
}}
restart {{
  initialDelay = 200ms
  multiplier = 2
  maxDelay = 1s
  resetAfter = 30s
  maxCrashes = 3
  window = 30s
  cooldown = 30s
}}
health {{
  enabled = false
}}
""")
    config = load_config(str(path))
    assert config.lease.margin == pytest.approx(M)
    return config


async def hang(release: asyncio.Event) -> None:
    """Never answer (until the test ends), ignoring cancellation like a stuck C call."""
    while not release.is_set():
        try:
            await release.wait()
        except asyncio.CancelledError:
            continue


class FakeStore:
    """One lease row in memory. Each operation first awaits its hook (if any) with the
    call's number (1-based); a hook may sleep, hang, raise or block the loop."""

    def __init__(self, identity: Identity, server: str = "srv-1") -> None:
        self.identity = identity
        self.server = server
        self.holder: str | None = None
        self.epoch = 0
        self.renewed = 0
        self.calls: dict[str, list[tuple[float, dict[str, Any]]]] = {
            op: [] for op in ("observe", "acquire", "renew", "release")}
        self.hooks: dict[str, Hook] = {}
        self.release_hangs = asyncio.Event()
        self.closed = False

    async def _enter(self, op: str, **args: Any) -> None:
        self.calls[op].append((time.monotonic(), args))
        hook = self.hooks.get(op)
        if hook is not None:
            await hook(len(self.calls[op]))

    async def ensure_schema(self, timeout: float) -> None:
        pass

    async def observe(self, timeout: float) -> LeaseSnapshot:
        await self._enter("observe", timeout=timeout)
        held = self.holder is not None
        return LeaseSnapshot(
            lease_name="l", exists=self.epoch > 0, holder=self.holder, holder_host=None,
            holder_pid=None, instance=self.identity.instance if held else None,
            epoch=self.epoch, acquired_at=None, renewed_at=None, expires_at=None,
            handover_requested_at=None, db_now=datetime.now(UTC), expired=False,
            server=self.server, server_uptime=3600.0,
            row_server=self.server if self.epoch else None)

    async def acquire(self, expected: LeaseVersion | None, *,
                      takeover: ProcessRef | None = None, server: str | None = None,
                      timeout: float) -> int | None:
        await self._enter("acquire", expected=expected, server=server, timeout=timeout)
        if self.holder is not None or (server is not None and server != self.server):
            return None
        self.epoch += 1
        self.holder = self.identity.machine_name
        return self.epoch

    async def renew(self, epoch: int, timeout: float, *,
                    hedge_after: float | None = None) -> RenewResult | None:
        await self._enter("renew", epoch=epoch, timeout=timeout)
        if self.holder is None or epoch != self.epoch:
            return None
        self.renewed += 1
        return RenewResult(handover_requested=False)

    async def release(self, epoch: int, timeout: float) -> bool:
        await self._enter("release", epoch=epoch)
        if self.holder is None or epoch != self.epoch:
            return False
        self.holder = None
        return True

    async def listen(self, on_release: Callable[[], None]) -> None:
        await asyncio.Event().wait()

    # the rest of the port (supervisor.lease.port): no history, members, Corda row or
    # database fence here
    lease_name = "l"
    statements: ClassVar[dict[str, int]] = {}
    member_info: Callable[[], Member] | None = None

    def member_changed(self) -> None:
        pass

    def record_acquired(self, epoch: int, how: str, previous: str | None) -> None:
        pass

    def record_ended(self, epoch: int, reason: str) -> None:
        pass

    async def prepare_corda_row(self, epoch: int, timeout: float) -> str:
        return "absent"

    async def look_at_corda_row(self, timeout: float) -> tuple[str, str | None, float | None]:
        return "absent", None, None

    async def confirm_fencing(self, role: str, machine: str, timeout: float) -> str | None:
        return "no database fence in this fake"

    async def fence(self, epoch: int, role: str, machine: str, timeout: float) -> FenceResult:
        raise FenceFailed("no database fence in this fake")

    async def close(self) -> None:
        self.closed = True


class Run:
    """A daemon running as a task of this loop, with its captured log events."""

    def __init__(self, config: Config, reaper: Reaper) -> None:
        self.reaper = reaper
        self.identity = this_process(config.lease.machine_name)
        self.store = FakeStore(self.identity)
        self.daemon = Daemon(config, store=self.store, identity=self.identity,
                             notifier=SystemdNotifier(environ={}))
        self.logs: list[dict[str, Any]] = []
        self.task: asyncio.Task[int] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.daemon.run())

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.logs if e.get("event") == name]

    async def until(self, predicate: Callable[[], object], timeout: float, what: str) -> float:
        """Wait until `predicate()` is true; when it became true (monotonic)."""
        end = time.monotonic() + timeout
        while not predicate():
            assert self.task is not None
            if self.task.done():
                self.task.result()  # raises what the daemon raised
                raise AssertionError(f"the daemon exited while waiting for {what}")
            if time.monotonic() >= end:
                names = [e.get("event") for e in self.logs][-40:]
                raise AssertionError(f"no {what} within {timeout} s; log: {names}")
            await asyncio.sleep(0.005)
        return time.monotonic()

    async def node_up(self, timeout: float = 10.0) -> int:
        """The node's pid, once it has printed its start line (its signal handlers are
        installed by then: a SIGTERM before that would kill even --ignore-sigterm)."""
        await self.until(lambda: self.daemon.state.node.pid is not None, timeout, "node")
        pid = self.daemon.state.node.pid
        assert pid is not None
        self.track()
        await self.until(lambda: any(str(e.get("line", "")).startswith(f"node started pid={pid}")
                                     for e in self.events("node_output")), timeout,
                         "the node's start line")
        return pid

    def track(self) -> None:
        """Register the current node's and guard's groups for teardown."""
        process = self.daemon.node.process
        if process is not None:
            for pid in (process.pid, process.guard_pid):
                if pid is not None:
                    self.reaper.track_group(pid)

    async def exit_code(self, timeout: float) -> int:
        assert self.task is not None
        return await asyncio.wait_for(asyncio.shield(self.task), timeout)

    async def close(self) -> None:
        """Release hung store calls; make sure the daemon task is gone."""
        self.store.release_hangs.set()
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self.task, 10)


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    """Every event the daemon logs (all levels), as dicts."""
    with capture_logs() as captured:
        yield captured


async def started(config: Config, reaper: Reaper, logs: list[dict[str, Any]],
                  setup: Callable[[Run], None] = lambda r: None) -> Run:
    r = Run(config, reaper)
    r.logs = logs
    setup(r)
    r.start()
    return r


def our_guards() -> set[int]:
    found = set()
    for child in psutil.Process().children():
        try:
            if "supervisor.node.guard" in child.cmdline() and pid_alive(child.pid):
                found.add(child.pid)
        except psutil.Error:
            continue
    return found


class DeathWatch:
    """A thread (it works while the event loop is blocked) noting when `pid` died."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.died: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not pid_alive(self.pid):
                self.died = time.monotonic()
                return
            time.sleep(0.002)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


# ------------------------------------------------------------------ lease calls


def test_an_observe_that_never_answers_is_failed_in_time(
        reaper: Reaper, tmp_path: Path, logs: list[dict[str, Any]]) -> None:
    """The first observe never answers and ignores cancellation: the daemon posts
    LeaseCallFailed after its timeout + CALL_GRACE, observes again and takes the lease."""

    async def body() -> None:
        def setup(r: Run) -> None:
            async def first_hangs(n: int) -> None:
                if n == 1:
                    await hang(r.store.release_hangs)
            r.store.hooks["observe"] = first_hangs

        r = await started(make_config(tmp_path), reaper, logs, setup)
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
        reaper: Reaper, tmp_path: Path, logs: list[dict[str, Any]]) -> None:
    """Renewal 2 never answers (and ignores cancellation): the node gets SIGTERM at
    t + W - M - G and is gone by t + W - M; the hung call is failed after its own
    bound (up to the kill deadline) + CALL_GRACE."""

    async def body() -> None:
        def setup(r: Run) -> None:
            async def renew(n: int) -> None:
                if n == 2:
                    await hang(r.store.release_hangs)
            r.store.hooks["renew"] = renew

        r = await started(make_config(tmp_path), reaper, logs, setup)
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
        reaper: Reaper, tmp_path: Path, logs: list[dict[str, Any]]) -> None:
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

        r = await started(make_config(tmp_path), reaper, logs, setup)
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
        reaper: Reaper, tmp_path: Path, logs: list[dict[str, Any]]) -> None:
    async def body() -> None:
        r = await started(make_config(tmp_path), reaper, logs,
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
        reaper: Reaper, tmp_path: Path, logs: list[dict[str, Any]]) -> None:
    """An acquire answered 0.3 s late: its t (and so the node's kill deadline) is the
    time the call was sent, not the answer. Taken at the answer, a late answer moved the
    kill deadline past what the row allows (the row's expiry counts from its write)."""
    async def slow(n: int) -> None:
        await asyncio.sleep(0.3)

    async def body() -> None:
        r = await started(make_config(tmp_path), reaper, logs,
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
        reaper: Reaper, tmp_path: Path, logs: list[dict[str, Any]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon counts time on CLOCK_BOOTTIME (supervisor/clock.py), which runs on
    while the machine is suspended: resumed after 60 s, its kill deadline has passed, so
    it kills the node and gives the lease up before anything else, though every renewal
    would still answer. (On CLOCK_MONOTONIC, stopped meanwhile, it renewed on.) The
    suspend is played by moving this process's clock forward; the guard is frozen, so
    the daemon's own fence is what must act."""
    async def body() -> None:
        r = await started(make_config(tmp_path), reaper, logs)
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
        reaper: Reaper, tmp_path: Path, logs: list[dict[str, Any]]) -> None:
    """NodeProcess.start raising (here: an environment value the guard spec cannot
    carry) is logged (node_start_error) and reported as a refused start: the core counts
    a crash and schedules a restart; the half-started guard exits."""
    config = make_config(tmp_path)
    config = dataclasses.replace(config, node=dataclasses.replace(
        config.node, environment={"NOT_JSON": object()}))  # type: ignore[dict-item]

    async def body() -> None:
        before = our_guards()
        r = await started(config, reaper, logs)
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
        reaper: Reaper, tmp_path: Path, logs: list[dict[str, Any]]) -> None:
    config = make_config(tmp_path)
    config = dataclasses.replace(config, node=dataclasses.replace(
        config.node, command=(str(tmp_path / "no-such-corda"),)))

    async def body() -> None:
        r = await started(config, reaper, logs)
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
        reaper: Reaper, tmp_path: Path, logs: list[dict[str, Any]]) -> None:
    """The daemon's run() is cancelled (any way out but the orderly one) while its
    node runs: it logs node_killed_on_exit and kills the node at once, not only when
    the guard's deadline (t + W - M, 1.8 s after the renewal just made) passes."""

    async def body() -> None:
        r = await started(make_config(tmp_path), reaper, logs)
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
        reaper: Reaper, tmp_path: Path, logs: list[dict[str, Any]]) -> None:
    """SIGTERM after StartNode, before the guard reported the node started: the stop
    is held until the node runs, then applied; the daemon exits 0 with no node left."""

    async def body() -> None:
        r = await started(make_config(tmp_path), reaper, logs)
        try:
            await r.until(lambda: r.daemon.node.starting, 10, "a node start")
            assert r.daemon.node.process is None and r.daemon.state.node.pid is None
            r.daemon.events.put_nowait(ShutdownRequested("SIGTERM"))
            await r.until(lambda: r.daemon.node.process is not None
                          or r.daemon.exit_code is not None, 10, "the node handle")
            r.track()
            assert await r.exit_code(8) == 0
            names = [e["event"] for e in logs]
            assert names.index("shutdown_requested") < names.index("node_started")
            (exited,) = r.events("node_exited")
            assert exited["expected"] is True and exited["killed_by"] == "stop"
            pid = exited["pid"]
            assert pid is not None and not pid_alive(pid)
        finally:
            await r.close()
    run(body(), timeout=50)


def test_second_sigterm_kills_the_node(
        reaper: Reaper, tmp_path: Path, logs: list[dict[str, Any]]) -> None:
    """Real signals: the first SIGTERM stops the node (S = 30 s, the node ignores it),
    the second kills it at once; the daemon exits 0 long before S."""

    async def body() -> None:
        r = await started(make_config(tmp_path, "--ignore-sigterm", stop="30s"), reaper, logs)
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
        reaper: Reaper, tmp_path: Path, logs: list[dict[str, Any]]) -> None:
    """SIGTERM of the daemon gives the node S = 30 s, but renewals start failing: the
    node dies at the kill deadline t + W - M (before t + W), not after S."""

    async def body() -> None:
        r = await started(make_config(tmp_path, "--ignore-sigterm", stop="30s"), reaper, logs)
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
        reaper: Reaper, tmp_path: Path, logs: list[dict[str, Any]], freeze_at: int) -> None:
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

        r = await started(make_config(tmp_path), reaper, logs, setup)
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
