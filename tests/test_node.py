"""NodeProcess (supervisor side) with the real guard and the fake node."""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from supervisor import clock
from supervisor.config import NodeConfig
from supervisor.node import cgroup as cgroups
from supervisor.node.launch import NodeExit, node_environment
from supervisor.node.pipes import MAX_LINE_BYTES
from supervisor.node.process import NodeProcess
from supervisor.node.sweep import (
    NODE_KEY_ENV,
    RunMarks,
    SweepFunction,
    Swept,
    node_key,
    sweep_stale_nodes,
)
from tests.harness.aio import run
from tests.harness.cgroups import wait_record
from tests.harness.paths import FAKE_NODE
from tests.harness.proc import Reaper, group_alive, pid_alive, wait_until

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parent.parent


def config(cwd: Path, *args: str, environment: dict[str, str] | None = None) -> NodeConfig:
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


def read_record(tmp_path: Path, pid: int) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((tmp_path / f"{pid}.json").read_text())
    return data


def test_start_and_stop_gracefully(reaper: Reaper, tmp_path: Path) -> None:
    async def body() -> None:
        proc, out = await started(reaper, config(tmp_path))
        assert proc.guard_pid != proc.pid and pid_alive(proc.pid or -1)
        proc.stop(5.0)
        ex = await asyncio.wait_for(proc.wait(), 5)
        assert ex == NodeExit(pid=proc.pid, returncode=0, signal=None, runtime=ex.runtime,
                              killed_by="stop")
        assert not proc.running
        assert "node stopped" in out.of("stdout")  # output drained before wait() returned
        assert await proc.wait() == ex  # repeatable
        proc.kill()  # no-ops after the exit
        proc.set_deadline(0.0)
        assert not pid_alive(proc.guard_pid or -1)
    run(body(), timeout=20)


def test_stop_ignoring_sigterm_is_killed_after_grace(reaper: Reaper, tmp_path: Path) -> None:
    async def body() -> None:
        proc, _ = await started(reaper, config(tmp_path, "--ignore-sigterm"))
        t0 = time.monotonic()
        proc.stop(0.5)
        ex = await asyncio.wait_for(proc.wait(), 5)
        took = time.monotonic() - t0
        assert ex.signal == signal.SIGKILL and ex.killed_by == "stop"
        assert 0.5 <= took < 1.0, took
    run(body(), timeout=20)


def test_kill_takes_down_the_group(reaper: Reaper, tmp_path: Path) -> None:
    async def body() -> None:
        proc, _ = await started(reaper, config(tmp_path, "--spawn-child", "--record",
                                               str(tmp_path)))
        assert proc.pid is not None
        child = read_record(tmp_path, proc.pid)["child_pid"]
        reaper.track_pid(child)
        proc.kill()
        ex = await asyncio.wait_for(proc.wait(), 5)
        assert ex.signal == signal.SIGKILL and ex.killed_by == "kill"
        wait_until(lambda: not group_alive(proc.pid or -1), 1.0, message="node group to die")
        assert not pid_alive(child)
    run(body(), timeout=20)


def test_deadline_fires_on_time_and_can_be_extended(reaper: Reaper, tmp_path: Path) -> None:
    async def body() -> None:
        t0 = time.monotonic()
        proc, _ = await started(reaper, config(tmp_path), deadline=t0 + 0.5)
        proc.set_deadline(t0 + 1.0)  # extension
        ex = await asyncio.wait_for(proc.wait(), 5)
        late = time.monotonic() - (t0 + 1.0)
        print(f"deadline exit observed {late * 1000:.1f} ms after the deadline")
        assert ex.signal == signal.SIGKILL and ex.killed_by == "deadline"
        assert 0 <= late < 0.3, late
    run(body(), timeout=20)


