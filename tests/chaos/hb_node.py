"""A stand-in Corda node that records when it ran (chaos suite; run as a plain script).

    python tests/chaos/hb_node.py [--dsn DSN] [--record DIR] --host NAME
        [--crash-after S] [--fail-at-start] [--ignore-sigterm] [--stop-delay S]
        [--interval 0.015] [--detach] [--chatter-bytes N]
        [--write DSN [--write-table T] [--write-log FILE]]

At least one of `--dsn` (rows in the database) and `--record` (JSON lines) is
needed; without `--dsn` psycopg is never imported, so the node starts in the
time of a bare interpreter (the chaos runner uses `--record` only).

Environment: `CORDA_HA_EPOCH` (the fencing epoch the supervisor passes; NULL if
unset) and `CHAOS_RUN_ID` (groups the rows of one chaos run; "" if unset).
`--host` is the *test host's* identity (two supervisors given the same
machineName still pass different `--host`s); it defaults to
`CORDA_HA_MACHINE_NAME`.

Records
-------
One row per record in table `chaos_heartbeat` (created if missing, under an
advisory lock so that concurrent nodes do not race):

    id bigserial, run_id text, host text, pid int, epoch bigint,
    kind text ('start' | 'beat' | 'stop'), mono double precision,
    db_ts timestamptz, late boolean

- `start` once at startup, `beat` every `--interval` seconds (default 15 ms),
  `stop` as the last thing before a graceful exit.
- `mono` is `time.monotonic()` when the record was made: CLOCK_MONOTONIC is one
  clock for all processes of a machine, so every host's rows compare directly.
- `db_ts` is the database's `clock_timestamp()` at insert.
- `late` is true when `db_ts` is not the record time: the row waited in the
  buffer because a write failed after it was made (database down), or it was
  more than 0.25 s old when its insert began. Use `mono` for all arithmetic.

With `--record DIR`, every record is also appended at once (one `write()` per
line, so it survives SIGKILL) to `DIR/<pid>.jsonl` as
`{"run_id", "host", "pid", "epoch", "kind", "mono", "late": false, "ns": N}`
(`ns`: the inode of the node's PID namespace, so a reader in another namespace
knows that `pid` is not its own pid for the process); that file
is complete even when the database is down at exit or the node is SIGKILLed
with rows still buffered; a runner should merge both sources
(`checker.load(...) + checker.load_jsonl(...)`; the checker drops duplicates).
Rows may also appear twice in the table when a commit's acknowledgement was
lost and the batch was re-sent. Commits use `synchronous_commit=on`, so an
acknowledged row survives a database crash or `pg_ctl stop -m immediate`.

Behaviour
---------
- The beat loop never waits for the database: it only appends to an in-memory
  buffer (bounded: `MAX_BUFFER` rows, oldest dropped first) that a writer thread
  inserts in batches over one connection (`connect_timeout=2`, TCP keepalives,
  `tcp_user_timeout`, `statement_timeout`). On any error the writer drops the
  connection and retries every 0.1 s; buffered rows are then written late.
- SIGTERM: keep beating for `--stop-delay` seconds, enqueue `stop`, give the
  writer up to `FLUSH_TIMEOUT` (0.5 s) to flush, exit 0. Never hangs.
- `--ignore-sigterm`: SIGTERM is ignored (only SIGKILL stops it).
- `--crash-after S`: after S seconds, flush (up to 0.5 s) and exit 3, no stop record.
- `--fail-at-start`: exit 1 before writing anything.
- `--detach`: a node that `setsid`s a child which does the beating (and the
  recording, under its own pid) with the same options minus `--detach`; the
  parent forwards SIGTERM to it, waits and exits with its status. Its command
  line differs from the configured one, and neither the parent's process group
  nor its PR_SET_PDEATHSIG reaches the child.
- SIGUSR1 toggles chatter: a thread prints a stdout line of `--chatter-bytes`
  bytes (default 4000) every 5 ms, never delaying the beats.
- All exits after startup use `os._exit`, so a writer stuck in libpq cannot
  delay them.

Prints ``hb_node started pid=<pid> host=<host> epoch=<epoch>`` on stdout at start.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

TABLE = "chaos_heartbeat"
MAX_BUFFER = 100_000
BATCH = 1000
FLUSH_TIMEOUT = 0.5
LATE_AFTER = 0.25
RETRY_DELAY = 0.1
CONNECT_KWARGS: dict[str, Any] = {
    "connect_timeout": 2,
    "keepalives": 1,
    "keepalives_idle": 2,
    "keepalives_interval": 1,
    "keepalives_count": 2,
    "tcp_user_timeout": 2000,
    # synchronous_commit=on: an acknowledged row survives a database crash (the
    # test server runs with synchronous_commit=off, which would lose the last ones).
    "options": "-c statement_timeout=2000 -c lock_timeout=2000 -c synchronous_commit=on",
    "application_name": "chaos-hb-node",
}

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id bigserial PRIMARY KEY,
    run_id text NOT NULL,
    host text NOT NULL,
    pid int NOT NULL,
    epoch bigint,
    kind text NOT NULL CHECK (kind IN ('start', 'beat', 'stop')),
    mono double precision NOT NULL,
    db_ts timestamptz NOT NULL,
    late boolean NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS {TABLE}_run_idx ON {TABLE} (run_id, host, pid);
"""

