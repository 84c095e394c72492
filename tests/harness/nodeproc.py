"""The supervisor's side of a node (`supervisor.node.process.NodeProcess`) with the real
guard and the stand-in node, in a test's own event loop: a node config, starting one
(every guard and node group tracked by the reaper), its relayed output, its record,
and finding what is left (our guards, the nodes in a directory)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from supervisor.config import NodeConfig
from supervisor.node.process import NodeProcess
from supervisor.node.sweep import RunMarks, SweepFunction
from tests.harness.paths import FAKE_NODE
from tests.harness.proc import Reaper, pid_alive


def node_config(cwd: Path, *args: str, environment: dict[str, str] | None = None
                ) -> NodeConfig:
    """The stand-in node with `args`, in `cwd`; S = 5 s."""
    return NodeConfig(command=(sys.executable, FAKE_NODE, *args), working_directory=str(cwd),
                      environment=environment or {}, stop_timeout=5.0)


class Output:
    """Collects relayed output; `started` is set on the fake node's start line."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []
        self.started = asyncio.Event()
        self._waiters: list[tuple[str, asyncio.Event]] = []

    def __call__(self, stream: str, line: str) -> None:
        self.lines.append((stream, line))
        if stream == "stdout" and line.startswith("node started"):
            self.started.set()
        for text, event in self._waiters:
            if line == text:
                event.set()

    async def seen(self, text: str, timeout: float = 5.0) -> None:
        """Wait until a line equal to `text` has been relayed."""
        event = asyncio.Event()
        self._waiters.append((text, event))
        if any(line == text for _, line in self.lines):
            event.set()
        await asyncio.wait_for(event.wait(), timeout)

    def of(self, stream: str) -> list[str]:
        return [line for s, line in self.lines if s == stream]


async def start(reaper: Reaper, cfg: NodeConfig, *, epoch: int | None = 1,
                deadline: float | None = None, marks: RunMarks | None = None,
                sweep: SweepFunction | None = None) -> tuple[NodeProcess, Output]:
    """`NodeProcess.start` as machine m1; the guard's and the node's groups are tracked."""
    out = Output()
    proc = await NodeProcess.start(cfg, epoch=epoch, machine_name="m1", kill_deadline=deadline,
                                   on_output=out, marks=marks, sweep=sweep)
    if proc.guard_pid is not None:
        reaper.track_group(proc.guard_pid)
    if proc.pid is not None:
        reaper.track_group(proc.pid)
    return proc, out


async def started(reaper: Reaper, cfg: NodeConfig, **kw: Any) -> tuple[NodeProcess, Output]:
    """Start and wait until the fake node has printed its start line (handlers installed)."""
    proc, out = await start(reaper, cfg, **kw)
    assert proc.pid is not None and proc.running
    await asyncio.wait_for(out.started.wait(), 5)
    return proc, out


def freeze(proc: NodeProcess) -> int:
    """SIGSTOP the node's guard; its pid."""
    assert proc.guard_pid is not None
    os.kill(proc.guard_pid, signal.SIGSTOP)
    return proc.guard_pid


async def death_time(pid: int, timeout: float) -> float:
    """Poll (2 ms) until `pid` is dead (a zombie counts); the monotonic time seen."""
    end = time.monotonic() + timeout
    while pid_alive(pid):
        assert time.monotonic() < end, f"pid {pid} still alive after {timeout}s"
        await asyncio.sleep(0.002)
    return time.monotonic()


async def gone(pids: set[int], timeout: float) -> set[int]:
    """Wait until none of `pids` is alive; the ones still alive after `timeout`."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        alive = {p for p in pids if pid_alive(p)}
        if not alive or loop.time() >= end:
            return alive
        await asyncio.sleep(0.01)


def our_guards() -> set[int]:
    """Pids of this process's child guard processes that are still alive."""
    found = set()
    for child in psutil.Process().children():
        try:
            if "supervisor.node.guard" in child.cmdline() and pid_alive(child.pid):
                found.add(child.pid)
        except psutil.Error:
            continue
    return found


def nodes_in(cwd: Path) -> list[int]:
    """Live stand-in nodes whose working directory is `cwd` (wherever they are in the
    process tree)."""
    found = []
    for p in psutil.process_iter(["cmdline", "cwd"], ad_value=None):
        if p.info["cwd"] == str(cwd) and FAKE_NODE in (p.info["cmdline"] or []):
            found.append(p.pid)
    return [pid for pid in found if pid_alive(pid)]
