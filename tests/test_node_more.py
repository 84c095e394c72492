"""More NodeProcess rules (supervisor side, real guard, fake node). A separate file:
tests/test_node.py is being reworked in another branch.

- A guard that vanishes leaves no part of the node's process group behind (the leader
  dies by PDEATHSIG; its children only by the supervisor's own killpg).
- A cancelled start leaves nothing running: whatever point the start was cancelled
  at, every guard it spawned exits (it sees EOF) and no node outlives it. The test
  waits for those guards to exit, so a node spawned after the cancellation cannot
  slip by unseen, and tracks every group for teardown.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import psutil
import pytest

from supervisor.config import NodeConfig
from supervisor.node.process import NodeProcess
from tests.harness.aio import run
from tests.harness.paths import FAKE_NODE
from tests.harness.proc import Reaper, pid_alive

pytestmark = pytest.mark.timeout(60)


def config(cwd: Path, *args: str) -> NodeConfig:
    return NodeConfig(command=(sys.executable, FAKE_NODE, *args), working_directory=str(cwd),
                      environment={}, stop_timeout=5.0)


def our_guards() -> set[int]:
    """Pids of our child guard processes that are still alive."""
    found = set()
    for child in psutil.Process().children():
        try:
            if "supervisor.node.guard" in child.cmdline() and pid_alive(child.pid):
                found.add(child.pid)
        except psutil.Error:
            continue
    return found


def nodes_in(cwd: Path) -> list[int]:
    """Live fake nodes whose working directory is `cwd` (wherever they are in the tree)."""
    found = []
    for p in psutil.process_iter(["cmdline", "cwd"], ad_value=None):
        if p.info["cwd"] == str(cwd) and FAKE_NODE in (p.info["cmdline"] or []):
            found.append(p.pid)
    return [pid for pid in found if pid_alive(pid)]


async def gone(pids: set[int], timeout: float) -> set[int]:
    """Wait until none of `pids` is alive; the ones still alive after `timeout`."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        alive = {p for p in pids if pid_alive(p)}
        if not alive or loop.time() >= end:
            return alive
        await asyncio.sleep(0.01)


def test_guard_sigkilled_the_whole_node_group_dies(reaper: Reaper, tmp_path: Path) -> None:
    async def body() -> None:
        ready = asyncio.Event()

        def on_output(stream: str, line: str) -> None:
            if line.startswith("node started"):
                ready.set()

        proc = await NodeProcess.start(config(tmp_path, "--spawn-child", "--record",
                                              str(tmp_path)),
                                       epoch=1, machine_name="m", kill_deadline=None,
                                       on_output=on_output)
        assert proc.pid is not None and proc.guard_pid is not None
        reaper.track_group(proc.pid)
        reaper.track_group(proc.guard_pid)
        await asyncio.wait_for(ready.wait(), 10)
        child = json.loads((tmp_path / f"{proc.pid}.json").read_text())["child_pid"]
        reaper.track_pid(child)
        assert pid_alive(child) and os.getpgid(child) == proc.pid
        os.kill(proc.guard_pid, signal.SIGKILL)
        ex = await asyncio.wait_for(proc.wait(), 10)
        assert ex.killed_by == "guard_gone" and ex.signal == signal.SIGKILL
        left = await gone({proc.pid, child}, 2.0)
        assert not left, f"node group members survived their guard: {left}"
    run(body(), timeout=45)


def test_cancelled_start_leaves_no_guard_and_no_node(reaper: Reaper, tmp_path: Path) -> None:
    async def body() -> None:
        keep: list[asyncio.Task[NodeProcess]] = []  # no pipe closes by garbage collection
        cancelled = 0
        for i, delay in enumerate((0.0, 0.005, 0.02, 0.05, 0.1, 0.2, 0.3)):
            cwd = tmp_path / str(i)
            cwd.mkdir()
            before = our_guards()
            task = asyncio.create_task(NodeProcess.start(
                config(cwd), epoch=1, machine_name="m", kill_deadline=None,
                on_output=lambda s, line: None))
            keep.append(task)
            await asyncio.sleep(delay)  # cancel at various points of the start
            spawned = our_guards() - before
            for pid in spawned:
                reaper.track_group(pid)
            task.cancel()
            try:
                proc = await task
            except asyncio.CancelledError:
                cancelled += 1
            else:  # finished before the cancel: the node runs; kill it
                proc.kill()
                await proc.wait()
            spawned |= our_guards() - before
            for pid in spawned:
                reaper.track_group(pid)
            # Every guard of this start must exit (EOF on its stdin): until it has, it
            # could still spawn a node.
            left = await gone(spawned, 5.0)
            assert not left, f"delay {delay}: guard(s) {left} still running after the cancel"
            nodes = nodes_in(cwd)
            for pid in nodes:
                reaper.track_group(pid)
            assert not nodes, f"delay {delay}: node(s) {nodes} outlived the cancelled start"
        assert cancelled >= 3, "the start finished before most cancellations: no test"
    run(body(), timeout=45)