INSERT = (f"INSERT INTO {TABLE} (run_id, host, pid, epoch, kind, mono, db_ts, late)"
          " VALUES (%s, %s, %s, %s, %s, %s, clock_timestamp(), %s)")


def ensure_schema(conn: psycopg.Connection[Any]) -> None:
    """Create the heartbeat table if missing; safe when many processes race."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (TABLE,))
        conn.execute(SCHEMA)


@dataclass
class Row:
    """One record waiting to be written."""

    run_id: str
    host: str
    pid: int
    epoch: int | None
    kind: str
    mono: float
    failures_at_enqueue: int = 0

    def as_json(self, ns: int | None = None) -> str:
        return json.dumps({"run_id": self.run_id, "host": self.host, "pid": self.pid,
                           "epoch": self.epoch, "kind": self.kind, "mono": self.mono,
                           "late": False, "ns": ns})


class Writer(threading.Thread):
    """Inserts buffered rows; `put` never blocks on the database."""

    def __init__(self, dsn: str) -> None:
        super().__init__(name="hb-writer", daemon=True)
        self.dsn = dsn
        self.cond = threading.Condition()
        self.buffer: collections.deque[Row] = collections.deque(maxlen=MAX_BUFFER)
        self.failures = 0  # failed connects/writes so far
        self.dropped = 0  # rows pushed out of a full buffer
        self.in_flight = 0  # rows taken by the current insert
        self.conn: psycopg.Connection[Any] | None = None
        self.schema_ok = False

    def put(self, row: Row) -> None:
        with self.cond:
            row.failures_at_enqueue = self.failures
            if len(self.buffer) == self.buffer.maxlen:
                self.dropped += 1
            self.buffer.append(row)
            self.cond.notify()

    def idle(self) -> bool:
        with self.cond:
            return not self.buffer and not self.in_flight

    def flush(self, timeout: float) -> bool:
        """Wait up to `timeout` s until everything is written; True if it was."""
        deadline = time.monotonic() + timeout
        while not self.idle():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    def run(self) -> None:
        while True:
            with self.cond:
                while not self.buffer:
                    self.cond.wait()
                batch = [self.buffer[i] for i in range(min(BATCH, len(self.buffer)))]
                self.in_flight = len(batch)
            try:
                self._write(batch)
            except Exception:  # any failure: drop the connection, keep the rows, retry
                self._drop_connection()
                with self.cond:
                    self.failures += 1
                    self.in_flight = 0
                time.sleep(RETRY_DELAY)
                continue
            with self.cond:
                # Rows may have been pushed out of a full buffer meanwhile: remove by identity.
                done = {id(r) for r in batch}
                while self.buffer and id(self.buffer[0]) in done:
                    self.buffer.popleft()
                self.in_flight = 0

    def _write(self, batch: list[Row]) -> None:
        if self.conn is None:
            import psycopg

            self.conn = psycopg.connect(self.dsn, **CONNECT_KWARGS)
        if not self.schema_ok:
            ensure_schema(self.conn)
            self.schema_ok = True
        started = time.monotonic()
        failures = self.failures
        params = [(r.run_id, r.host, r.pid, r.epoch, r.kind, r.mono,
                   failures > r.failures_at_enqueue or started - r.mono > LATE_AFTER)
                  for r in batch]
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.executemany(INSERT, params)

    def _drop_connection(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Heartbeat-writing stand-in Corda node.")
    p.add_argument("--dsn", help="libpq conninfo of the heartbeat database")
    p.add_argument("--host", default=os.environ.get("CORDA_HA_MACHINE_NAME"),
                   help="test host name (default: $CORDA_HA_MACHINE_NAME)")
    p.add_argument("--crash-after", type=float, help="exit 3 after S seconds")
    p.add_argument("--fail-at-start", action="store_true", help="exit 1 at once, no records")
    p.add_argument("--ignore-sigterm", action="store_true")
    p.add_argument("--stop-delay", type=float, default=0.0,
                   help="on SIGTERM keep beating S seconds before exiting 0")
    p.add_argument("--interval", type=float, default=0.015, help="beat interval (s)")
    p.add_argument("--record", help="also append JSON lines to DIR/<pid>.jsonl")
    p.add_argument("--detach", action="store_true",
                   help="beat in a setsid'ed child; this process only waits for it")
    p.add_argument("--chatter-bytes", type=int, default=4000,
                   help="line size of the chatter that SIGUSR1 toggles")
    p.add_argument("--write", help="also write all the time as a node would "
                   "(tests/harness/db_writer.py), to this database")
    p.add_argument("--write-table", default="chaos_writes")
    p.add_argument("--write-log", default=os.devnull, help="every write attempt")
    args = p.parse_args(argv)
    if not args.host:
        p.error("--host is required (or set CORDA_HA_MACHINE_NAME)")
    if not args.dsn and not args.record:
        p.error("--dsn or --record (or both) is required")
    if not 0 < args.interval <= 1:
        p.error("--interval must be in (0, 1]")
    return args


def detach(argv: list[str]) -> int:
    """Run this script again (minus --detach) in a new session; forward SIGTERM;
    exit with its status."""
    child_argv = [a for a in argv if a != "--detach"]
    child = subprocess.Popen([sys.executable, os.path.abspath(__file__), *child_argv],
                             start_new_session=True)
    signal.signal(signal.SIGTERM, lambda _s, _f: child.send_signal(signal.SIGTERM))
    print(f"hb_node detached child pid={child.pid}", flush=True)
    while True:
        try:
            code = child.wait()
        except InterruptedError:  # pragma: no cover - PEP 475 retries
            continue
        return code if code >= 0 else 128 - code


def pid_namespace() -> int | None:
    """Inode of this process's PID namespace (None where /proc has none)."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


