"""The node's shared directories (`node.sharedDirectories`, e.g. Corda's `artemis` on
network storage): before every start, and every `PROBE_EVERY` seconds on every host,
each must exist, be a directory (a symlink to one is fine) and accept a write, an
fsync and a delete of a probe file, within `node.sharedProbeTimeout`. A host that
fails this does not start its node, does not take the lease, and is not ready.

The probe runs in a thread of its own (supervisor.node.threads): a hung network mount
never blocks the loop, and a probe still hung fails the next one at once.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence

from supervisor.node.threads import in_thread

PROBE_EVERY = 5.0


def probe(directories: Sequence[str]) -> list[str]:
    """Blocking: one line per directory that failed (empty when all are fine)."""
    problems: list[str] = []
    name = f".corda-ha-probe-{socket.gethostname()}-{os.getpid()}"
    for directory in directories:
        if not os.path.isdir(directory):
            problems.append(f"{directory}: does not exist or is not a directory")
            continue
        path = os.path.join(directory, name)
        step = "create"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                step = "write"
                os.write(fd, b"corda-ha-supervisor probe\n")
                step = "fsync"
                os.fsync(fd)
            finally:
                os.close(fd)
            step = "delete"
            os.unlink(path)
        except OSError as exc:
            problems.append(f"{directory}: cannot {step} a probe file: "
                            f"{exc.strerror or exc}")
    return problems


async def check(directories: Sequence[str], timeout: float,
                probe_fn: Callable[[Sequence[str]], list[str]] = probe) -> str | None:
    """None when every shared directory passed; else what failed, and how."""
    if not directories:
        return None
    try:
        problems = await in_thread(lambda: probe_fn(directories), timeout, "shared-dirs-probe")
    except TimeoutError:
        return (f"the probe of {', '.join(directories)} did not finish within {timeout:g} s "
                "(a hung mount?)")
    return "; ".join(problems) or None
