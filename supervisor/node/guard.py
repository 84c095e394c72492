"""The fencing guard: `python -m supervisor.node.guard --status-fd N`.

A tiny single-threaded process (stdlib only) that owns the node process and
enforces its kill deadline even when the supervisor is hung, frozen or dead.

Contract
--------
The supervisor starts the guard in its own session (``start_new_session=True``)
with a pipe on the guard's stdin, the node's stdout/stderr pipes as the guard's
stdout/stderr, and a status pipe whose write end is passed as ``--status-fd``.

stdin, line based (UTF-8):

* line 1: a JSON object ``{"command": [...], "cwd": str, "env": {...},
  "deadline": float | null, "cgroup": str | null}`` (optional ``"pidfd": false``
  forces the 20 ms polling fallback; for tests). The environment travels here,
  never on argv (``ps`` shows argv). ``deadline`` is an absolute
  ``supervisor.clock.now()`` (CLOCK_BOOTTIME); if it has already passed the
  node is not started at all (``spawn_failed``). ``cgroup`` (optional) is the
  directory of an existing, empty cgroup v2: the node is moved into it between
  fork and exec, so the node and every descendant (wrapper children, ``setsid``
  children) are in it from the node's first instruction; failing to move it is a ``spawn_failed``.
* then commands, one per line:
  ``deadline <float>`` (absolute seconds on that clock; SIGKILL the node when it
  passes), ``deadline none`` (clear it), ``stop <grace>`` (SIGTERM the node's
  process group now, SIGKILL the node after ``grace`` seconds or at the
  deadline, whichever comes first; a later ``stop`` can only shorten the
  grace), ``kill`` (SIGKILL the node now). Unknown lines are reported on
  stderr and ignored.
* EOF (the supervisor exited or was SIGKILLed): SIGKILL the node at once.

"SIGKILL the node" means, on every path of the guard (deadline, stop
escalation, ``kill``, EOF, SIGTERM, an internal error, the clean-up after the
leader exited): SIGKILL its process group *and* ``cgroup.kill`` its cgroup
(when it has one); the process group stays as the fallback.

status fd, JSON lines, in this order:

* ``{"event": "started", "pid": int, "pgid": int}`` or
  ``{"event": "spawn_failed", "error": str}`` (terminal: nothing follows);
* after ``started``, for every command line once it has been applied (or
  ignored), in order: ``{"event": "ack", "seq": n}`` where ``n`` counts the
  lines after the spec from 1 (blank and unknown lines count too; an ignored
  line's ack carries ``"error": str``). The supervisor uses these to tell a
  stalled guard: it kills the node itself when they stop coming. Commands that
  arrive after the leader exited are never acknowledged;
* after ``started``, exactly one ``{"event": "exited", "pid": int,
  "returncode": int | null, "signal": int | null, "runtime": float,
  "killed_by": str | null, "signalled_at": float | null}`` once the node's
  leader has been reaped, then the guard exits 0. ``runtime`` runs from just
  before the spawn to the moment the guard saw the leader exit.
  ``signalled_at`` is the time (that clock) of that last signal (for measuring
  deadline accuracy). ``killed_by`` is the cause of the last signal the guard sent
  before the leader exited: ``"deadline"``, ``"stop"``, ``"kill"``,
  ``"supervisor_gone"`` (stdin EOF), ``"guard_terminated"`` (SIGTERM to the
  guard), ``"guard_error"`` (an unexpected error inside the guard), or null
  when the node exited on its own.

The guard's own warnings go to its stderr, i.e. into the node's stderr stream,
prefixed ``corda-ha guard[<pid>]:``.

Signals: SIGINT and SIGHUP are ignored (the guard is controlled through its
pipe only). SIGTERM to the guard is treated like EOF: SIGKILL the node group,
report, exit. If the guard dies anyway, the node leader gets SIGKILL from
``PR_SET_PDEATHSIG`` (its descendants do not: the supervisor kills the cgroup,
and the next start's stale-node sweep finds leftovers). Whenever the guard
leaves ``run()`` by any path while the node is unreaped, it SIGKILLs the node
first. The supervisor removes the cgroup after the run; only after EOF on stdin
(the supervisor is gone) does the guard remove it itself, best effort.

When the node's leader exits, the guard notices it without reaping (pidfd /
``waitid(WNOWAIT)``), SIGKILLs the rest of the process group while the group
id is still reserved by the zombie leader, and the rest of the cgroup, then
reaps the leader and reports.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import math
import os
import select
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from supervisor import clock
from supervisor.node import cgroup as cgroups
from supervisor.node import guardproto

PR_SET_PDEATHSIG = 1
_POLL_FALLBACK_S = 0.02
# a poll timeout runs on CLOCK_MONOTONIC, which a suspend stops: look at the
# deadline's clock again at least this often
_MAX_WAIT_MS = clock.MAX_WAIT * 1000


def _preexec(parent_pid: int, cgroup: str | None) -> Callable[[], None]:
    """Return a preexec_fn for the node: into `cgroup` (if any), default signal
    dispositions, PDEATHSIG=SIGKILL.

    Safe only because the guard is single-threaded. If the guard already died
    between fork and prctl, the child kills itself.
    """
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        if cgroup is not None:
            try:
                cgroups.move(cgroup)
            except OSError as exc:
                Guard.warn(f"cannot move the node into cgroup {cgroup}: {exc}")
                raise
        for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


class Guard:
    """Runs one node and enforces its deadline. Use `run()` once."""

    def __init__(self, status_fd: int) -> None:
        self.status_fd = status_fd
        self.pid: int | None = None
        self.cgroup: str | None = None
        self.seq = 0  # command lines received so far (the `ack` sequence number)
        self.deadline: float | None = None
        self.stop_kill_at: float | None = None
        self.term_sent = False
        self.kill_sent = False
        self.killed_by: str | None = None
        self.signalled_at: float | None = None
        self.stdin_open = True
        self.reaped = False
        self._inbuf = b""

    # -- output -------------------------------------------------------------
    def emit(self, **event: Any) -> None:
        """Write one JSON line to the status fd; a gone supervisor is ignored."""
        data = guardproto.event_line(**event)
        try:
            while data:
                n = os.write(self.status_fd, data)
                data = data[n:]
        except OSError:
            pass

    @staticmethod
    def warn(message: str) -> None:
        with contextlib.suppress(OSError):
            os.write(2, f"corda-ha guard[{os.getpid()}]: {message}\n".encode(errors="replace"))

    # -- signalling ---------------------------------------------------------
    def signal_group(self, sig: int, cause: str | None) -> None:
        """Signal the node's whole process group (pgid == pid); for SIGKILL also
        kill its cgroup. Records `cause`."""
        if self.pid is None or self.reaped:
            return
        if cause is not None:
            self.killed_by = cause
            self.signalled_at = clock.now()
        if sig == signal.SIGKILL:
            self.kill_sent = True
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass
        except OSError as exc:  # EPERM: a member changed uid; still kill the leader
            self.warn(f"killpg({self.pid}, {sig}) failed: {exc}")
            with contextlib.suppress(OSError):
                os.kill(self.pid, sig)
        if sig == signal.SIGKILL and self.cgroup is not None:
            try:
                cgroups.kill(self.cgroup)
            except OSError as exc:
                self.warn(f"cgroup.kill of {self.cgroup} failed: {exc}")

    def kill_at(self) -> float | None:
        """The time (`supervisor.clock`) at which the group must be SIGKILLed, if any."""
        if self.kill_sent:
            return None
        times = [t for t in (self.deadline, self.stop_kill_at) if t is not None]
        return min(times) if times else None

    def check_timers(self) -> None:
        at = self.kill_at()
        if at is not None and clock.now() >= at:
            cause = "deadline"
            if self.stop_kill_at is not None and (self.deadline is None
                                                  or self.stop_kill_at < self.deadline):
                cause = "stop"
            self.signal_group(signal.SIGKILL, cause)

    # -- commands -------------------------------------------------------------
    def command(self, line: str) -> str | None:
        """Apply one protocol line (see module docstring); the reason it was ignored."""
        self.check_timers()  # a deadline that has passed counts before any command
        try:
            cmd = guardproto.parse_command(line)
        except ValueError as exc:
            self.warn(f"ignoring command {line!r}: {exc}")
            return str(exc)
        if cmd is None:
            return None
        if cmd.kind == "deadline":
            self.deadline = cmd.value
        elif cmd.kind == "stop":
            assert cmd.value is not None
            if math.isfinite(cmd.value):  # "stop inf": SIGTERM only, no kill timer
                at = clock.now() + cmd.value
                if self.stop_kill_at is None or at < self.stop_kill_at:
                    self.stop_kill_at = at
            if not self.term_sent and not self.kill_sent:
                self.term_sent = True
                self.signal_group(signal.SIGTERM, "stop")
        elif not self.kill_sent:  # kill
            self.signal_group(signal.SIGKILL, "kill")
        self.check_timers()
        return None

    def read_stdin(self) -> None:
        """Read what is available on stdin; EOF means the supervisor is gone."""
        try:
            data = os.read(0, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.stdin_open = False  # the caller stops polling fd 0
            if not self.kill_sent:
                self.signal_group(signal.SIGKILL, "supervisor_gone")
            return
        self._inbuf += data
        self.read_buffered()

    def read_buffered(self) -> None:
        """Apply every complete line in the input buffer."""
        *lines, self._inbuf = self._inbuf.split(b"\n")
        for raw in lines:
            self.seq += 1
            error = self.command(raw.decode(errors="replace"))
            if error is None:
                self.emit(event=guardproto.ACK, seq=self.seq)
            else:
                self.emit(event=guardproto.ACK, seq=self.seq, error=error)

    # -- lifecycle ------------------------------------------------------------
    def spawn(self, spec: Mapping[str, Any]) -> bool:
        """Start the node; emits `started` or `spawn_failed`. True when started."""
        try:
            command = [str(a) for a in spec["command"]]
            cwd = str(spec["cwd"])
            env = {str(k): str(v) for k, v in spec["env"].items()}
            deadline = spec.get("deadline")
            self.deadline = None if deadline is None else float(deadline)
            cgroup = spec.get("cgroup")
            self.cgroup = None if cgroup is None else str(cgroup)
            if not command:
                raise ValueError("empty command")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            self.emit(event=guardproto.SPAWN_FAILED, error=f"bad guard spec: {exc!r}")
            return False
        if self.deadline is not None and clock.now() >= self.deadline:
            self.emit(event=guardproto.SPAWN_FAILED,
                      error="kill deadline passed before the node started")
            return False
        try:
            proc = subprocess.Popen(
                command, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=_preexec(os.getpid(), self.cgroup),
            )
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            if self.cgroup is not None and isinstance(exc, subprocess.SubprocessError):
                error += f" (moving the node into cgroup {self.cgroup} failed?)"
            self.emit(event=guardproto.SPAWN_FAILED, error=error)
            return False
        # We reap with os.waitpid ourselves; keep Popen from trying later.
        proc.returncode = 0
        self.pid = proc.pid
        self.emit(event=guardproto.STARTED, pid=proc.pid, pgid=proc.pid)
        return True

    def remove_cgroup(self) -> None:
        """Best effort: wait (at most 1 s) until the killed cgroup is empty, rmdir it."""
        assert self.cgroup is not None
        with contextlib.suppress(OSError):
            if cgroups.wait_empty(self.cgroup, 1.0):
                cgroups.remove(self.cgroup)

    def leader_exited(self) -> bool:
        """True when the leader is a zombie (not reaped yet: the pgid stays reserved)."""
        assert self.pid is not None
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return info is not None

    def reap(self) -> tuple[int | None, int | None]:
        """Reap the leader; (returncode, signal)."""
        assert self.pid is not None
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            self.reaped = True
            return None, None
        self.reaped = True
        if os.WIFSIGNALED(status):
            return None, os.WTERMSIG(status)
        return os.WEXITSTATUS(status), None

    def watch(self, wakeup_fd: int, terminated: Callable[[], bool], pidfd: int | None) -> None:
        """Until the node's leader exits: apply stdin commands, fire the kill timers,
        SIGKILL the group once the guard is terminated. Woken by stdin, the node's
        pidfd (without one: every 20 ms) and `wakeup_fd` (signals)."""
        poller = select.poll()
        poller.register(wakeup_fd, select.POLLIN)
        if pidfd is not None:
            poller.register(pidfd, select.POLLIN)
        if self.stdin_open:
            poller.register(0, select.POLLIN)
        while True:
            if terminated() and not self.kill_sent:
                self.signal_group(signal.SIGKILL, "guard_terminated")
            self.check_timers()
            if self.leader_exited():
                return
            at = self.kill_at()
            timeout_ms: float | None = None
            if at is not None:  # capped: the loop re-reads the clock
                timeout_ms = min(_MAX_WAIT_MS,
                                 max(0.0, math.ceil((at - clock.now()) * 1000)))
            if pidfd is None:  # no pidfd: poll waitid(WNOWAIT) every 20 ms
                fallback = _POLL_FALLBACK_S * 1000
                timeout_ms = fallback if timeout_ms is None else min(timeout_ms, fallback)
            for fd, _ in poller.poll(timeout_ms):
                if fd == 0:
                    self.read_stdin()
                    if not self.stdin_open:
                        poller.unregister(0)
                elif fd == wakeup_fd:
                    with contextlib.suppress(OSError):
                        os.read(wakeup_fd, 512)

    def run(self, spec: Mapping[str, Any], wakeup_fd: int, terminated: Callable[[], bool],
            pending: bytes = b"") -> int:
        """Spawn the node, supervise it, report, return the guard's exit status.

        `pending` holds stdin bytes read together with the spec; they are applied
        as commands right after the node has started.
        """
        os.set_blocking(0, False)
        start = clock.now()
        if not self.spawn(spec):
            return 0
        assert self.pid is not None
        pidfd: int | None = None
        reported = False
        returncode: int | None = None
        sig: int | None = None
        try:
            self._inbuf = pending
            self.read_buffered()
            if spec.get("pidfd", True):
                with contextlib.suppress(AttributeError, OSError):
                    pidfd = os.pidfd_open(self.pid)
            self.watch(wakeup_fd, terminated, pidfd)
            runtime = clock.now() - start
            # The zombie leader keeps the pgid reserved: take the rest of the group down.
            self.signal_group(signal.SIGKILL, None)
            returncode, sig = self.reap()
            self.emit(event=guardproto.EXITED, pid=self.pid, returncode=returncode, signal=sig,
                      runtime=round(runtime, 6), killed_by=self.killed_by,
                      signalled_at=self.signalled_at)
            reported = True
            return 0
        finally:
            if not self.reaped:
                self.signal_group(signal.SIGKILL, "guard_error")
                returncode, sig = self.reap()
            if not reported:  # an unexpected error in the guard: still report the exit
                self.emit(event=guardproto.EXITED, pid=self.pid, returncode=returncode, signal=sig,
                          runtime=round(clock.now() - start, 6),
                          killed_by=self.killed_by, signalled_at=self.signalled_at)
            if pidfd is not None:
                os.close(pidfd)
            if not self.stdin_open and self.cgroup is not None:
                self.remove_cgroup()  # the supervisor is gone: nobody else will


def _read_spec() -> dict[str, Any] | None:
    """Read the first stdin line (blocking). None on EOF before a full line."""
    buf = b""
    while b"\n" not in buf:
        chunk = os.read(0, 65536)
        if not chunk:
            return None
        buf += chunk
    line, rest = buf.split(b"\n", 1)
    spec = json.loads(line)
    if not isinstance(spec, dict):
        raise ValueError("spec must be a JSON object")
    spec["_rest"] = rest
    return spec


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; see the module docstring for the protocol."""
    parser = argparse.ArgumentParser(prog="python -m supervisor.node.guard")
    parser.add_argument("--status-fd", type=int, required=True)
    args = parser.parse_args(argv)

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    terminated = False

    def on_term(_sig: int, _frame: object) -> None:
        nonlocal terminated
        terminated = True

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    signal.signal(signal.SIGTERM, on_term)

    guard = Guard(args.status_fd)
    try:
        spec = _read_spec()
    except (ValueError, OSError) as exc:
        guard.emit(event=guardproto.SPAWN_FAILED, error=f"bad guard spec: {exc!r}")
        return 0
    if spec is None or terminated:
        guard.emit(event=guardproto.SPAWN_FAILED,
                   error="supervisor went away before the node started")
        return 0
    pending: bytes = spec.pop("_rest")
    return guard.run(spec, wake_r, lambda: terminated, pending)


if __name__ == "__main__":
    sys.exit(main())
