"""This process's fence of the guard, the second line of defence of `NodeProcess`
(see `supervisor.node.process`): the tools it uses when the guard may be frozen.

Owns `kill_run` (SIGKILL a node run directly: its leader by pidfd, its process group,
its cgroup), `kill_guard` and `AckWatch` (the guard acknowledges every command line; one left
unacknowledged for the ack timeout means the guard is stalled). What to do then (kill
the node and the guard, report the exit) stays with `NodeProcess`.

May import: the stdlib and `supervisor.node.cgroup`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable

from supervisor.node import cgroup as cgroups

log = logging.getLogger("supervisor.node.process")  # its lines, under its name as before


def kill_run(pid: int, pidfd: int | None, pgid: int | None, leader_reaped: bool,
             cgroup: str | None) -> bool:
    """SIGKILL a node run: its leader `pid` by `pidfd`, its process group `pgid` while the
    unreaped leader still reserves the group id, its `cgroup`. Whether the leader is
    known to be reaped now (`leader_reaped`, or found gone by the pidfd)."""
    group_reserved = False
    if pidfd is not None:
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            group_reserved = True  # the leader is not reaped yet
        except ProcessLookupError:
            leader_reaped = True
        except OSError as exc:
            log.error("pidfd_send_signal to node pid=%s failed: %s", pid, exc)
    elif not leader_reaped:
        group_reserved = True  # no pidfd support: best effort, as before
    if group_reserved:
        with contextlib.suppress(OSError):
            os.killpg(pgid or pid, signal.SIGKILL)
    if cgroup is not None:
        try:
            cgroups.kill(cgroup)
        except OSError as exc:
            log.error("cgroup.kill of %s failed: %s", cgroup, exc)
    return leader_reaped


def kill_guard(guard: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL the guard's process group (its own session), unless it is reaped."""
    if guard is not None and guard.returncode is None:  # not reaped: the pid is its own
        with contextlib.suppress(OSError):
            os.killpg(guard.pid, signal.SIGKILL)


class AckWatch:
    """The guard's acknowledgements of command lines (it numbers them from 1).

    `sent()` after each command line written; `acked(seq)` for each ack. A command
    unacknowledged for `ack_timeout` calls `stalled(seq, waited)` once, unless
    `exit_known()`. The check's timer lives in `timers` under "ack" (the owner's
    timers, cancelled together).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, ack_timeout: float,
                 timers: dict[str, asyncio.TimerHandle], exit_known: Callable[[], bool],
                 stalled: Callable[[int, float], None]) -> None:
        self._loop = loop
        self._ack_timeout = ack_timeout
        self._timers = timers
        self._exit_known = exit_known
        self._stalled = stalled
        self._sent = 0  # command lines written (the guard numbers them from 1)
        self._acked = 0
        self._unacked: deque[tuple[int, float]] = deque()  # (seq, sent at)
        self._ack_check_at = 0.0  # when the armed ack check is due

    def sent(self) -> None:
        """One more command line written: expect its ack within the ack timeout."""
        self._sent += 1
        self._unacked.append((self._sent, time.monotonic()))
        if "ack" not in self._timers:
            self._arm_ack_check(self._ack_timeout)

    def acked(self, seq: int) -> None:
        """The guard acknowledged every command line up to `seq`."""
        self._acked = max(self._acked, seq)
        while self._unacked and self._unacked[0][0] <= self._acked:
            self._unacked.popleft()

    def _arm_ack_check(self, delay: float) -> None:
        self._ack_check_at = time.monotonic() + delay
        self._timers["ack"] = self._loop.call_later(delay, self._check_acks)

    def _check_acks(self) -> None:
        self._timers.pop("ack", None)
        if self._exit_known() or not self._unacked:
            return
        now = time.monotonic()
        if now - self._ack_check_at > self._ack_timeout / 2:
            # This process was frozen itself (SIGSTOP, a VM pause, a stalled loop), and
            # the guard perhaps with it: it gets a full ack timeout from now.
            self._unacked = deque((seq, now) for seq, _ in self._unacked)
            self._arm_ack_check(self._ack_timeout)
            return
        seq, sent_at = self._unacked[0]
        waited = now - sent_at
        if waited < self._ack_timeout:
            self._arm_ack_check(self._ack_timeout - waited)
            return
        self._stalled(seq, waited)
