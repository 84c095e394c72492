"""The daemon process: `python -m supervisor.daemon --config-fd N [--source PATH]`.

`corda-ha-supervisor run` parses and checks the configuration, then replaces itself
(exec: same pid for systemd) with this module, handing the parsed configuration over
an anonymous in-memory file (memfd; the password never touches a disk, an argument
or the environment). So the daemon never loads the HOCON parser: it imports only
what it runs with (docs/design.md, "Package map": keep its resident memory small).

Before anything else (the health port, the start-up sweep, the database) the daemon
takes its instance lock (`supervisor.node.instancelock`): a second supervisor of the same
node on this host exits 78 naming the holder's pid and touches nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import os
import signal
import sys
from collections.abc import Sequence

from supervisor.config import EX_CONFIG, Config, config_from_json, config_to_json
from supervisor.node.instancelock import InstanceLock, InstanceLockError


def exec_daemon(config: Config) -> None:
    """Replace this process with the daemon for `config`. Does not return (raises
    OSError if the exec fails)."""
    fd = os.memfd_create("corda-ha-supervisor-config", 0)  # not close-on-exec
    os.write(fd, config_to_json(config).encode())
    os.lseek(fd, 0, os.SEEK_SET)
    argv = [sys.executable, "-m", "supervisor.daemon", "--config-fd", str(fd),
            "--source", config.source]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)


def _read_config(fd: int) -> Config:
    chunks = []
    with os.fdopen(fd, "rb") as handle:
        while chunk := handle.read(65536):
            chunks.append(chunk)
    return config_from_json(b"".join(chunks).decode())


#: The instance lock, held for the life of the daemon process (its descriptor must
#: never be closed: that would drop the lock).
_INSTANCE_LOCK: list[InstanceLock] = []


def take_instance_lock(config: Config) -> str | None:
    """Take this node's instance lock and keep it for the life of the process; the
    error (logged) when another supervisor holds it or it cannot be taken."""
    import structlog

    from supervisor.node import instancelock
    from supervisor.node.sweep import node_key

    key = node_key(config.database.lease_name, config.lease.machine_name,
                   config.node.working_directory)
    log = structlog.get_logger("supervisor.daemon")
    try:
        _INSTANCE_LOCK.append(instancelock.acquire(config.node.working_directory, key))
    except InstanceLockError as exc:
        if exc.holder is not None:
            log.error("instance_lock_held", holder_pid=exc.holder, lock_file=exc.path,
                      key=key, message=str(exc))
        else:
            log.error("instance_lock_failed", lock_file=exc.path, key=key, message=str(exc))
        return str(exc)
    return None


#: `kill -USR2 <pid>` prints every thread's stack to stderr (the journal) and the
#: daemon carries on: how to see where a daemon that has gone quiet is stuck.
STACK_DUMP_SIGNAL = signal.SIGUSR2


def main(argv: Sequence[str] | None = None) -> int:
    # A fatal error (a crash in a C extension) prints every thread's stack too.
    faulthandler.enable(all_threads=True)
    faulthandler.register(STACK_DUMP_SIGNAL, all_threads=True)
    parser = argparse.ArgumentParser(prog="python -m supervisor.daemon")
    parser.add_argument("--config-fd", type=int, required=True)
    parser.add_argument("--source", help="the configuration file (shown by ps)")
    args = parser.parse_args(argv)
    config = _read_config(args.config_fd)

    from supervisor.daemon.loop import Daemon
    from supervisor.observe.logs import EXIT_FLUSH_TIMEOUT, configure_logging, flush_logs

    configure_logging(config.logging.format, config.logging.level)
    try:
        problem = take_instance_lock(config)
        if problem is not None:
            print(f"corda-ha-supervisor: {problem}", file=sys.stderr, flush=True)
            return EX_CONFIG
        return asyncio.run(Daemon(config).run())
    finally:
        flush_logs(EXIT_FLUSH_TIMEOUT)  # the last lines (supervisor_exiting); bounded


if __name__ == "__main__":
    sys.exit(main())
