"""Operator hooks (`hooks { onRoleChange, preStop, timeout }`).

- `onRoleChange` runs after each change of this host's role (`active`: holds the
  lease; `standby`: contends; `stopped`: cooling down, stopping, exiting), with
  `CORDA_HA_ROLE`, `CORDA_HA_EPOCH` and `CORDA_HA_MACHINE_NAME` in its environment.
  Role changes are run one after another, in order.
- `preStop` runs before the node's SIGTERM on a planned stop only (handover,
  shutdown), within the stop's grace (at most half of it), e.g. to drain flows.

Every hook runs as a child process in its own process group, bounded by `timeout`
(then the group is SIGKILLed), its output logged line by line. Spawning it (fork
and exec: Popen waits until the exec has happened, which hangs when the program
sits on a hung mount) happens off the loop, in a thread of its own
(`supervisor.node.threads.in_thread`), within the same `timeout`; while a spawn of a
hook is still hung, the next spawn of that hook fails at once. Waiting for it and
relaying its output stay on the loop, non-blocking. A hook that fails or hangs
never delays a safety deadline: the guard's kill deadline does not wait for it,
and a lost lease stops the node without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog

from supervisor.node.pipes import LineRelay, reap_child
from supervisor.node.threads import in_thread

log = structlog.get_logger("supervisor.node.hooks")

#: Starts one hook: (command, full environment, working directory) -> the process,
#: its stdout (stderr joined) a pipe. Blocking; called in a thread.
SpawnFunction = Callable[[Sequence[str], Mapping[str, str], str | None],
                         "subprocess.Popen[bytes]"]

_BACKGROUND: set[asyncio.Task[Any]] = set()  # reaps of hooks given up on


def spawn_hook(command: Sequence[str], env: Mapping[str, str],
               cwd: str | None) -> subprocess.Popen[bytes]:
    """The production spawn: a new session, stdin /dev/null, stdout+stderr one pipe."""
    return subprocess.Popen(list(command), env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)


async def run_hook(name: str, command: Sequence[str], env: Mapping[str, str],
                   timeout: float, cwd: str | None = None, *,
                   spawn: SpawnFunction = spawn_hook) -> int | None:
    """Run one hook to completion or `timeout` (spawn included); its exit status (None:
    timed out or could not start). Never raises (but CancelledError). `spawn`
    replaces the process start (tests)."""
    if not command:
        return None
    started = time.monotonic()
    full_env = {**os.environ, **env}
    try:
        proc = await _spawn_off_loop(name, lambda: spawn(command, full_env, cwd), timeout)
    except TimeoutError as exc:
        log.error("hook_failed", hook=name, error=f"could not be started: {exc}")
        return None
    except (OSError, subprocess.SubprocessError) as exc:
        log.error("hook_failed", hook=name, error=f"cannot start {command[0]!r}: {exc}")
        return None
    output = await _relay_output(name, proc)
    left = max(0.0, timeout - (time.monotonic() - started))
    try:
        code = await asyncio.wait_for(reap_child(proc), left)
    except TimeoutError:
        _kill_group(proc)
        _reap_in_background(proc)  # never waited for here: it may not die at once
        log.error("hook_failed", hook=name, error=f"did not finish within {timeout:g} s: killed")
        return None
    except asyncio.CancelledError:
        _kill_group(proc)
        _reap_in_background(proc)
        raise
    finally:
        if output is not None:
            transport, relay = output
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(relay.closed), 1.0)
            transport.close()
    if code != 0:
        log.error("hook_failed", hook=name, error=f"exit status {code}")
    else:
        log.info("hook_done", hook=name)
    return code


async def _spawn_off_loop(name: str, start: Callable[[], subprocess.Popen[bytes]],
                          timeout: float) -> subprocess.Popen[bytes]:
    """`start()` in a thread of its own, bounded by `timeout` (TimeoutError). A hook
    that comes to life after it was given up on is killed at once, never left."""
    lock = threading.Lock()
    given_up = False
    made: list[subprocess.Popen[bytes]] = []

    def work() -> subprocess.Popen[bytes]:
        proc = start()
        with lock:
            made.append(proc)
            late = given_up
        if late:
            _kill_group(proc)
            proc.wait()
            raise TimeoutError("started after it was given up on: killed")
        return proc

    try:
        return await in_thread(work, timeout, f"hook-spawn-{name}")
    except TimeoutError:
        with lock:
            given_up = True
            late = list(made)
        for proc in late:  # started, but its result came too late to be taken
            _kill_group(proc)
            _reap_in_background(proc)
        raise


async def _relay_output(name: str, proc: subprocess.Popen[bytes]
                        ) -> tuple[asyncio.ReadTransport, LineRelay] | None:
    """Log the hook's output line by line, from the loop (a non-blocking pipe reader)."""
    if proc.stdout is None:
        return None

    def line(text: str) -> None:
        log.info("hook_output", hook=name, line=text)

    loop = asyncio.get_running_loop()
    try:
        return await loop.connect_read_pipe(lambda: LineRelay(line), proc.stdout)
    except OSError as exc:
        log.warning("hook_output_lost", hook=name, error=str(exc))
        proc.stdout.close()
        return None


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.returncode is None:  # not reaped: the group id is still its own
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)


def _reap_in_background(proc: subprocess.Popen[bytes]) -> None:
    task = asyncio.get_running_loop().create_task(reap_child(proc))
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)
