"""The node stand-in's database writes (fake_node.py --write): like a Corda node's
connection pool, it writes all the time and, when its connection breaks, reconnects
and tries again at once.

Every attempt is appended to `log` as ``ok <end> start <start>`` or
``err <end> start <start> <msg>`` (monotonic seconds, comparable with the test's
`time.monotonic()`), so a test can wait for attempts instead of sleeping, and tell an
attempt begun before a freeze (its line written after it) from one begun after. Rows
go to table `table` (`host`, `pid`, `epoch`, `at`); `fenced_writes` counts the ones
that landed late.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Any

WRITE_EVERY = 0.005
RETRY_EVERY = 0.01


def start(dsn: str, table: str, log: str) -> threading.Thread:
    """Write in a daemon thread until the process ends."""
    thread = threading.Thread(target=_write_forever, args=(dsn, table, log), daemon=True)
    thread.start()
    return thread


def _write_forever(dsn: str, table: str, log: str) -> None:
    import psycopg  # only the writing stand-in needs it

    host = os.environ.get("CORDA_HA_MACHINE_NAME", "?")
    epoch = os.environ.get("CORDA_HA_EPOCH", "")
    conn: Any = None
    with open(log, "a", buffering=1) as out:
        while True:
            start = time.monotonic()
            try:
                if conn is None:
                    conn = psycopg.connect(dsn, autocommit=True, connect_timeout=2)
                conn.execute(f"INSERT INTO {table} (host, pid, epoch) VALUES (%s, %s, %s)",
                             (host, os.getpid(), epoch))
                out.write(f"ok {time.monotonic():.6f} start {start:.6f}\n")
                time.sleep(WRITE_EVERY)
            except psycopg.Error as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                out.write(f"err {time.monotonic():.6f} start {start:.6f} {first}\n")
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                conn = None
                time.sleep(RETRY_EVERY)


def create_table(dsn: str, table: str, group: str | None = None) -> None:
    """The writes table (owned by `group` when given, so every node role may write)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, host text, pid integer, "
                     "epoch text, at timestamptz NOT NULL DEFAULT clock_timestamp())")
        if group is not None:
            conn.execute(f"ALTER TABLE {table} OWNER TO {group}")
            conn.execute(f"ALTER SEQUENCE {table}_id_seq OWNER TO {group}")


def late_writes(dsn: str, table: str, new_host: str, old_host: str) -> tuple[int, int]:
    """(writes of `old_host` committed after `new_host`'s first write, writes of
    `new_host`), by commit timestamp (`track_commit_timestamp`), else by `at`."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        tracked = conn.execute("SHOW track_commit_timestamp").fetchone()
        when = ("pg_xact_commit_timestamp(xmin)" if tracked and tracked[0] == "on" else "at")
        row = conn.execute(
            f"""WITH first AS (SELECT min({when}) AS t FROM {table} WHERE host = %(new)s)
                SELECT (SELECT count(*) FROM {table}, first
                        WHERE host = %(old)s AND {when} > first.t),
                       (SELECT count(*) FROM {table} WHERE host = %(new)s)""",
            {"new": new_host, "old": old_host}).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])
