"""The stale-node sweep before a start, what it cannot see is alive, and a stop ends with
the last process.

- Before a node starts, every process that carries the run's environment marker (a
  node a killed supervisor left) is killed; a sweep that blocks fails the start in
  time, and the loop runs on meanwhile.

- A sweep that leaves a survivor (a process SIGKILL cannot end yet) or cannot read
  the environment of a process that may be ours is not clean: the node is not
  started. Shown with a fake /proc root (`sweep_stale_nodes(proc_root=...)`: its
  entries name processes this test started, so the SIGKILLs hit nothing else) and
  with a real survivor (frozen by the cgroup v1 freezer: state D). As the service
  user, this machine's real /proc (with and without hidepid) gives no such reason:
  other users' processes are not ours to read.
- After the node's leader exited, `NodeProcess.wait()` returns only once the last
  process of the run is gone: a `setsid` child is killed first (no cgroup: the
  environment-marker sweep, round after round; a cgroup: killed until empty), and
  while a child survives SIGKILL the exit is not reported at all. With a cgroup, the
  supervisor kills the run's cgroup when the guard is killed, and no descendant
  survives a graceful stop.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import psutil
import pytest

from supervisor.config import NodeConfig
from supervisor.node import cgroup as cgroups
from supervisor.node import process as node
from supervisor.node import sweep as fencing
from supervisor.node.process import NodeProcess
from supervisor.node.sweep import (
    NODE_KEY_ENV,
    RunMarks,
    Swept,
    node_key,
    scan_marked,
    sweep_stale_nodes,
)
from tests.harness.aio import run
from tests.harness.cgroups import spawn_in
from tests.harness.freezer import frozen, state
from tests.harness.nodeproc import (
    node_config,
    start,
    started,
)
from tests.harness.noderecords import the_only_record
from tests.harness.paths import FAKE_NODE
from tests.harness.proc import Reaper, pid_alive, wait_until
from tests.harness.users import run_as, second_user

pytestmark = pytest.mark.timeout(60)


# ------------------------------------------------------------------ the sweep before a start


@pytest.mark.timeout(30)
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


@pytest.mark.timeout(30)
def test_start_sweeps_a_stale_node_first(reaper: Reaper, tmp_path: Path) -> None:
    cfg = node_config(tmp_path)
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


@pytest.mark.timeout(30)
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
        proc, out = await start(reaper, node_config(tmp_path), marks=marks, sweep=stuck)
        took = time.monotonic() - t0
        ex = await asyncio.wait_for(proc.wait(), 1)
        assert proc.pid is None and proc.guard_pid is None and out.lines == []
        assert ex.returncode == 127 and ex.spawn_error is not None
        assert "did not finish within 0.5 s" in ex.spawn_error
        t1 = time.monotonic()
        proc2, _ = await start(reaper, node_config(tmp_path), marks=marks)  # the real sweep
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
        proc3, _ = await started(reaper, node_config(tmp_path), marks=marks)  # free again
        proc3.kill()
        await proc3.wait()
    try:
        run(body(), timeout=20)
    finally:
        release.set()


# ------------------------------------------------------------------ a sweep must be clean


def fake_entry(root: Path, pid: int, *, environ: bytes | None = None, state: str = "S",
               uid: int | None = None) -> Path:
    """A /proc/<pid> entry under `root` (environ None: an unreadable one, a directory)."""
    entry = root / str(pid)
    entry.mkdir(parents=True)
    (entry / "stat").write_text(f"{pid} (x y) {state} " + "0 " * 16 + "4242 0\n")
    if environ is None:
        (entry / "environ").mkdir()  # read: EISDIR, neither ENOENT nor ESRCH
    else:
        (entry / "environ").write_bytes(environ)
    if uid is not None:
        (entry / "status").write_text(f"Name:\tx\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n")
    return entry


def marked(key: str) -> bytes:
    return b"PATH=/bin\0" + f"{NODE_KEY_ENV}={key}".encode() + b"\0"


def test_a_marked_process_that_survives_sigkill_makes_the_sweep_unclean(
        reaper: Reaper, tmp_path: Path) -> None:
    key = node_key("l", "m", str(tmp_path))
    victim = reaper.popen(["sleep", "60"]).pid  # the fake entry names our own process
    fake_entry(tmp_path / "proc", victim, environ=marked(key))  # /proc keeps showing it
    swept = sweep_stale_nodes(key, None, timeout=0.2, proc_root=str(tmp_path / "proc"))
    assert swept.pids == (victim,) and swept.left == (victim,), swept
    assert not swept.clean and "survived SIGKILL" in swept.problem()


def test_an_unreadable_environment_of_ours_makes_the_sweep_unclean(tmp_path: Path) -> None:
    """Unreadable and possibly ours: not clean. Gone (ENOENT), pid 1 and the sweeping
    process itself are no reason."""
    key = node_key("l", "m", str(tmp_path))
    root = tmp_path / "proc"
    fake_entry(root, 999_991)  # pids no process has: nothing is signalled
    gone = fake_entry(root, 999_992, environ=b"")
    (gone / "environ").unlink()
    (gone / "environ").symlink_to(root / "nowhere")  # read: ENOENT, the process is gone
    fake_entry(root, 1)
    fake_entry(root, os.getpid())
    fake_entry(root, 999_993, environ=b"PATH=/bin\0")  # readable, not marked
    swept = sweep_stale_nodes(key, None, timeout=0.2, proc_root=str(root))
    assert swept.unreadable == (999_991,) and swept.left == () and swept.pids == (), swept
    assert not swept.clean and "cannot read the environment of pids [999991]" in swept.problem()
    os.rename(root / "999991", tmp_path / "away")
    assert sweep_stale_nodes(key, None, timeout=0.2, proc_root=str(root)).clean


def test_an_unprivileged_sweep_must_read_the_processes_of_its_own_uid(tmp_path: Path) -> None:
    """Not root: a process is ours to read when its real, effective or saved uid is
    ours (or, without a readable status, its /proc directory is ours); another user's
    is not ours to read."""
    root = tmp_path / "proc"
    fake_entry(root, 999_981, uid=1000)  # ours
    fake_entry(root, 999_982, uid=2000)  # another user's
    saved = fake_entry(root, 999_983, uid=2000)
    (saved / "status").write_text("Uid:\t2000\t2000\t1000\t2000\n")  # saved uid ours
    hidden = fake_entry(root, 999_984)
    (hidden / "status").mkdir()  # status unreadable: the directory's owner decides
    os.chown(hidden, 1000, 1000)
    other_hidden = fake_entry(root, 999_985)
    (other_hidden / "status").mkdir()
    os.chown(other_hidden, 2000, 2000)
    found, unreadable = scan_marked(b"K=v", str(root), euid=1000)
    assert found == [] and sorted(unreadable) == [999_981, 999_983, 999_984]
    found, unreadable = scan_marked(b"K=v", str(root), euid=0)  # root: every one
    assert sorted(unreadable) == [999_981, 999_982, 999_983, 999_984, 999_985]


def _sweep_seen_by_the_user(key: str) -> dict[str, Any]:
    swept = sweep_stale_nodes(key, None, timeout=0.2)
    return {"clean": swept.clean, "unreadable": list(swept.unreadable),
            "pids": list(swept.pids)}


@pytest.mark.parametrize("hide_proc", [False, True], ids=["proc", "hidepid"])
def test_an_unprivileged_sweep_of_this_machine_is_clean(reaper: Reaper, tmp_path: Path,
                                                        hide_proc: bool) -> None:
    """As the service user (with or without hidepid): root's and others' processes,
    kernel threads included, are not ours to read; nothing makes the sweep unclean,
    and a marked process of root's is neither seen nor signalled."""
    user = second_user()
    key = node_key("l", "m", str(tmp_path))
    roots = reaper.spawn_detached(["sleep", "60"], cwd=str(tmp_path),
                                  env={**os.environ, NODE_KEY_ENV: key})
    seen = run_as(user, lambda: _sweep_seen_by_the_user(key), hide_proc=hide_proc)
    assert seen == {"clean": True, "unreadable": [], "pids": []}, seen
    assert pid_alive(roots)