def test_deadline_already_passed_does_not_start(reaper: Reaper, tmp_path: Path) -> None:
    async def body() -> None:
        proc, out = await start(reaper, config(tmp_path), deadline=time.monotonic() - 0.001)
        assert proc.pid is None and not proc.running
        ex = await asyncio.wait_for(proc.wait(), 5)
        assert ex.returncode == 127 and ex.spawn_error and "deadline" in ex.spawn_error
        assert out.lines == []
    run(body(), timeout=20)


def test_crash_reported_with_returncode(reaper: Reaper, tmp_path: Path) -> None:
    async def body() -> None:
        proc, out = await started(reaper, config(tmp_path, "--crash-after", "0.1"))
        ex = await asyncio.wait_for(proc.wait(), 5)
        assert ex.returncode == 3 and ex.signal is None and ex.killed_by is None
        assert ex.runtime >= 0.1
        assert "node crashing" in out.of("stderr")
    run(body(), timeout=20)


def test_spawn_failure(reaper: Reaper, tmp_path: Path) -> None:
    async def body() -> None:
        cfg = NodeConfig(command=(str(tmp_path / "no-such-corda"),),
                         working_directory=str(tmp_path), environment={}, stop_timeout=1.0)
        proc, _ = await start(reaper, cfg)
        assert proc.pid is None and not proc.running
        ex = await asyncio.wait_for(proc.wait(), 5)
        assert ex.pid is None and ex.returncode == 127 and ex.killed_by is None
        assert ex.spawn_error is not None and "no-such-corda" in ex.spawn_error
        proc.stop(1.0)  # harmless
    run(body(), timeout=20)


