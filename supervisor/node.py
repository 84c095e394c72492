"""The supervisor's handle on the node process (asyncio), through the fencing guard.

`NodeProcess.start()` sweeps stale nodes, starts ``python -m supervisor.guard``
(see `supervisor.guard` for the pipe protocol) and returns once the guard has
started the node or failed to. Nothing here ever blocks the event loop: guard
commands go through an asyncio write transport (buffered, never blocking; a
dead guard is ignored), node output and guard events are read by asyncio
protocols, the stale-node sweep runs in a worker thread.

The guard, not this module, enforces the kill deadline, so the node dies on
time even if this process is frozen or killed.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import functools
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from supervisor.config import NodeConfig

log = logging.getLogger(__name__)

#: Node output lines longer than this are relayed in chunks of this many bytes.
MAX_LINE_BYTES = 64 * 1024
#: How long `start()` waits for the guard to report `started` / `spawn_failed`.
START_TIMEOUT = 10.0
#: After the node's exit, how long to wait for the guard to exit before SIGKILLing it.
GUARD_EXIT_TIMEOUT = 5.0
#: After the node's exit, how long to wait for the rest of its output (pipe EOF).
OUTPUT_DRAIN_TIMEOUT = 0.5
#: When the guard vanished, how long to wait for the orphaned node to die.
ORPHAN_DEATH_TIMEOUT = 5.0

REMOVED_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
SPAWN_FAILED_RETURNCODE = 127

_BACKGROUND: set[asyncio.Task[Any]] = set()  # strong references to fire-and-forget tasks


@dataclass(frozen=True)
class NodeExit:
    """How a node run ended.

    `returncode` is the exit status when the node exited normally, `signal` the
    signal number when it was killed by one (one of the two is None).
    `killed_by` is why the guard signalled it: "deadline", "stop", "kill",
    "supervisor_gone", "guard_terminated", "guard_error", "guard_gone" (the guard itself
    vanished; the node was then killed by PDEATHSIG and by us), or None when
    the node exited on its own. On spawn failure `pid` is None, `returncode`
    is 127 and `spawn_error` says why.
    """

    pid: int | None
    returncode: int | None
    signal: int | None
    runtime: float
    killed_by: str | None
    spawn_error: str | None = None


def node_environment(node: NodeConfig, *, epoch: int | None, machine_name: str,
                     base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The node's environment: `base` (default os.environ) + node.environment +
    CORDA_HA_EPOCH (if epoch is not None) + CORDA_HA_MACHINE_NAME, minus the
    systemd notify/watchdog variables."""
    env = dict(os.environ if base is None else base)
    env.update(node.environment)
    env.pop("CORDA_HA_EPOCH", None)
    if epoch is not None:
        env["CORDA_HA_EPOCH"] = str(epoch)
    env["CORDA_HA_MACHINE_NAME"] = machine_name
    for name in REMOVED_ENV:
        env.pop(name, None)
    return env


def sweep_stale_nodes(command: Sequence[str], working_directory: str,
                      timeout: float = 5.0) -> list[int]:
    """Kill processes left from an earlier run: same cmdline and cwd as our node.

    Never touches this process or its descendants. Each match gets SIGKILL on
    its process group (unless that is our own group) or else on itself; then
    waits up to `timeout` for them to go. Blocking: call it in a thread.
    Returns the pids it signalled.
    """
    wanted = list(command)
    cwd_wanted = os.path.realpath(working_directory)
    me = psutil.Process()
    exclude = {me.pid} | {c.pid for c in me.children(recursive=True)}
    own_pgrp = os.getpgrp()
    victims: list[psutil.Process] = []
    for proc in psutil.process_iter(["pid", "cmdline", "cwd"], ad_value=None):
        info = proc.info
        if info["pid"] in exclude or info["cmdline"] != wanted or info["cwd"] is None:
            continue
        if os.path.realpath(info["cwd"]) != cwd_wanted:
            continue
        victims.append(proc)
    killed: list[int] = []
    for proc in victims:
        try:
            pgid = os.getpgid(proc.pid)
            if pgid != own_pgrp:
                os.killpg(pgid, signal.SIGKILL)
            else:
                os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        except PermissionError as exc:
            log.error("stale node pid=%s could not be killed: %s", proc.pid, exc)
            continue
        log.warning("killed stale node pid=%s cmdline=%s cwd=%s", proc.pid, wanted, cwd_wanted)
        killed.append(proc.pid)
    alive = [p for p in victims if p.pid in killed]
    end = time.monotonic() + timeout
    while alive:
        alive = [p for p in alive if _running(p)]
        if alive and time.monotonic() >= end:
            for proc in alive:
                log.error("stale node pid=%s still alive %.0f s after SIGKILL", proc.pid, timeout)
            break
        if alive:
            time.sleep(0.01)
    return killed