def _start(reaper: Reaper, cwd: Path, command: tuple[str, ...], marks: RunMarks,
           **kw: Any) -> Coroutine[Any, Any, NodeProcess]:
    cfg = NodeConfig(command=command, working_directory=str(cwd), environment={},
                     stop_timeout=5.0)

    async def go() -> NodeProcess:
        proc = await NodeProcess.start(cfg, epoch=1, machine_name="m1", kill_deadline=None,
                                       on_output=lambda s, line: None, marks=marks, **kw)
        for pid in (proc.guard_pid, proc.pid):
            if pid is not None:
                reaper.track_group(pid)
        return proc
    return go()


@pytest.mark.parametrize("swept", [Swept(pids=(4242,), left=(4242,)),
                                   Swept(unreadable=(4343,))], ids=["survivor", "unreadable"])
def test_a_sweep_that_is_not_clean_starts_no_node(reaper: Reaper, tmp_path: Path,
                                                  swept: Swept) -> None:
    async def body() -> None:
        marks = RunMarks(key=node_key("", "m1", str(tmp_path)))
        proc = await _start(reaper, tmp_path, (sys.executable, FAKE_NODE), marks,
                            sweep=lambda abandoned: swept)
        ex = await asyncio.wait_for(proc.wait(), 2)
        assert proc.guard_pid is None and proc.pid is None
        assert ex.returncode == 127 and ex.spawn_error is not None
        assert swept.problem() in ex.spawn_error, ex.spawn_error
    run(body(), timeout=40)