def chatter(size: int, on: threading.Event) -> None:
    """While `on` is set, print a line of `size` bytes every 5 ms (a chatty node)."""
    line = "c" * max(1, size - 1) + "\n"
    while True:
        on.wait()
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.write(line)
            sys.stdout.flush()
        time.sleep(0.005)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.fail_at_start:
        print("hb_node failing at start", file=sys.stderr, flush=True)
        return 1
    if args.detach:
        return detach(sys.argv[1:] if argv is None else argv)

    chatty = threading.Event()

    def toggle(_s: int, _f: object) -> None:
        if chatty.is_set():
            chatty.clear()
        else:
            chatty.set()

    signal.signal(signal.SIGUSR1, toggle)
    threading.Thread(target=chatter, args=(args.chatter_bytes, chatty), name="hb-chatter",
                     daemon=True).start()

    stop_requested = threading.Event()
    if args.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda _s, _f: stop_requested.set())

    epoch_env = os.environ.get("CORDA_HA_EPOCH")
    epoch = int(epoch_env) if epoch_env else None
    run_id = os.environ.get("CHAOS_RUN_ID", "")
    pid = os.getpid()
    record_fd: int | None = None
    if args.record:
        os.makedirs(args.record, exist_ok=True)
        record_fd = os.open(os.path.join(args.record, f"{pid}.jsonl"),
                            os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    ns = pid_namespace()
    writer = Writer(args.dsn) if args.dsn else None
    if writer is not None:
        import psycopg  # noqa: F401 - before the start record, so that it is not written late

        writer.start()

    def emit(kind: str) -> None:
        row = Row(run_id, args.host, pid, epoch, kind, time.monotonic())
        if record_fd is not None:
            os.write(record_fd, (row.as_json(ns) + "\n").encode())
        if writer is not None:
            writer.put(row)

    def finish(code: int) -> None:
        if writer is not None:
            writer.flush(FLUSH_TIMEOUT)
        if record_fd is not None:
            os.close(record_fd)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    emit("start")
    if args.write:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__)))))
        from tests.harness import db_writer
        db_writer.start(args.write, args.write_table, args.write_log)
    print(f"hb_node started pid={pid} host={args.host} epoch={epoch}", flush=True)
    started = time.monotonic()
    next_beat = started + args.interval
    stop_at: float | None = None
    while True:
        now = time.monotonic()
        if args.crash_after is not None and now - started >= args.crash_after:
            print("hb_node crashing", file=sys.stderr, flush=True)
            finish(3)
        if stop_requested.is_set() and stop_at is None:
            print("hb_node stopping", flush=True)
            stop_at = now + args.stop_delay
        if stop_at is not None and now >= stop_at:
            emit("stop")
            print("hb_node stopped", flush=True)
            finish(0)
        if now < next_beat:
            time.sleep(min(next_beat - now, 0.005 if stop_at is not None else next_beat - now))
            continue
        emit("beat")
        # Keep the cadence, but never try to catch up after a stall (SIGSTOP).
        next_beat = max(next_beat + args.interval, now + args.interval / 2)


if __name__ == "__main__":
    sys.exit(main())
