"""The supervisor's handle on the node process (asyncio), through the fencing guard.

`NodeProcess.start()` sweeps stale nodes (bounded, see `supervisor.node.sweep`; a
sweep that is not clean means no start), puts the run in its own cgroup where it
can, starts ``python -m supervisor.node.guard`` (see `supervisor.node.guard` for the pipe
protocol) and returns once the guard has started the node or failed to.

A stop is over when the last process of the run is gone, not its leader: after
the leader's exit (reported by the guard, or the orphan path) the run's cgroup
is killed until empty, or, without one, the environment-marker sweep runs round
after round until it finds nothing of this node; only then does `wait()`
return, so the daemon keeps (and renews) the lease until then.

Nothing here ever blocks the event loop: guard commands go through an asyncio
write transport (buffered, never blocking; a dead guard is ignored), node output
and guard events are read by asyncio protocols, the stale-node sweep runs in a
daemon thread. (cgroupfs writes, e.g. ``cgroup.kill``, are made on the loop:
in-kernel, they do not block.)

Two fences. The guard enforces the kill deadline, so the node dies on time even
if this process is frozen or killed. And this process fences the guard: it holds
the node's pidfd, process group and cgroup and the current kill deadline itself;
at the deadline, on `kill()`, and when the guard stops acknowledging commands,
it SIGKILLs the node directly, and the guard too when the guard does not report
the exit promptly. So a frozen guard cannot keep a node alive either.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

import structlog

from supervisor import clock
from supervisor.config import NodeConfig
from supervisor.node import cgroup as cgroups
from supervisor.node import guardfence, guardproto
from supervisor.node.launch import (
    SPAWN_FAILED_RETURNCODE,
    NodeExit,
    node_environment,
    prepare_run,
    spawn_guard,
)
from supervisor.node.pipes import GuardCommands, LineRelay, reap_child, wait_pid_gone
from supervisor.node.sweep import (
    RunMarks,
    SweepFunction,
    marker_sweep,
    node_key,
    release_cgroup,
    sweep_until_clean,
)

log = logging.getLogger(__name__)
flog = structlog.get_logger("supervisor.node")  # structured events of the second line

#: How long `start()` waits for the guard to report `started` / `spawn_failed`.
START_TIMEOUT = 10.0
#: After the node's exit, how long to wait for the guard to exit before SIGKILLing it.
GUARD_EXIT_TIMEOUT = 5.0
#: After the node's exit, how long to wait for the rest of its output (pipe EOF).
OUTPUT_DRAIN_TIMEOUT = 0.5
#: When the guard vanished, how long to wait for the orphaned node to die.
ORPHAN_DEATH_TIMEOUT = 5.0
#: After this process killed the node itself, how long the guard gets to report the
#: exit before it is SIGKILLed too (the exit is then finished through the orphan path).
KILL_CONFIRM_TIMEOUT = 0.5
#: After the run: one round of waiting for its killed cgroup to empty; then it is killed
#: again (the run is over only when the cgroup is empty).
CGROUP_EMPTY_TIMEOUT = 5.0

_BACKGROUND: set[asyncio.Task[Any]] = set()  # strong references to fire-and-forget tasks


class NodeProcess:
    """One run of the node under its guard. Create with `NodeProcess.start()`.

    `pid` is the node's pid (None if it never started), `guard_pid` the guard's,
    `cgroup` the run's cgroup directory (None: process group only).
    `set_deadline` and `stop` are non-blocking requests to the guard; `kill`
    SIGKILLs the node at once itself and tells the guard. This object also holds
    the kill deadline and kills the node itself when it passes without the exit
    reported; a guard that leaves a command unacknowledged for `ack_timeout`
    counts as stalled (the node and the guard are SIGKILLed, the exit is reported
    with killed_by "guard_stalled"). After the node has exited all of these do
    nothing. `wait()` returns the `NodeExit` once the guard has reported (or
    vanished) and the last process of the run is gone (its cgroup emptied and
    removed, or a clean round of the marker sweep); it never hangs on a dead or
    stuck guard, but waits as long as a process of the run survives.
    """

    def __init__(self, guard: subprocess.Popen[bytes] | None, spawn_error: str | None,
                 *, cgroup: str | None = None, ack_timeout: float = 2.0,
                 deadline: float | None = None, marks: RunMarks | None = None) -> None:
        """Internal: use `start()`."""
        self._loop = asyncio.get_running_loop()
        self._started_at = time.monotonic()
        self.pid: int | None = None
        self.guard_pid: int | None = None if guard is None else guard.pid
        self.cgroup = cgroup
        self._marks_of_run = marks  # the node key: how the run's last process is found
        self._guard = guard
        self._pgid: int | None = None
        self._node_pidfd: int | None = None
        self._leader_reaped = False  # pidfd_open found it gone already
        self._spawn_error = spawn_error
        self._exited_event: dict[str, Any] | None = None
        self._first_report: asyncio.Future[None] = self._loop.create_future()
        self._status_closed: asyncio.Future[None] = self._loop.create_future()
        self._transport: asyncio.WriteTransport | None = None
        self._commands: GuardCommands | None = None
        self._relays: list[tuple[asyncio.ReadTransport, LineRelay]] = []
        self._status_transport: asyncio.ReadTransport | None = None
        # the second line of defence
        self._deadline = deadline
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._acks = guardfence.AckWatch(self._loop, ack_timeout, self._timers,
                                         self._exit_known, self._guard_stalled)
        self._fence_cause: str | None = None  # why we killed the node ourselves
        self._orphan_cause: str | None = None  # why we SIGKILLed the guard ourselves
        self._result: asyncio.Future[NodeExit] = self._loop.create_future()
        if guard is None:
            self._result.set_result(NodeExit(
                pid=None, returncode=SPAWN_FAILED_RETURNCODE, signal=None, runtime=0.0,
                killed_by=None, spawn_error=spawn_error))

    # -- construction ---------------------------------------------------------
    @classmethod
    async def start(cls, node: NodeConfig, *, epoch: int | None, machine_name: str,
                    kill_deadline: float | None,
                    on_output: Callable[[str, str], None],
                    marks: RunMarks | None = None,
                    sweep: SweepFunction | None = None) -> NodeProcess:
        """Sweep stale nodes, start the guard and through it the node.

        Returns once the guard reported `started` (then `pid` is set) or the
        start failed (then `wait()` returns a NodeExit with `spawn_error` and
        returncode 127; this includes a guard that cannot be executed or says
        nothing within START_TIMEOUT, and a stale-node sweep that did not finish
        within `marks.sweep_timeout` or was not clean: then no node is started).
        `kill_deadline` (absolute, `supervisor.clock`) is in force from the first
        instant; a deadline already past means the node is not started. `on_output(stream, line)`
        gets each node output line ("stdout" / "stderr") without the newline; it
        must not block. `marks` (default: no cgroup, a key from machine_name and
        the working directory) says how the run is fenced; `sweep` replaces the
        stale-node sweep (tests).
        """
        if marks is None:
            marks = RunMarks(key=node_key("", machine_name, node.working_directory))
        run_cgroup, problem = await prepare_run(marks, sweep)
        if problem is not None:
            return cls(None, problem)
        spec = guardproto.spec_line(
            list(node.command), node.working_directory,
            node_environment(node, epoch=epoch, machine_name=machine_name, key=marks.key),
            kill_deadline, run_cgroup)
        try:
            guard, (out_r, err_r, status_r) = spawn_guard()
        except (OSError, subprocess.SubprocessError) as exc:
            if run_cgroup is not None:
                with contextlib.suppress(OSError):
                    cgroups.remove(run_cgroup)
            return cls(None, f"cannot start the guard: {exc}")
        self = cls(guard, None, cgroup=run_cgroup, ack_timeout=marks.ack_timeout,
                   deadline=kill_deadline, marks=marks)
        try:
            await self._connect(guard, out_r, err_r, status_r, on_output)
            self._write(spec)
            self._result = asyncio.create_task(self._supervise(guard))
            await asyncio.wait_for(asyncio.shield(self._first_report), START_TIMEOUT)
        except TimeoutError:
            self._spawn_error = f"guard did not report within {START_TIMEOUT:.0f} s"
            log.error("guard pid=%s silent; killing it", guard.pid)
            guardfence.kill_guard(self._guard)
        except BaseException:
            # Cancelled (or failed) half way: EOF on its stdin makes the guard
            # SIGKILL the node and exit; the supervising task, if any, reaps it.
            self._abort(guard)
            raise
        return self

    async def _connect(self, guard: subprocess.Popen[bytes], out_r: int, err_r: int,
                       status_r: int, on_output: Callable[[str, str], None]) -> None:
        """Attach the output relays, the status reader and the command writer."""
        loop = self._loop
        files = {fd: os.fdopen(fd, "rb", buffering=0) for fd in (out_r, err_r, status_r)}
        try:
            for fd, name in ((out_r, "stdout"), (err_r, "stderr")):
                transport, proto = await loop.connect_read_pipe(
                    functools.partial(LineRelay, functools.partial(on_output, name)),
                    files.pop(fd))
                self._relays.append((transport, proto))
            self._status_transport, _ = await loop.connect_read_pipe(
                functools.partial(LineRelay, self._on_status_line, self._status_eof),
                files.pop(status_r))
            assert guard.stdin is not None
            self._transport, self._commands = await loop.connect_write_pipe(
                GuardCommands, guard.stdin)
        finally:
            for f in files.values():
                f.close()

    def _abort(self, guard: subprocess.Popen[bytes]) -> None:
        if self._transport is not None:
            self._transport.close()
        elif guard.stdin is not None:
            with contextlib.suppress(OSError):
                guard.stdin.close()
        if isinstance(self._result, asyncio.Task):
            return
        self._close_pipes()
        task = self._loop.create_task(self._reap_aborted(guard))  # the guard exits on EOF
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)

    async def _reap_aborted(self, guard: subprocess.Popen[bytes]) -> None:
        await reap_child(guard)
        await self._last_process_gone()

    def _close_pipes(self) -> None:
        if self._transport is not None:
            self._transport.close()
        if self._status_transport is not None:
            self._status_transport.close()
        for transport, _ in self._relays:
            transport.close()

    # -- status events --------------------------------------------------------
    def _on_status_line(self, line: str) -> None:
        if not line:
            return
        try:
            event = guardproto.read_event(line)
        except ValueError:
            log.error("unparseable guard status line: %r", line[:200])
            return
        kind = event["event"]
        if kind == guardproto.ACK:
            self._acks.acked(int(event.get("seq", 0)))
            return
        if kind == guardproto.STARTED:
            self.pid = int(event["pid"])
            self._pgid = int(event.get("pgid", self.pid))
            self._started_at = time.monotonic()
            try:
                self._node_pidfd = os.pidfd_open(self.pid)
            except ProcessLookupError:
                self._leader_reaped = True
            except OSError:
                self._node_pidfd = None
            self._arm_deadline()
        elif kind == guardproto.SPAWN_FAILED:
            self._spawn_error = str(event.get("error"))
        elif kind == guardproto.EXITED:
            self._exited_event = event
            self._cancel_timers()
        if not self._first_report.done():
            self._first_report.set_result(None)

    def _status_eof(self) -> None:
        if not self._status_closed.done():
            self._status_closed.set_result(None)
        if not self._first_report.done():
            self._first_report.set_result(None)

    # -- commands ---------------------------------------------------------------
    def _write(self, data: bytes) -> bool:
        if (self._transport is None or self._commands is None or self._commands.lost
                or self._transport.is_closing()):
            return False
        try:
            self._transport.write(data)
        except (OSError, RuntimeError):
            return False
        return True

    def _command(self, line: str) -> None:
        """Send one command line to the guard and expect its ack within ack_timeout."""
        if self._exit_known() or not self._write(line.encode() + b"\n"):
            return
        self._acks.sent()

    def set_deadline(self, deadline: float | None) -> None:
        """Set (absolute, `supervisor.clock`) or clear the kill deadline; both fences
        enforce it."""
        if self._exit_known():
            return
        self._deadline = deadline
        self._arm_deadline()
        self._command(guardproto.deadline_command(deadline))

    def stop(self, grace: float) -> None:
        """Through the guard: SIGTERM the node's group now, SIGKILL it after `grace` s
        (or at the deadline)."""
        self._command(guardproto.stop_command(grace))

    def kill(self) -> None:
        """SIGKILL the node now, ourselves (pidfd, process group, cgroup) and through
        the guard; if the guard does not report the exit within KILL_CONFIRM_TIMEOUT,
        SIGKILL the guard too."""
        self._fence("kill")

    @property
    def running(self) -> bool:
        """True from `started` until the node's exit has been observed."""
        return (self.pid is not None and self._exited_event is None
                and not self._status_closed.done())

    async def wait(self) -> NodeExit:
        """The node's exit (see NodeExit). Safe to call many times / concurrently."""
        return await asyncio.shield(self._result)

    # -- the second line of defence---------------------------------------------------
    def _exit_known(self) -> bool:
        return (self._exited_event is not None or self._status_closed.done()
                or self._result.done())

    def _guard_stalled(self, seq: int, waited: float) -> None:
        """The guard left command `seq` unacknowledged for `waited` s (see `AckWatch`)."""
        flog.error("guard_stalled", guard_pid=self.guard_pid, node_pid=self.pid, seq=seq,
                   waited=round(waited, 3),
                   message="the guard did not acknowledge a command; killing the node and "
                           "the guard")
        self._fence("guard_stalled", kill_guard=True)

    def _arm_deadline(self) -> None:
        old = self._timers.pop("deadline", None)
        if old is not None:
            old.cancel()
        if self._deadline is None or self.pid is None or self._exit_known():
            return
        # on the deadline's clock (CLOCK_BOOTTIME), looked at again at least every
        # MAX_WAIT: the loop's timers run on CLOCK_MONOTONIC, which a suspend stops
        delay = min(max(0.0, self._deadline - clock.now()), clock.MAX_WAIT)
        self._timers["deadline"] = self._loop.call_later(delay, self._deadline_passed)

    def _deadline_passed(self) -> None:
        self._timers.pop("deadline", None)
        if self._deadline is not None and clock.now() < self._deadline:
            self._arm_deadline()  # not yet (a capped wait, or clock resolution)
        elif self._deadline is not None:
            self._fence("deadline")

    def _fence(self, cause: str, *, kill_guard: bool = False) -> None:
        """Kill the node ourselves; then make sure the guard reports or is gone."""
        if self.pid is None:  # not started (yet): only the guard can act
            if not self._exit_known():
                self._command(guardproto.KILL)
            return
        if self._exited_event is not None or self._result.done():
            return
        if self._fence_cause is None:
            self._fence_cause = cause
        self._kill_node()
        if self._status_closed.done():  # the guard is gone: the orphan path finishes
            return
        if kill_guard:
            self._orphan_cause = cause
            guardfence.kill_guard(self._guard)
            return
        self._command(guardproto.KILL)
        if "confirm" not in self._timers:
            self._timers["confirm"] = self._loop.call_later(KILL_CONFIRM_TIMEOUT,
                                                            self._kill_unconfirmed)

    def _kill_unconfirmed(self) -> None:
        self._timers.pop("confirm", None)
        if self._exited_event is not None or self._result.done():
            return
        flog.error("guard_unresponsive", guard_pid=self.guard_pid, node_pid=self.pid,
                   cause=self._fence_cause, waited=KILL_CONFIRM_TIMEOUT,
                   message="the guard did not report the killed node's exit; killing it")
        self._orphan_cause = self._fence_cause
        guardfence.kill_guard(self._guard)

    def _kill_node(self) -> None:
        """SIGKILL the node: its leader by pidfd, its process group while the unreaped
        leader still reserves the group id, its cgroup."""
        assert self.pid is not None
        self._leader_reaped = guardfence.kill_run(self.pid, self._node_pidfd, self._pgid,
                                                  self._leader_reaped, self.cgroup)

    def _cancel_timers(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()

    async def _last_process_gone(self) -> None:
        """Return once no process of this run is left: its cgroup killed until empty
        and removed, or, without one, a round of the marker sweep clean (see
        `supervisor.node.sweep`). Never gives up (it logs while processes remain)."""
        if self.cgroup is not None:
            await release_cgroup(self.cgroup, CGROUP_EMPTY_TIMEOUT)
        elif self._marks_of_run is not None:
            marks = self._marks_of_run
            await sweep_until_clean(marks.key, marker_sweep(marks.key), marks.sweep_timeout)

    # -- the supervising task ------------------------------------------------------
    async def _supervise(self, guard: subprocess.Popen[bytes]) -> NodeExit:
        try:
            result = await self._supervise_inner(guard)
            await self._last_process_gone()  # before the exit is reported
            await self._drain_output()
            return result
        finally:
            self._cancel_timers()
            self._close_pipes()
            if self._node_pidfd is not None:
                os.close(self._node_pidfd)
                self._node_pidfd = None

    async def _supervise_inner(self, guard: subprocess.Popen[bytes]) -> NodeExit:
        # The guard reports `exited` and exits; or it dies (status EOF without `exited`).
        reaped = asyncio.create_task(reap_child(guard))
        status_eof = self._status_closed
        either: list[asyncio.Future[Any]] = [reaped, status_eof]
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if not status_eof.done():
            # The status fd is never inherited by the node, so EOF follows the
            # guard's exit at once; bound it anyway.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(status_eof), 1.0)
        if not reaped.done():
            try:
                await asyncio.wait_for(asyncio.shield(reaped), GUARD_EXIT_TIMEOUT)
            except TimeoutError:
                log.error("guard pid=%s did not exit; killing it", guard.pid)
                guardfence.kill_guard(self._guard)
                await reaped
        guard_rc = reaped.result()
        self._status_eof()

        if self._exited_event is not None:
            ev = self._exited_event
            return NodeExit(pid=int(ev["pid"]), returncode=ev.get("returncode"),
                            signal=ev.get("signal"), runtime=float(ev.get("runtime", 0.0)),
                            killed_by=ev.get("killed_by") or self._fence_cause)
        if self.pid is None:
            error = (self._spawn_error
                     or f"guard exited with status {guard_rc} before the node started")
            return NodeExit(pid=None, returncode=SPAWN_FAILED_RETURNCODE, signal=None,
                            runtime=0.0, killed_by=None, spawn_error=error)
        return await self._orphaned(guard_rc)

    async def _orphaned(self, guard_rc: int) -> NodeExit:
        """The guard vanished after starting the node: make sure the node is dead."""
        assert self.pid is not None
        if self._orphan_cause is None:
            log.error("guard pid=%s vanished (status %s) while node pid=%s ran; killing the "
                      "node", self.guard_pid, guard_rc, self.pid)
        self._kill_node()
        leader_alive = not await wait_pid_gone(self.pid, ORPHAN_DEATH_TIMEOUT,
                                                pidfd=self._node_pidfd)
        if leader_alive:
            log.error("node pid=%s still alive %s s after SIGKILL", self.pid, ORPHAN_DEATH_TIMEOUT)
        return NodeExit(pid=self.pid, returncode=None, signal=int(signal.SIGKILL),
                        runtime=time.monotonic() - self._started_at,
                        killed_by=self._orphan_cause or "guard_gone")

    async def _drain_output(self) -> None:
        """Give the output relays a moment to deliver the last lines (pipe EOF)."""
        pending = [r.closed for _, r in self._relays if not r.closed.done()]
        if pending:
            await asyncio.wait(pending, timeout=OUTPUT_DRAIN_TIMEOUT)