def test_a_frozen_stale_node_is_a_survivor_and_no_node_starts(reaper: Reaper,
                                                             tmp_path: Path) -> None:
    """A real leftover SIGKILL cannot end yet (state D): the start is refused, and
    once it can die, the next start kills it and goes ahead."""
    key = node_key("", "m1", str(tmp_path))
    stale = reaper.spawn_detached(["sleep", "600"], cwd=str(tmp_path),
                                  env={**os.environ, NODE_KEY_ENV: key})
    marks = RunMarks(key=key)

    def short(abandoned: Any) -> Swept:
        return sweep_stale_nodes(key, None, abandoned, timeout=0.5)

    async def body() -> None:
        with frozen(stale) as group:
            proc = await _start(reaper, tmp_path, (sys.executable, FAKE_NODE), marks,
                                sweep=short)
            ex = await asyncio.wait_for(proc.wait(), 2)
            assert proc.guard_pid is None and ex.spawn_error is not None
            assert f"survived SIGKILL: pids [{stale}]" in ex.spawn_error, ex.spawn_error
            assert state(stale) == "D"
            group.thaw()
            proc = await _start(reaper, tmp_path, (sys.executable, FAKE_NODE), marks,
                                sweep=short)
            assert proc.pid is not None and not pid_alive(stale)
            proc.kill()
            await proc.wait()
    run(body(), timeout=40)


def test_a_stale_cgroup_that_does_not_empty_makes_the_sweep_unclean(
        reaper: Reaper, tmp_path: Path, cgroup_parent: str) -> None:
    key = node_key("", "m1", str(tmp_path))
    stale = cgroups.create(cgroup_parent, key)
    victim = spawn_in(reaper, stale, ["sleep", "600"]).pid
    wait_until(lambda: victim in cgroups.procs(stale), 5.0, message="the victim in its cgroup")
    with frozen(victim) as group:
        swept = sweep_stale_nodes(key, cgroup_parent, timeout=0.3)
        assert swept.cgroups_left == (stale,) and victim in swept.left, swept
        assert not swept.clean and "did not empty" in swept.problem()
        group.thaw()
        swept = sweep_stale_nodes(key, cgroup_parent, timeout=5.0)
    assert swept.clean and swept.cgroups == (stale,), swept
    assert not os.path.exists(stale)


# ------------------------------------------------------------------ the last process


def setsid_node(tmp_path: Path) -> tuple[tuple[str, ...], Path]:
    """A node whose leader is a shell that starts a `setsid` child (out of the node's
    process group and session: no killpg reaches it) and waits; SIGTERM ends the
    shell only. The child's pid is written to the returned file."""
    pidfile = tmp_path / "child.pid"
    script = f'setsid sleep 600 & echo $! > {pidfile}; wait'
    return ("/bin/sh", "-c", script), pidfile


async def child_of(reaper: Reaper, pidfile: Path) -> int:
    """The setsid child's pid, once it has left the node's session (`$!` is written
    before the child's setsid() has run)."""
    await asyncio.to_thread(wait_until, lambda: pidfile.exists()
                            and pidfile.read_text().endswith("\n"), 5.0)
    child = reaper.track_pid(int(pidfile.read_text()))
    await asyncio.to_thread(wait_until, lambda: os.getsid(child) == child, 5.0,
                            message="the child's own session")
    return child