def test_node_environment(reaper: Reaper, tmp_path: Path,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    monkeypatch.setenv("CORDA_HA_EPOCH", "999")

    async def body() -> None:
        cfg = config(tmp_path, "--record", str(tmp_path), environment={"EXTRA": "x"})
        proc, _ = await started(reaper, cfg, epoch=42)
        assert proc.pid is not None
        rec = read_record(tmp_path, proc.pid)
        assert rec["epoch"] == "42" and rec["machine_name"] == "m1"
        assert rec["notify_socket"] is None
        env = (tmp_path / "env")
        env.write_bytes(Path(f"/proc/{proc.pid}/environ").read_bytes())
        names = dict(item.split("=", 1) for item in env.read_text().split("\0") if item)
        assert names["EXTRA"] == "x" and "WATCHDOG_USEC" not in names
        assert names["PATH"] == os.environ["PATH"]
        proc.kill()
        await proc.wait()
    run(body(), timeout=20)

    env = node_environment(config(tmp_path), epoch=None, machine_name="m2",
                           base={"CORDA_HA_EPOCH": "5", "WATCHDOG_PID": "1", "A": "b"})
    assert env == {"A": "b", "CORDA_HA_MACHINE_NAME": "m2"}


def test_output_relayed_line_by_line(reaper: Reaper, tmp_path: Path) -> None:
    size = 1_000_000

    async def body() -> None:
        proc, out = await started(reaper, config(tmp_path, "--long-line", str(size), "--binary"))
        # Not before the node has written everything: a signal in the middle of a
        # blocking write makes CPython's buffered writer drop the rest.
        await out.seen("bad \ufffd\ufffd bytes")
        proc.stop(5.0)
        assert (await asyncio.wait_for(proc.wait(), 5)).returncode == 0
        stdout = out.of("stdout")
        assert stdout[0].startswith(f"node started pid={proc.pid} epoch=1")
        assert out.of("stderr") == [f"node stderr pid={proc.pid}"]
        chunks = [line for line in stdout if line and set(line) == {"x"}]
        assert sum(map(len, chunks)) == size
        assert all(len(c) <= MAX_LINE_BYTES for c in chunks) and len(chunks) > 1
        assert "bad \ufffd\ufffd bytes" in stdout
        assert stdout[-2:] == ["node stopping", "node stopped"]
    run(body(), timeout=20)


def test_output_relay_does_not_block_the_loop(reaper: Reaper, tmp_path: Path) -> None:
    """A loop tick stays short while 1 MB of output streams in."""
    async def body() -> None:
        worst = 0.0
        ticking = True

        async def ticker() -> None:
            nonlocal worst
            while ticking:
                t = time.monotonic()
                await asyncio.sleep(0.005)
                worst = max(worst, time.monotonic() - t)

        task = asyncio.create_task(ticker())
        proc, _ = await started(reaper, config(tmp_path, "--long-line", "1000000"))
        proc.kill()
        await proc.wait()
        ticking = False
        await task
        assert worst < 0.2, worst
    run(body(), timeout=20)


def test_guard_sigkilled_while_frozen_writes_do_not_block(reaper: Reaper,
                                                          tmp_path: Path) -> None:
    async def body() -> None:
        proc, _ = await started(reaper, config(tmp_path))
        assert proc.guard_pid is not None and proc.pid is not None
        os.kill(proc.guard_pid, signal.SIGSTOP)
        t0 = time.monotonic()
        for i in range(30_000):  # ~1 MB, far beyond the pipe buffer
            proc.set_deadline(time.monotonic() + 100 + i)
        assert time.monotonic() - t0 < 2.0
        os.kill(proc.guard_pid, signal.SIGKILL)
        ex = await asyncio.wait_for(proc.wait(), 8)
        assert ex.killed_by == "guard_gone" and ex.signal == signal.SIGKILL
        assert ex.pid == proc.pid
        assert not pid_alive(proc.pid)
        proc.stop(1.0)  # harmless after the guard is gone
    run(body(), timeout=20)


def test_stale_node_sweep_by_environment_marker(reaper: Reaper, tmp_path: Path) -> None:
    """Leftovers are found by CORDA_HA_NODE_KEY, never by their command line: a
    wrapper's child is found, a look-alike without the marker is not touched."""
    key, other_key = node_key("l", "m", str(tmp_path)), node_key("l", "m2", str(tmp_path))
    command = (sys.executable, FAKE_NODE)
    env = dict(os.environ)
    stale = reaper.spawn_detached(command, cwd=str(tmp_path), env={**env, NODE_KEY_ENV: key})
    wrapper = reaper.spawn_detached(
        ["/bin/sh", "-c", f"{sys.executable} {FAKE_NODE}; exit 0"], cwd=str(tmp_path),
        env={**env, NODE_KEY_ENV: key})
    wait_until(lambda: psutil.Process(wrapper).children(), 5, message="wrapper's child")
    (wrapped,) = [c.pid for c in psutil.Process(wrapper).children()]
    reaper.track_pid(wrapped)
    other_node = reaper.spawn_detached(command, cwd=str(tmp_path),
                                       env={**env, NODE_KEY_ENV: other_key})
    look_alike = reaper.spawn_detached(command, cwd=str(tmp_path), env=env)
    swept = sweep_stale_nodes(key, None)
    print(f"sweep of 3 marked processes took {swept.seconds * 1000:.1f} ms")
    assert sorted(swept.pids) == sorted([stale, wrapper, wrapped]) and swept.left == ()
    assert not any(pid_alive(p) for p in (stale, wrapper, wrapped))
    assert pid_alive(other_node) and pid_alive(look_alike)
    assert sweep_stale_nodes(key, None).pids == ()


def test_start_sweeps_a_stale_node_first(reaper: Reaper, tmp_path: Path) -> None:
    cfg = config(tmp_path)
    key = node_key("", "m1", str(tmp_path))  # what start() uses without marks
    stale = reaper.spawn_detached(cfg.command, cwd=str(tmp_path),
                                  env={**os.environ, NODE_KEY_ENV: key})

    async def body() -> None:
        proc, _ = await started(reaper, cfg)
        assert not pid_alive(stale)
        assert proc.pid is not None and pid_alive(proc.pid)
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")
        assert f"{NODE_KEY_ENV}={key}".encode() in environ
        proc.kill()
        await proc.wait()
    run(body(), timeout=20)


def test_cancelled_start_leaves_nothing_running(reaper: Reaper, tmp_path: Path) -> None:
    """Whenever start() is cancelled, no node survives (the guard sees EOF)."""
    def nodes_in(cwd: Path) -> list[int]:
        found = []
        for p in psutil.process_iter(["cmdline", "cwd"], ad_value=None):
            if p.info["cwd"] == str(cwd) and FAKE_NODE in (p.info["cmdline"] or []):
                found.append(p.pid)
        return [pid for pid in found if pid_alive(pid)]

    async def body() -> None:
        for i, delay in enumerate((0.0, 0.005, 0.02, 0.05, 0.1, 0.2)):
            cwd = tmp_path / str(i)
            cwd.mkdir()
            task = asyncio.create_task(NodeProcess.start(
                config(cwd), epoch=1, machine_name="m", kill_deadline=None,
                on_output=lambda s, line: None))
            await asyncio.sleep(delay)  # cancel at various points of the start
            task.cancel()
            try:
                proc = await task
            except asyncio.CancelledError:
                print(f"cancelled after {delay}s")
            else:  # finished before the cancel: the node runs; kill it
                proc.kill()
                await proc.wait()
            for pid in nodes_in(cwd):
                reaper.track_group(pid)
            await asyncio.to_thread(wait_until, lambda cwd=cwd: not nodes_in(cwd), 2.0,
                                    0.01, f"no node left in {cwd}")
    run(body(), timeout=20)


# A minimal supervisor-like parent: starts the node through NodeProcess and waits.
PARENT = r"""
import asyncio, json, sys, time
from supervisor.config import NodeConfig
from supervisor.node.process import NodeProcess

async def main():
    cfg = NodeConfig(command=tuple(json.loads(sys.argv[1])), working_directory=sys.argv[2],
                     environment={}, stop_timeout=5.0)
    delay = float(sys.argv[3])
    deadline = None if delay < 0 else time.monotonic() + delay
    ready = asyncio.Event()
    def on_output(stream, line):
        if line.startswith("node started"):
            ready.set()
    proc = await NodeProcess.start(cfg, epoch=1, machine_name="m", kill_deadline=deadline,
                                   on_output=on_output)
    await ready.wait()
    print(json.dumps({"pid": proc.pid, "guard_pid": proc.guard_pid, "deadline": deadline}),
          flush=True)
    await proc.wait()

asyncio.run(main())
"""


def spawn_parent(reaper: Reaper, tmp_path: Path, delay: float) -> tuple[
        subprocess.Popen[bytes], dict[str, Any]]:
    """Start the parent; return it and its report (node pid, guard pid, deadline)."""
    command = [sys.executable, FAKE_NODE, "--spawn-child", "--record", str(tmp_path)]
    parent = reaper.popen([sys.executable, "-c", PARENT, json.dumps(command), str(tmp_path),
                           str(delay)], stdout=subprocess.PIPE,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert parent.stdout is not None
    ready, _, _ = select.select([parent.stdout], [], [], 10)
    assert ready, "parent did not report"
    info: dict[str, Any] = json.loads(parent.stdout.readline())
    reaper.track_group(info["pid"])
    reaper.track_group(info["guard_pid"])
    info["child_pid"] = reaper.track_pid(read_record(tmp_path, info["pid"])["child_pid"])
    return parent, info


def test_supervisor_sigkilled_node_group_dies_within_a_second(reaper: Reaper,
                                                               tmp_path: Path) -> None:
    parent, info = spawn_parent(reaper, tmp_path, -1)
    assert pid_alive(info["pid"]) and pid_alive(info["child_pid"])
    t0 = time.monotonic()
    parent.kill()
    wait_until(lambda: not group_alive(info["pid"]), 1.0, interval=0.005,
               message="node group to die after the supervisor's SIGKILL")
    print(f"node group gone {(time.monotonic() - t0) * 1000:.1f} ms after SIGKILL of the parent")
    assert not pid_alive(info["child_pid"])
    wait_until(lambda: not pid_alive(info["guard_pid"]), 1.0, message="guard to exit")


def test_supervisor_frozen_node_dies_at_deadline(reaper: Reaper, tmp_path: Path) -> None:
    parent, info = spawn_parent(reaper, tmp_path, 1.0)
    deadline = info["deadline"]
    parent.send_signal(signal.SIGSTOP)
    try:
        while time.monotonic() < deadline - 0.05:
            assert pid_alive(info["pid"]), "node killed before its deadline"
            time.sleep(0.01)
        wait_until(lambda: not pid_alive(info["pid"]), 1.0, interval=0.002,
                   message="node to die at its deadline")
        late = time.monotonic() - deadline
        print(f"node dead {late * 1000:.1f} ms after the deadline (supervisor frozen)")
        assert late < 0.1, late
        wait_until(lambda: not group_alive(info["pid"]), 1.0, message="node group to die")
    finally:
        parent.send_signal(signal.SIGCONT)


# ------------------------------------------------------------------ the second line


async def death_time(pid: int, timeout: float) -> float:
    """Poll (2 ms) until `pid` is dead (a zombie counts); the monotonic time seen."""
    end = time.monotonic() + timeout
    while pid_alive(pid):
        assert time.monotonic() < end, f"pid {pid} still alive after {timeout}s"
        await asyncio.sleep(0.002)
    return time.monotonic()


def freeze(reaper: Reaper, proc: NodeProcess) -> int:
    assert proc.guard_pid is not None
    os.kill(proc.guard_pid, signal.SIGSTOP)
    return proc.guard_pid


def test_frozen_guard_supervisor_kills_at_the_deadline(reaper: Reaper, tmp_path: Path) -> None:
    """The guard is SIGSTOPped: this process must kill the node at the deadline itself
    (and then the guard, which cannot report)."""
    async def body() -> None:
        proc, _ = await started(reaper, config(tmp_path))
        assert proc.pid is not None
        guard = freeze(reaper, proc)
        deadline = time.monotonic() + 0.5
        proc.set_deadline(deadline)
        dead_at = await death_time(proc.pid, 5)
        late = dead_at - deadline
        ex = await asyncio.wait_for(proc.wait(), 5)
        print(f"frozen guard: node dead {late * 1000:.1f} ms after the deadline; exit "
              f"reported {(time.monotonic() - deadline) * 1000:.0f} ms after it")
        assert 0 <= late < 0.25, late
        assert ex.killed_by == "deadline" and ex.signal == signal.SIGKILL
        assert not pid_alive(guard)
    run(body(), timeout=20)


def test_frozen_guard_kill_is_immediate(reaper: Reaper, tmp_path: Path) -> None:
    async def body() -> None:
        proc, _ = await started(reaper, config(tmp_path, "--spawn-child", "--record",
                                               str(tmp_path)))
        assert proc.pid is not None
        child = reaper.track_pid(read_record(tmp_path, proc.pid)["child_pid"])
        guard = freeze(reaper, proc)
        t0 = time.monotonic()
        proc.kill()
        dead_at = await death_time(proc.pid, 2)
        ex = await asyncio.wait_for(proc.wait(), 5)
        print(f"kill with a frozen guard: node dead after {(dead_at - t0) * 1000:.1f} ms, "
              f"exit reported after {(time.monotonic() - t0) * 1000:.0f} ms")
        assert dead_at - t0 < 0.4  # without the fix: never (the guard is frozen)
        assert ex.killed_by == "kill" and ex.signal == signal.SIGKILL
        assert not pid_alive(child) and not pid_alive(guard)
    run(body(), timeout=20)


def test_unacknowledged_command_means_guard_stalled(reaper: Reaper, tmp_path: Path) -> None:
    async def body() -> None:
        marks = RunMarks(key=node_key("", "m1", str(tmp_path)), ack_timeout=0.3)
        proc, _ = await started(reaper, config(tmp_path), marks=marks)
        assert proc.pid is not None
        for _ in range(20):  # a healthy guard acknowledges everything
            proc.set_deadline(time.monotonic() + 100)
        await asyncio.sleep(0.5)
        assert proc.running
        guard = freeze(reaper, proc)
        t0 = time.monotonic()
        proc.set_deadline(time.monotonic() + 100)  # far: only the missing ack can act
        ex = await asyncio.wait_for(proc.wait(), 5)
        took = time.monotonic() - t0
        print(f"stalled guard detected and fenced after {took * 1000:.0f} ms (ack timeout 300)")
        assert ex.killed_by == "guard_stalled" and ex.signal == signal.SIGKILL
        assert 0.3 <= took < 1.5, took
        assert not pid_alive(proc.pid) and not pid_alive(guard)
    run(body(), timeout=20)


def test_frozen_together_is_not_a_stalled_guard(reaper: Reaper, tmp_path: Path) -> None:
    """A VM pause freezes this process and the guard alike: an ack that is overdue
    only because we were frozen too must not count the guard as stalled."""
    async def body() -> None:
        marks = RunMarks(key=node_key("", "m1", str(tmp_path)), ack_timeout=0.3)
        proc, _ = await started(reaper, config(tmp_path), marks=marks)
        guard = freeze(reaper, proc)
        proc.set_deadline(time.monotonic() + 100)  # the guard cannot ack it yet
        time.sleep(0.6)  # the whole "VM" is paused: our loop too
        os.kill(guard, signal.SIGCONT)
        await asyncio.sleep(0.8)
        assert proc.running, await proc.wait()
        proc.kill()
        assert (await proc.wait()).killed_by == "kill"
    run(body(), timeout=20)


def test_blocked_sweep_fails_the_start_in_time_and_the_loop_runs(reaper: Reaper,
                                                                 tmp_path: Path) -> None:
    """A /proc read hung on a stuck mount, played by a sweep that blocks: the start
    gives up after the limit without starting anything; the loop never stalls; while
    that sweep is still hung, the next start fails at once."""
    release = threading.Event()
    seen_abandoned: list[bool] = []
    sweep_threads: list[threading.Thread] = []

    def stuck(abandoned: threading.Event) -> Swept:
        sweep_threads.append(threading.current_thread())
        release.wait(20)
        seen_abandoned.append(abandoned.is_set())
        return Swept()

    async def body() -> None:
        worst = 0.0
        ticking = True

        async def ticker() -> None:
            nonlocal worst
            while ticking:
                t = time.monotonic()
                await asyncio.sleep(0.005)
                worst = max(worst, time.monotonic() - t)

        task = asyncio.create_task(ticker())
        marks = RunMarks(key=node_key("", "m1", str(tmp_path)), sweep_timeout=0.5)
        t0 = time.monotonic()
        proc, out = await start(reaper, config(tmp_path), marks=marks, sweep=stuck)
        took = time.monotonic() - t0
        ex = await asyncio.wait_for(proc.wait(), 1)
        assert proc.pid is None and proc.guard_pid is None and out.lines == []
        assert ex.returncode == 127 and ex.spawn_error is not None
        assert "did not finish within 0.5 s" in ex.spawn_error
        t1 = time.monotonic()
        proc2, _ = await start(reaper, config(tmp_path), marks=marks)  # the real sweep
        ex2 = await proc2.wait()
        assert ex2.spawn_error is not None and "still hung" in ex2.spawn_error
        assert time.monotonic() - t1 < 0.1
        ticking = False
        await task
        print(f"blocked sweep: start failed after {took * 1000:.0f} ms (limit 500); "
              f"worst loop lag {worst * 1000:.1f} ms")
        assert 0.5 <= took < 1.0, took
        assert worst < 0.2, worst
        release.set()
        # "Free again" means the hung thread has ended, not merely that it was released.
        await asyncio.to_thread(sweep_threads[0].join, 5.0)
        assert not sweep_threads[0].is_alive()
        assert seen_abandoned == [True]
        proc3, _ = await started(reaper, config(tmp_path), marks=marks)  # free again
        proc3.kill()
        await proc3.wait()
    try:
        run(body(), timeout=20)
    finally:
        release.set()


def test_guard_killed_supervisor_kills_the_run_cgroup(reaper: Reaper, tmp_path: Path,
                                                      cgroup_parent: str) -> None:
    """The node's worker called setsid: PDEATHSIG and killpg miss it when the guard
    dies; the supervisor's orphan path kills the run's cgroup and removes it."""
    async def body() -> None:
        marks = RunMarks(key=node_key("", "m1", str(tmp_path)), cgroup_parent=cgroup_parent)
        proc, _ = await start(reaper, config(tmp_path, "--setsid-child", "--record",
                                             str(tmp_path)), marks=marks)
        assert proc.pid is not None and proc.cgroup is not None
        worker = reaper.track_pid(int((await asyncio.to_thread(wait_record, tmp_path))["pid"]))
        assert sorted(cgroups.procs(proc.cgroup)) == sorted([proc.pid, worker])
        assert proc.guard_pid is not None
        os.kill(proc.guard_pid, signal.SIGKILL)
        ex = await asyncio.wait_for(proc.wait(), 8)
        assert ex.killed_by == "guard_gone"
        assert not pid_alive(worker)
        assert not os.path.exists(proc.cgroup)
    run(body(), timeout=20)


def test_after_a_graceful_stop_no_descendant_survives(reaper: Reaper, tmp_path: Path,
                                                      cgroup_parent: str) -> None:
    """A node that leaves a setsid'ed helper behind on a clean exit: wait() returns
    only once the run's cgroup is empty and removed."""
    pidfile = tmp_path / "helper.pid"
    wrapper = ("/bin/sh", "-c", f"setsid /bin/sh -c 'echo $$ > {pidfile}; exec sleep 1000' & "
               f"exec {sys.executable} {FAKE_NODE}")
    cfg = NodeConfig(command=wrapper, working_directory=str(tmp_path), environment={},
                     stop_timeout=5.0)

    async def body() -> None:
        marks = RunMarks(key=node_key("", "m1", str(tmp_path)), cgroup_parent=cgroup_parent)
        proc, _ = await started(reaper, cfg, marks=marks)
        await asyncio.to_thread(wait_until, lambda: pidfile.exists() and pidfile.read_text(),
                                5.0)
        helper = reaper.track_pid(int(pidfile.read_text()))
        assert proc.cgroup is not None and helper in cgroups.procs(proc.cgroup)
        proc.stop(5.0)
        ex = await asyncio.wait_for(proc.wait(), 8)
        assert ex.returncode == 0 and ex.killed_by == "stop"
        assert not pid_alive(helper)
        assert not os.path.exists(proc.cgroup)
    run(body(), timeout=20)


def test_a_suspend_past_the_deadline_kills_the_node_as_this_process_resumes(
        reaper: Reaper, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's own fence holds the deadline on CLOCK_BOOTTIME and looks at it at
    least every MAX_WAIT (the loop's timers run on CLOCK_MONOTONIC, which a suspend
    stops). The guard is frozen, so only this process can act; a suspend of 60 s is
    played by moving `supervisor.clock.now` forward: the node dies within MAX_WAIT, not
    when a 30 s timer on CLOCK_MONOTONIC would have fired."""
    async def body() -> None:
        proc, _ = await started(reaper, config(tmp_path))
        assert proc.pid is not None
        freeze(reaper, proc)
        proc.set_deadline(clock.now() + 30.0)
        await asyncio.sleep(0)  # the deadline's timer is armed
        real = clock.now
        monkeypatch.setattr(clock, "now", lambda: real() + 60.0)
        resumed = time.monotonic()
        dead_at = await death_time(proc.pid, 5)
        ex = await asyncio.wait_for(proc.wait(), 5)
        assert ex.killed_by == "deadline", ex
        assert dead_at - resumed < clock.MAX_WAIT + 0.25, dead_at - resumed
    run(body(), timeout=20)