def _running(proc: psutil.Process) -> bool:
    """Alive and not a zombie (a zombie is dead; its reaper may not be us)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class _LineRelay(asyncio.Protocol):
    """Splits a byte stream into lines (chunks of at most MAX_LINE_BYTES) and decodes them."""

    def __init__(self, on_line: Callable[[str], None],
                 on_close: Callable[[], None] | None = None) -> None:
        self._on_line = on_line
        self._on_close = on_close
        self._buf = bytearray()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def _emit(self, raw: bytes, final: bool) -> None:
        text = self._decoder.decode(raw, final=final)
        if raw.endswith(b"\n"):
            text = text[:-1]
            if text.endswith("\r"):
                text = text[:-1]
        try:
            self._on_line(text)
        except Exception:
            log.exception("output callback failed")

    def data_received(self, data: bytes) -> None:
        self._buf += data
        while True:
            nl = self._buf.find(b"\n", 0, MAX_LINE_BYTES)
            if nl >= 0:
                raw = bytes(self._buf[:nl + 1])
                del self._buf[:nl + 1]
                self._emit(raw, final=True)
            elif len(self._buf) >= MAX_LINE_BYTES:
                raw = bytes(self._buf[:MAX_LINE_BYTES])
                del self._buf[:MAX_LINE_BYTES]
                self._emit(raw, final=False)  # the decoder carries a split character over
            else:
                return

    def connection_lost(self, exc: Exception | None) -> None:
        if self._buf:
            self._emit(bytes(self._buf), final=True)
            self._buf.clear()
        if not self.closed.done():
            self.closed.set_result(None)
        if self._on_close is not None:
            self._on_close()


class _GuardCommands(asyncio.Protocol):
    """The write side of the guard's stdin; loss (guard gone) is simply recorded."""

    def __init__(self) -> None:
        self.lost = False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