def test_a_setsid_child_is_dead_before_the_exit_is_reported(reaper: Reaper,
                                                             tmp_path: Path) -> None:
    """No cgroup: the leader's exit is reported only once the marker sweep has
    killed the child that left the node's session."""
    command, pidfile = setsid_node(tmp_path)
    marks = RunMarks(key=node_key("", "m1", str(tmp_path)))

    async def body() -> None:
        proc = await _start(reaper, tmp_path, command, marks)
        child = await child_of(reaper, pidfile)
        assert os.getsid(child) != os.getsid(proc.pid or 0)
        t0 = time.monotonic()
        proc.stop(2.0)
        ex = await asyncio.wait_for(proc.wait(), 10)
        took = time.monotonic() - t0
        assert ex.killed_by == "stop"
        assert not pid_alive(child), "the setsid child outlived the reported exit"
        print(f"no cgroup: exit reported {took * 1000:.0f} ms after the stop, child dead")
    run(body(), timeout=40)


async def _exit_waits_for_a_frozen_child(proc: NodeProcess, child: int) -> None:
    """The child cannot die while frozen: the exit must not be reported; after the
    thaw the queued SIGKILL ends it and the exit follows."""
    with frozen(child) as group:
        proc.stop(1.0)
        waiting = asyncio.ensure_future(proc.wait())
        done, _ = await asyncio.wait({waiting}, timeout=2.5)
        assert not done, f"exit reported while process {child} of the run lived: " \
                         f"{waiting.result()}"
        assert state(child) == "D" and not proc.running
        t0 = time.monotonic()
        group.thaw()
        ex = await asyncio.wait_for(waiting, 10)
        took = time.monotonic() - t0
    assert not pid_alive(child) and ex.killed_by == "stop"
    print(f"exit reported {took * 1000:.0f} ms after the survivor could die")


def test_a_child_that_survives_sigkill_holds_the_exit(reaper: Reaper, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """No cgroup: round after round of the marker sweep (0.3 s each here), for as long
    as it takes."""
    monkeypatch.setattr(fencing, "KILL_WAIT", 0.3)
    command, pidfile = setsid_node(tmp_path)
    marks = RunMarks(key=node_key("", "m1", str(tmp_path)))

    async def body() -> None:
        proc = await _start(reaper, tmp_path, command, marks)
        await _exit_waits_for_a_frozen_child(proc, await child_of(reaper, pidfile))
    run(body(), timeout=40)


def test_with_a_cgroup_a_child_that_survives_sigkill_holds_the_exit(
        reaper: Reaper, tmp_path: Path, cgroup_parent: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With a cgroup: killed, waited for (0.3 s rounds here), killed again, for as long
    as it takes; the cgroup is removed once empty."""
    monkeypatch.setattr(node, "CGROUP_EMPTY_TIMEOUT", 0.3)
    command, pidfile = setsid_node(tmp_path)
    marks = RunMarks(key=node_key("", "m1", str(tmp_path)), cgroup_parent=cgroup_parent)

    async def body() -> None:
        proc = await _start(reaper, tmp_path, command, marks)
        child = await child_of(reaper, pidfile)
        assert proc.cgroup is not None and child in cgroups.procs(proc.cgroup)
        await _exit_waits_for_a_frozen_child(proc, child)
        assert not os.path.exists(proc.cgroup)
    run(body(), timeout=40)


@pytest.mark.timeout(30)
def test_guard_killed_supervisor_kills_the_run_cgroup(reaper: Reaper, tmp_path: Path,
                                                      cgroup_parent: str) -> None:
    """The node's worker called setsid: PDEATHSIG and killpg miss it when the guard
    dies; the supervisor's orphan path kills the run's cgroup and removes it."""
    async def body() -> None:
        marks = RunMarks(key=node_key("", "m1", str(tmp_path)), cgroup_parent=cgroup_parent)
        proc, _ = await start(reaper, node_config(tmp_path, "--setsid-child", "--record",
                                             str(tmp_path)), marks=marks)
        assert proc.pid is not None and proc.cgroup is not None
        worker = reaper.track_pid(int((await asyncio.to_thread(the_only_record, tmp_path))["pid"]))
        assert sorted(cgroups.procs(proc.cgroup)) == sorted([proc.pid, worker])
        assert proc.guard_pid is not None
        os.kill(proc.guard_pid, signal.SIGKILL)
        ex = await asyncio.wait_for(proc.wait(), 8)
        assert ex.killed_by == "guard_gone"
        assert not pid_alive(worker)
        assert not os.path.exists(proc.cgroup)
    run(body(), timeout=20)


@pytest.mark.timeout(30)
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
