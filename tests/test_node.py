"""NodeProcess (the supervisor's side of a node) with the real guard and the stand-in node
(tests/harness/nodeproc.py): start and stop, kill, the guard's deadline, crashes and
spawn failures, the node's environment, its relayed output; a cancelled start leaves
nothing running; when the guard or the supervisor dies or freezes, the node's whole
group dies with it."""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from supervisor.config import NodeConfig
from supervisor.node.launch import NodeExit, node_environment
from supervisor.node.pipes import MAX_LINE_BYTES
from supervisor.node.process import NodeProcess
from tests.harness.aio import run
from tests.harness.nodeproc import (
    gone,
    node_config,
    nodes_in,
    our_guards,
    start,
    started,
)
from tests.harness.noderecords import read_record
from tests.harness.paths import FAKE_NODE, REPO
from tests.harness.proc import Reaper, group_alive, pid_alive, wait_until

pytestmark = pytest.mark.timeout(30)


def test_start_and_stop_gracefully(reaper: Reaper, tmp_path: Path) -> None:
    async def body() -> None:
        proc, out = await started(reaper, node_config(tmp_path))
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
        proc, _ = await started(reaper, node_config(tmp_path, "--ignore-sigterm"))
        t0 = time.monotonic()
        proc.stop(0.5)
        ex = await asyncio.wait_for(proc.wait(), 5)
        took = time.monotonic() - t0
        assert ex.signal == signal.SIGKILL and ex.killed_by == "stop"
        assert 0.5 <= took < 1.0, took
    run(body(), timeout=20)


def test_kill_takes_down_the_group(reaper: Reaper, tmp_path: Path) -> None:
    async def body() -> None:
        proc, _ = await started(reaper, node_config(tmp_path, "--spawn-child", "--record",
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
        proc, _ = await started(reaper, node_config(tmp_path), deadline=t0 + 0.5)
        proc.set_deadline(t0 + 1.0)  # extension
        ex = await asyncio.wait_for(proc.wait(), 5)
        late = time.monotonic() - (t0 + 1.0)
        print(f"deadline exit observed {late * 1000:.1f} ms after the deadline")
        assert ex.signal == signal.SIGKILL and ex.killed_by == "deadline"
        assert 0 <= late < 0.3, late
    run(body(), timeout=20)


def test_deadline_already_passed_does_not_start(reaper: Reaper, tmp_path: Path) -> None:
    async def body() -> None:
        proc, out = await start(reaper, node_config(tmp_path), deadline=time.monotonic() - 0.001)
        assert proc.pid is None and not proc.running
        ex = await asyncio.wait_for(proc.wait(), 5)
        assert ex.returncode == 127 and ex.spawn_error and "deadline" in ex.spawn_error
        assert out.lines == []
    run(body(), timeout=20)


def test_crash_reported_with_returncode(reaper: Reaper, tmp_path: Path) -> None:
    async def body() -> None:
        proc, out = await started(reaper, node_config(tmp_path, "--crash-after", "0.1"))
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
        cfg = node_config(tmp_path, "--record", str(tmp_path), environment={"EXTRA": "x"})
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

    env = node_environment(node_config(tmp_path), epoch=None, machine_name="m2",
                           base={"CORDA_HA_EPOCH": "5", "WATCHDOG_PID": "1", "A": "b"})
    assert env == {"A": "b", "CORDA_HA_MACHINE_NAME": "m2"}


# ------------------------------------------------------------------ output


def test_output_relayed_line_by_line(reaper: Reaper, tmp_path: Path) -> None:
    size = 1_000_000

    async def body() -> None:
        cfg = node_config(tmp_path, "--long-line", str(size), "--binary")
        proc, out = await started(reaper, cfg)
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
        proc, _ = await started(reaper, node_config(tmp_path, "--long-line", "1000000"))
        proc.kill()
        await proc.wait()
        ticking = False
        await task
        assert worst < 0.2, worst
    run(body(), timeout=20)


def test_guard_sigkilled_while_frozen_writes_do_not_block(reaper: Reaper,
                                                          tmp_path: Path) -> None:
    async def body() -> None:
        proc, _ = await started(reaper, node_config(tmp_path))
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


# ------------------------------------------------------------------ a cancelled start


def test_cancelled_start_leaves_nothing_running(reaper: Reaper, tmp_path: Path) -> None:
    """Whenever start() is cancelled, no node survives (the guard sees EOF)."""
    async def body() -> None:
        for i, delay in enumerate((0.0, 0.005, 0.02, 0.05, 0.1, 0.2)):
            cwd = tmp_path / str(i)
            cwd.mkdir()
            task = asyncio.create_task(NodeProcess.start(
                node_config(cwd), epoch=1, machine_name="m", kill_deadline=None,
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


@pytest.mark.timeout(60)  # its body is bounded at 45 s
def test_cancelled_start_leaves_no_guard_and_no_node(reaper: Reaper, tmp_path: Path) -> None:
    async def body() -> None:
        keep: list[asyncio.Task[NodeProcess]] = []  # no pipe closes by garbage collection
        cancelled = 0
        for i, delay in enumerate((0.0, 0.005, 0.02, 0.05, 0.1, 0.2, 0.3)):
            cwd = tmp_path / str(i)
            cwd.mkdir()
            before = our_guards()
            task = asyncio.create_task(NodeProcess.start(
                node_config(cwd), epoch=1, machine_name="m", kill_deadline=None,
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


# ------------------------------------------------------------------ its guard or supervisor gone


@pytest.mark.timeout(60)  # its body is bounded at 45 s
def test_guard_sigkilled_the_whole_node_group_dies(reaper: Reaper, tmp_path: Path) -> None:
    """The guard vanishes: the supervisor SIGKILLs the node's whole process group. The
    grandchild here cleared its environment (a wrapper's `env -i`) and there is no run
    cgroup, so the sweep's environment marker cannot find it: only its group can."""

    async def body() -> None:
        ready = asyncio.Event()

        def on_output(stream: str, line: str) -> None:
            if line.startswith("node started"):
                ready.set()

        proc = await NodeProcess.start(node_config(tmp_path, "--spawn-child",
                                                   "--clean-env-child", "--record",
                                                   str(tmp_path)),
                                       epoch=1, machine_name="m", kill_deadline=None,
                                       on_output=on_output)
        assert proc.pid is not None and proc.guard_pid is not None
        assert proc.cgroup is None
        reaper.track_group(proc.pid)
        reaper.track_group(proc.guard_pid)
        await asyncio.wait_for(ready.wait(), 10)
        child = json.loads((tmp_path / f"{proc.pid}.json").read_text())["child_pid"]
        reaper.track_pid(child)
        assert pid_alive(child) and os.getpgid(child) == proc.pid
        assert b"CORDA_HA_NODE_KEY" not in Path(f"/proc/{child}/environ").read_bytes()
        os.kill(proc.guard_pid, signal.SIGKILL)
        ex = await asyncio.wait_for(proc.wait(), 10)
        assert ex.killed_by == "guard_gone" and ex.signal == signal.SIGKILL
        left = await gone({proc.pid, child}, 2.0)
        assert not left, f"node group members survived their guard: {left}"
    run(body(), timeout=45)


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
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
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