async def _wait_pid_gone(pid: int, timeout: float, *, pidfd: int | None = None) -> bool:
    """Wait (without blocking the loop) until `pid` has exited; True if it did in time.

    Works for processes that are not our children (a zombie counts as gone).
    """
    loop = asyncio.get_running_loop()
    own_fd = False
    if pidfd is None:
        try:
            pidfd = os.pidfd_open(pid)
            own_fd = True
        except ProcessLookupError:
            return True
        except OSError:
            pidfd = None
    if pidfd is not None:
        done: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not done.done():
                done.set_result(None)

        loop.add_reader(pidfd, readable)
        try:
            await asyncio.wait_for(done, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            loop.remove_reader(pidfd)
            if own_fd:
                os.close(pidfd)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        await asyncio.sleep(0.02)
    return False


async def _reap_child(proc: subprocess.Popen[bytes]) -> int:
    """Wait for our child `proc` to exit and reap it, without blocking the loop."""
    while proc.poll() is None:
        await _wait_pid_gone(proc.pid, 1.0)
    return proc.returncode


class NodeProcess:
    """One run of the node under its guard. Create with `NodeProcess.start()`.

    `pid` is the node's pid (None if it never started), `guard_pid` the guard's.
    `set_deadline`, `stop` and `kill` are non-blocking requests to the guard;
    after the node has exited they do nothing. `wait()` returns the `NodeExit`
    once the node is gone and the guard has reported (or vanished); it never
    hangs on a dead or stuck guard.
    """

    def __init__(self, guard: subprocess.Popen[bytes] | None, spawn_error: str | None) -> None:
        """Internal: use `start()`."""
        self._loop = asyncio.get_running_loop()
        self._started_at = time.monotonic()
        self.pid: int | None = None
        self.guard_pid: int | None = None if guard is None else guard.pid
        self._pgid: int | None = None
        self._node_pidfd: int | None = None
        self._spawn_error = spawn_error
        self._exited_event: dict[str, Any] | None = None
        self._first_report: asyncio.Future[None] = self._loop.create_future()
        self._status_closed: asyncio.Future[None] = self._loop.create_future()
        self._transport: asyncio.WriteTransport | None = None
        self._commands: _GuardCommands | None = None
        self._relays: list[tuple[asyncio.ReadTransport, _LineRelay]] = []
        self._status_transport: asyncio.ReadTransport | None = None
        self._result: asyncio.Future[NodeExit] = self._loop.create_future()
        if guard is None:
            self._result.set_result(NodeExit(
                pid=None, returncode=SPAWN_FAILED_RETURNCODE, signal=None, runtime=0.0,
                killed_by=None, spawn_error=spawn_error))

    # -- construction ---------------------------------------------------------
    @classmethod
    async def start(cls, node: NodeConfig, *, epoch: int | None, machine_name: str,
                    kill_deadline: float | None,
                    on_output: Callable[[str, str], None]) -> NodeProcess:
        """Sweep stale nodes, start the guard and through it the node.

        Returns once the guard reported `started` (then `pid` is set) or the
        start failed (then `wait()` returns a NodeExit with `spawn_error` and
        returncode 127; this includes a guard that cannot be executed or says
        nothing within START_TIMEOUT). `kill_deadline` (absolute monotonic) is
        in force from the first instant; a deadline already past means the node
        is not started. `on_output(stream, line)` gets each node output line
        ("stdout" / "stderr") without the newline; it must not block.
        """
        await asyncio.to_thread(sweep_stale_nodes, node.command, node.working_directory)
        spec = {
            "command": list(node.command),
            "cwd": node.working_directory,
            "env": node_environment(node, epoch=epoch, machine_name=machine_name),
            "deadline": kill_deadline,
        }
        status_r, status_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            guard = subprocess.Popen(
                [sys.executable, "-m", "supervisor.guard", "--status-fd", str(status_w)],
                stdin=subprocess.PIPE, stdout=out_w, stderr=err_w, pass_fds=(status_w,),
                start_new_session=True, cwd="/", env=_guard_environment(),
            )
        except (OSError, subprocess.SubprocessError) as exc:
            for fd in (status_r, out_r, err_r):
                os.close(fd)
            return cls(None, f"cannot start the guard: {exc}")
        finally:
            for fd in (status_w, out_w, err_w):
                os.close(fd)
        self = cls(guard, None)
        try:
            await self._connect(guard, out_r, err_r, status_r, on_output)
            self._write((json.dumps(spec) + "\n").encode())
            self._result = asyncio.create_task(self._supervise(guard))
            await asyncio.wait_for(asyncio.shield(self._first_report), START_TIMEOUT)
        except TimeoutError:
            self._spawn_error = f"guard did not report within {START_TIMEOUT:.0f} s"
            log.error("guard pid=%s silent; killing it", guard.pid)
            with contextlib.suppress(OSError):
                os.killpg(guard.pid, signal.SIGKILL)
        except BaseException:
            # Cancelled (or failed) half way: EOF on its stdin makes the guard
            # SIGKILL the node group and exit; the supervising task, if any, reaps it.
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
                    functools.partial(_LineRelay, functools.partial(on_output, name)),
                    files.pop(fd))
                self._relays.append((transport, proto))
            self._status_transport, _ = await loop.connect_read_pipe(
                functools.partial(_LineRelay, self._on_status_line, self._status_eof),
                files.pop(status_r))
            assert guard.stdin is not None
            self._transport, self._commands = await loop.connect_write_pipe(
                _GuardCommands, guard.stdin)
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
        task = self._loop.create_task(_reap_child(guard))  # the guard exits on EOF
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)

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
            event = json.loads(line)
            kind = event["event"]
        except (ValueError, KeyError, TypeError):
            log.error("unparseable guard status line: %r", line[:200])
            return
        if kind == "started":
            self.pid = int(event["pid"])
            self._pgid = int(event.get("pgid", self.pid))
            self._started_at = time.monotonic()
            try:
                self._node_pidfd = os.pidfd_open(self.pid)
            except OSError:
                self._node_pidfd = None
        elif kind == "spawn_failed":
            self._spawn_error = str(event.get("error"))
        elif kind == "exited":
            self._exited_event = event
        if not self._first_report.done():
            self._first_report.set_result(None)

    def _status_eof(self) -> None:
        if not self._status_closed.done():
            self._status_closed.set_result(None)
        if not self._first_report.done():
            self._first_report.set_result(None)

    # -- commands ---------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        if (self._transport is None or self._commands is None or self._commands.lost
                or self._transport.is_closing()):
            return
        with contextlib.suppress(OSError, RuntimeError):
            self._transport.write(data)

    def set_deadline(self, deadline: float | None) -> None:
        """Set (absolute monotonic) or clear the kill deadline the guard enforces."""
        self._write(b"deadline none\n" if deadline is None else f"deadline {deadline!r}\n".encode())

    def stop(self, grace: float) -> None:
        """SIGTERM the node's group now, SIGKILL it after `grace` s (or at the deadline)."""
        self._write(f"stop {max(0.0, grace)!r}\n".encode())

    def kill(self) -> None:
        """SIGKILL the node's whole process group now."""
        self._write(b"kill\n")

    @property
    def running(self) -> bool:
        """True from `started` until the node's exit has been observed."""
        return (self.pid is not None and self._exited_event is None
                and not self._status_closed.done())

    async def wait(self) -> NodeExit:
        """The node's exit (see NodeExit). Safe to call many times / concurrently."""
        return await asyncio.shield(self._result)

    # -- the supervising task ------------------------------------------------------
    async def _supervise(self, guard: subprocess.Popen[bytes]) -> NodeExit:
        try:
            return await self._supervise_inner(guard)
        finally:
            self._close_pipes()
            if self._node_pidfd is not None:
                os.close(self._node_pidfd)
                self._node_pidfd = None

    async def _supervise_inner(self, guard: subprocess.Popen[bytes]) -> NodeExit:
        # The guard reports `exited` and exits; or it dies (status EOF without `exited`).
        reaped = asyncio.create_task(_reap_child(guard))
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
                with contextlib.suppress(OSError):
                    os.killpg(guard.pid, signal.SIGKILL)
                await reaped
        guard_rc = reaped.result()
        self._status_eof()

        if self._exited_event is not None:
            ev = self._exited_event
            result = NodeExit(pid=int(ev["pid"]), returncode=ev.get("returncode"),
                              signal=ev.get("signal"), runtime=float(ev.get("runtime", 0.0)),
                              killed_by=ev.get("killed_by"))
        elif self.pid is None:
            error = (self._spawn_error
                     or f"guard exited with status {guard_rc} before the node started")
            result = NodeExit(pid=None, returncode=SPAWN_FAILED_RETURNCODE, signal=None,
                              runtime=0.0, killed_by=None, spawn_error=error)
        else:
            result = await self._orphaned(guard_rc)
        await self._drain_output()
        return result

    async def _orphaned(self, guard_rc: int) -> NodeExit:
        """The guard vanished after starting the node: make sure the node is dead."""
        assert self.pid is not None
        log.error("guard pid=%s vanished (status %s) while node pid=%s ran; killing the node",
                  self.guard_pid, guard_rc, self.pid)
        pidfd = self._node_pidfd
        if pidfd is not None:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        # The group id cannot be reused while any member (or the unreaped leader) lives.
        with contextlib.suppress(OSError):
            os.killpg(self._pgid or self.pid, signal.SIGKILL)
        leader_alive = not await _wait_pid_gone(self.pid, ORPHAN_DEATH_TIMEOUT, pidfd=pidfd)
        if leader_alive:
            log.error("node pid=%s still alive %s s after SIGKILL", self.pid, ORPHAN_DEATH_TIMEOUT)
        return NodeExit(pid=self.pid, returncode=None, signal=int(signal.SIGKILL),
                        runtime=time.monotonic() - self._started_at, killed_by="guard_gone")

    async def _drain_output(self) -> None:
        """Give the output relays a moment to deliver the last lines (pipe EOF)."""
        pending = [r.closed for _, r in self._relays if not r.closed.done()]
        if pending:
            await asyncio.wait(pending, timeout=OUTPUT_DRAIN_TIMEOUT)


def _guard_environment() -> dict[str, str]:
    """The guard's own environment: ours, able to import `supervisor`, no systemd notify."""
    env = dict(os.environ)
    for name in REMOVED_ENV:
        env.pop(name, None)
    package_parent = str(Path(__file__).resolve().parent.parent)
    paths = [package_parent, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env
