"""The daemon (`supervisor.daemon.loop.Daemon`) in the test's own event loop, with the
in-memory lease store (tests/harness/fakestore.py) and the real guard and stand-in node:
the deadlines that matter are the guard's.

The lab timing: U = 0.5 s, W = 2 s, M = 0.2 s, operationTimeout = 0.4 s (`make_config`).
`started(...)` gives a `Run`: the daemon as a task, its store and captured log events;
`DeathWatch` notes when a node died, from a thread (it works while the loop is blocked).
Register the `daemon_logs` fixture from conftest.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from supervisor.config import Config, load_config
from supervisor.daemon.loop import Daemon
from supervisor.node.machine import this_process
from supervisor.observe.sdnotify import SystemdNotifier
from tests.harness.config import LAB_RESTART, lease, ms, write_config
from tests.harness.fakestore import FakeStore
from tests.harness.paths import FAKE_NODE
from tests.harness.proc import Reaper, pid_alive

U, W, M, OP = 0.5, 2.0, 0.2, 0.4


def make_config(tmp_path: Path, *node_args: str, stop: str = "500ms") -> Config:
    """The lab timing, the stand-in node with `node_args` (records in tmp_path/records),
    stopTimeout `stop`, no health endpoint; the database is never reached."""
    records = tmp_path / "records"
    records.mkdir(exist_ok=True)
    path = write_config(
        tmp_path / "supervisor.conf", lease=lease("inproc", int(U * 1000), int(W * 1000)),
        database={"url": "postgresql://127.0.0.1:9/unused", "operationTimeout": ms(OP * 1000)},
        node={"command": [sys.executable, FAKE_NODE, "--record", str(records), *node_args],
              "workingDirectory": str(tmp_path), "stopTimeout": stop},
        restart=LAB_RESTART, health={"enabled": False})
    config = load_config(str(path))
    assert config.lease.margin == pytest.approx(M)
    return config


class Run:
    """A daemon running as a task of this loop, with its captured log events."""

    def __init__(self, config: Config, reaper: Reaper) -> None:
        self.reaper = reaper
        self.identity = this_process(config.lease.machine_name)
        self.store = FakeStore(self.identity, config.lease.wait_interval)
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
def daemon_logs() -> Iterator[list[dict[str, Any]]]:
    """Every event the daemon logs (all levels), as dicts."""
    with capture_logs() as captured:
        yield captured  # type: ignore[misc]  # structlog's events are plain dicts


async def started(config: Config, reaper: Reaper, logs: list[dict[str, Any]],
                  setup: Callable[[Run], None] = lambda r: None) -> Run:
    """A `Run` of `config` logging into `logs`, after `setup` (e.g. to set store hooks)."""
    r = Run(config, reaper)
    r.logs = logs
    setup(r)
    r.start()
    return r


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
