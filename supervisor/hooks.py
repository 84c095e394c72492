"""Operator hooks (`hooks { onRoleChange, preStop, timeout }`).

- `onRoleChange` runs after each change of this host's role (`active`: holds the
  lease; `standby`: contends; `stopped`: cooling down, stopping, exiting), with
  `CORDA_HA_ROLE`, `CORDA_HA_EPOCH` and `CORDA_HA_MACHINE_NAME` in its environment.
  Role changes are run one after another, in order.
- `preStop` runs before the node's SIGTERM on a planned stop only (handover,
  shutdown), within the stop's grace (at most half of it), e.g. to drain flows.

Every hook runs off the loop as a child process in its own process group, bounded
by `timeout` (then the group is SIGKILLed), its output logged line by line. A hook
that fails or hangs never delays a safety deadline: the guard's kill deadline does
not wait for it, and a lost lease stops the node without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping, Sequence

import structlog

log = structlog.get_logger("supervisor.hooks")


async def run_hook(name: str, command: Sequence[str], env: Mapping[str, str],
                   timeout: float, cwd: str | None = None) -> int | None:
    """Run one hook to completion or `timeout`; its exit status (None: timed out or
    could not start). Never raises (but CancelledError)."""
    if not command:
        return None
    full_env = {**os.environ, **env}
    try:
        proc = await asyncio.create_subprocess_exec(
            *command, env=full_env, cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True)
    except OSError as exc:
        log.error("hook_failed", hook=name, error=f"cannot start {command[0]!r}: {exc}")
        return None

    async def relay() -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            log.info("hook_output", hook=name,
                     line=raw.decode(errors="replace").rstrip("\n"))

    relaying = asyncio.ensure_future(relay())
    try:
        code = await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        log.error("hook_failed", hook=name, error=f"did not finish within {timeout:g} s: killed")
        return None
    except asyncio.CancelledError:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        raise
    finally:
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(relaying, 1.0)
    if code != 0:
        log.error("hook_failed", hook=name, error=f"exit status {code}")
    else:
        log.info("hook_done", hook=name)
    return code
