"""A stand-in Corda node for tests (stdlib only; run as a plain script).

Runs until SIGTERM, then exits 0 (after `--stop-delay` seconds of pretend
shutdown). At start it prints ``node started pid=<pid> epoch=<epoch>`` on
stdout and ``node stderr pid=<pid>`` on stderr.

Options:
  --crash-after S     exit 3 after S seconds
  --fail-at-start     exit 1 at once
  --ignore-sigterm    ignore SIGTERM (only SIGKILL stops it)
  --stop-delay S      on SIGTERM, wait S seconds before exiting 0
  --record DIR        write DIR/<pid>.json at start: pid, epoch, machine_name,
                      start (time.monotonic()), notify_socket, child_pid, stop
                      (null); rewritten with stop = time.monotonic() on graceful exit
  --spawn-child       start a grandchild `sleep 1000` in the same process group
  --clean-env-child   the grandchild starts with an empty environment (`env -i`: the
                      sweep's environment marker cannot find it, only its group can)
  --long-line N       print one stdout line of N bytes ("x" * N) after the start line
  --binary            print a line with undecodable bytes on stdout
  --chatter N         print a stdout line of about N bytes every 5 ms while running
  --ready-after S     print Corda's "Node for ... started up and registered" line after S s
  --lock FILE         lock FILE (a POSIX record lock, fcntl: the kind Java's FileChannel
                      takes, so the JVM stand-in's lock and this one exclude each
                      other) for as long as this node lives; when another
                      node holds it, append "<pid> <monotonic time> <holder>" to
                      FILE.overlaps (an exact record of two nodes at once) and carry on
  --setsid-child      fork at once; the child calls setsid() (a new session: out of
                      the node's process group, out of PR_SET_PDEATHSIG's reach) and
                      re-executes this script without this option (so its command
                      line differs from the configured one, like a daemonising
                      launcher's JVM): it is the node and writes the record; the
                      parent only forwards SIGTERM to it, waits for it and exits
                      with its status
  --write DSN         write to the database all the time, reconnecting at once when the
                      connection breaks (tests/harness/db_writer.py); with --write-table T
                      (default corda_writes) and --write-log FILE (every attempt)
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time


def write_record(directory: str, record: dict[str, object]) -> None:
    """Atomically (re)write DIR/<pid>.json."""
    path = os.path.join(directory, f"{os.getpid()}.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(record, f)
    os.replace(tmp, path)


def wait_for_setsid_child(child: int) -> int:
    """The parent of --setsid-child: forward SIGTERM, wait, exit like the child."""
    def forward(_sig: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    _, status = os.waitpid(child, 0)
    return os.waitstatus_to_exitcode(status) & 0xFF


def take_node_lock(path: str) -> int:
    """Lock `path` exclusively (lockf: a POSIX record lock, which a fork does not
    inherit) without waiting; on failure record the overlap. The lock lives exactly as
    long as this process."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    except (BlockingIOError, PermissionError):  # EAGAIN or EACCES: held by another
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
        with open(path + ".overlaps", "a") as f:
            f.write(f"{os.getpid()} {time.monotonic():.6f} {holder}\n")
    return fd


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--crash-after", type=float)
    parser.add_argument("--fail-at-start", action="store_true")
    parser.add_argument("--ignore-sigterm", action="store_true")
    parser.add_argument("--stop-delay", type=float, default=0.0)
    parser.add_argument("--record")
    parser.add_argument("--spawn-child", action="store_true")
    parser.add_argument("--clean-env-child", action="store_true")
    parser.add_argument("--long-line", type=int, default=0)
    parser.add_argument("--binary", action="store_true")
    parser.add_argument("--chatter", type=int, default=0)
    parser.add_argument("--lock")
    parser.add_argument("--ready-after", type=float)
    parser.add_argument("--setsid-child", action="store_true")
    parser.add_argument("--write")
    parser.add_argument("--write-table", default="corda_writes")
    parser.add_argument("--write-log", default=os.devnull)
    args = parser.parse_args()

    if args.setsid_child:
        child = os.fork()
        if child == 0:
            os.setsid()
            argv = [a for a in sys.argv if a != "--setsid-child"]
            os.execv(sys.executable, [sys.executable, *argv])
        return wait_for_setsid_child(child)

    lock = take_node_lock(args.lock) if args.lock else None  # noqa: F841 (held till exit)

    if args.fail_at_start:
        print("node failing at start", file=sys.stderr, flush=True)
        return 1

    stop_requested = False

    def on_term(_sig: int, _frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, signal.SIG_IGN if args.ignore_sigterm else on_term)

    child_pid = None
    if args.spawn_child:
        sleeper = subprocess.Popen(["/bin/sleep", "1000"],
                                   env={} if args.clean_env_child else None)
        child_pid = sleeper.pid

    epoch = os.environ.get("CORDA_HA_EPOCH")
    record: dict[str, object] = {
        "pid": os.getpid(),
        "pgid": os.getpgrp(),
        "epoch": epoch,
        "machine_name": os.environ.get("CORDA_HA_MACHINE_NAME"),
        "notify_socket": os.environ.get("NOTIFY_SOCKET"),
        "start": time.monotonic(),
        "child_pid": child_pid,
        "stop": None,
    }
    if args.record:
        write_record(args.record, record)
    if args.write:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__)))))  # the repository root
        from tests.harness import db_writer
        db_writer.start(args.write, args.write_table, args.write_log)

    print(f"node started pid={os.getpid()} epoch={epoch}", flush=True)
    print(f"node stderr pid={os.getpid()}", file=sys.stderr, flush=True)
    if args.long_line:
        sys.stdout.write("x" * args.long_line + "\n")
        sys.stdout.flush()
    if args.binary:
        sys.stdout.buffer.write(b"bad \xff\xfe bytes\n")
        sys.stdout.flush()

    started = time.monotonic()
    lines = 0
    ready_said = args.ready_after is None
    while not stop_requested:
        if not ready_said and time.monotonic() - started >= args.ready_after:
            ready_said = True
            print(f"Node for \"fake\" started up and registered in {args.ready_after} sec",
                  flush=True)
        if args.crash_after is not None and time.monotonic() - started >= args.crash_after:
            print("node crashing", file=sys.stderr, flush=True)
            return 3
        if args.chatter:
            lines += 1
            print(f"chatter {lines} " + "x" * args.chatter, flush=True)
            time.sleep(0.005)
        else:
            time.sleep(0.01)

    print("node stopping", flush=True)
    if args.stop_delay:
        time.sleep(args.stop_delay)
    if args.record:
        record["stop"] = time.monotonic()
        write_record(args.record, record)
    print("node stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
