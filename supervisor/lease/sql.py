"""The lease table's SQL: DDL and the four statements, built once per table.

Identifiers go through `psycopg.sql`; every value is a parameter. Every time
comparison uses the database clock (`clock_timestamp()`). Each statement that
changes the row is a single statement, hence atomic.

The observe statement also says which server answered (`SERVER_ID`: address,
port, postmaster start time, timeline): a restart or a failover to a replica
changes it. Every write records it in the row (`server_id`), so a reader can
tell a row written by another server (e.g. before a failover) even on its first
read. The acquire statement takes the row only when the same server answers
that the caller watched, so an acquisition never lands on a server the caller
has not watched for W.
"""

from __future__ import annotations

import hashlib
from typing import Any

from psycopg import sql

from supervisor.core.row import LeaseSnapshot

#: Which server answers: changes on a restart (postmaster start time) and on a
#: failover (another address or port, another start time, and, even behind a
#: floating address, a new timeline: promotion does not restart the postmaster).
#: All of these functions are executable by any role.
SERVER_ID = sql.SQL(
    "(coalesce(host(inet_server_addr()), 'local') || ':' "
    "|| coalesce(inet_server_port()::text, '-') || ' up since ' "
    "|| extract(epoch FROM pg_postmaster_start_time())::text || ' timeline ' "
    "|| CASE WHEN pg_is_in_recovery() THEN 'standby' "
    "ELSE substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END)")

#: Columns added after the first release; `ensure_schema` adds them when missing.
ADDED_COLUMNS = (("holder_machine", "text"), ("holder_started", "bigint"),
                 ("server_id", "text"), ("paused_at", "timestamptz"),
                 ("handover_to", "text"), ("handover_at", "timestamptz"),
                 ("handover_at_to", "text"))


class LeaseSql:
    """The statements for table `schema.table` (schema None: the search_path)."""

    def __init__(self, schema: str | None, table: str) -> None:
        self.schema = schema
        self.table = (
            sql.Identifier(schema, table) if schema is not None else sql.Identifier(table)
        )
        self.qualified_name = f"{schema}.{table}" if schema is not None else table
        self._ddl(schema)
        self._lease_statements()
        self._history(schema, table)

    def _ddl(self, schema: str | None) -> None:
        """What `ensure_schema` (and `schema`) create: the schema, the table, its columns."""
        t = self.table
        self.create_schema = (
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
            if schema is not None else None
        )
        self.create_table = sql.SQL(
            """CREATE TABLE IF NOT EXISTS {} (
                lease_name text PRIMARY KEY,
                holder text,
                holder_host text,
                holder_pid integer,
                holder_machine text,
                holder_started bigint,
                instance text,
                epoch bigint NOT NULL DEFAULT 0,
                acquired_at timestamptz,
                renewed_at timestamptz,
                expires_at timestamptz,
                handover_requested_at timestamptz,
                server_id text,
                paused_at timestamptz,
                handover_to text,
                handover_at timestamptz,
                handover_at_to text
            )"""
        ).format(t)
        self.add_columns = sql.SQL("ALTER TABLE {} ").format(t) + sql.SQL(", ").join(
            sql.SQL("ADD COLUMN IF NOT EXISTS {} {}").format(sql.Identifier(name), sql.SQL(kind))
            for name, kind in ADDED_COLUMNS)
        self.missing_columns = sql.SQL(
            """SELECT count(*) FROM unnest(%(names)s::text[]) AS c(name)
               WHERE NOT EXISTS (SELECT 1 FROM pg_attribute
                                 WHERE attrelid = to_regclass(%(table)s)
                                   AND attname = c.name AND NOT attisdropped)""")

    def _lease_statements(self) -> None:
        """The lease statements: observe, acquire, renew, release, handover, pause."""
        t = self.table
        self.observe = sql.SQL(
            """SELECT l.lease_name IS NOT NULL, l.holder, l.holder_host, l.holder_pid,
                      l.instance, coalesce(l.epoch, 0), l.acquired_at, l.renewed_at,
                      l.expires_at, l.handover_requested_at, n.now,
                      coalesce(l.holder IS NOT NULL AND n.now > l.expires_at
                               AND n.now > l.renewed_at + %(w)s, false),
                      l.holder_machine, l.holder_started, {server},
                      extract(epoch FROM n.now - pg_postmaster_start_time())::float8,
                      l.server_id, l.paused_at IS NOT NULL,
                      CASE WHEN l.holder IS NULL AND n.now < l.expires_at + 2 * %(w)s
                           THEN l.handover_to END
               FROM (SELECT clock_timestamp() AS now) n
               LEFT JOIN {} l ON l.lease_name = %(name)s"""
        ).format(t, server=SERVER_ID)
        self._acquire()
        self.renew = sql.SQL(
            """UPDATE {} AS l
               SET renewed_at = n.now, expires_at = n.now + %(w)s, server_id = {server}
               FROM (SELECT clock_timestamp() AS now) n
               WHERE l.lease_name = %(name)s AND l.instance = %(instance)s
                 AND l.epoch = %(epoch)s AND l.expires_at > n.now
               RETURNING l.handover_requested_at IS NOT NULL, l.paused_at IS NOT NULL,
                         l.renewed_at,
                         extract(epoch FROM l.handover_at - n.now)::float8, l.handover_at_to"""
        ).format(t, server=SERVER_ID)
        # A release keeps `handover_requested_at`: on a free row it says that the last
        # holder released it on a handover request (the next acquire clears it).
        self.release = sql.SQL(
            """WITH r AS (
                   UPDATE {} SET holder = NULL, holder_host = NULL, holder_pid = NULL,
                                 holder_machine = NULL, holder_started = NULL,
                                 instance = NULL,
                                 expires_at = clock_timestamp(), server_id = {server}
                   WHERE lease_name = %(name)s AND instance = %(instance)s
                     AND epoch = %(epoch)s
                   RETURNING lease_name)
               SELECT pg_notify(%(channel)s, r.lease_name) FROM r"""
        ).format(t, server=SERVER_ID)
        self.request_handover = sql.SQL(
            """UPDATE {} SET handover_requested_at =
                   coalesce(handover_requested_at, clock_timestamp()),
                   handover_to = %(to)s
               WHERE lease_name = %(name)s AND holder IS NOT NULL"""
        ).format(t)
        # pause / resume: a row is created if needed, so a pair can be paused before it runs
        self.set_paused = sql.SQL(
            """INSERT INTO {} AS l (lease_name, epoch, paused_at)
               VALUES (%(name)s, 0, CASE WHEN %(paused)s THEN clock_timestamp() END)
               ON CONFLICT (lease_name) DO UPDATE SET paused_at =
                   CASE WHEN %(paused)s THEN coalesce(l.paused_at, clock_timestamp()) END
               RETURNING l.holder"""
        ).format(t)

    def _acquire(self) -> None:
        """The acquisition: one atomic INSERT ... ON CONFLICT ... DO UPDATE ... WHERE."""
        t = self.table
        # New rows start at epoch 1. Nothing happens unless the expected server
        # answers. The update path runs only when the row is still exactly
        # `expected` AND (free OR expired by the DB clock OR held by our own dead
        # predecessor: same machine name, same machine identity, that process).
        self.acquire = sql.SQL(
            """INSERT INTO {} AS l (lease_name, holder, holder_host, holder_pid,
                                    holder_machine, holder_started, instance,
                                    epoch, acquired_at, renewed_at, expires_at,
                                    handover_requested_at, server_id)
               SELECT %(name)s, %(holder)s, %(host)s, %(pid)s, %(machine)s, %(started)s,
                      %(instance)s, 1, n.now, n.now, n.now + %(w)s, NULL, {server}
               FROM (SELECT clock_timestamp() AS now) n
               WHERE %(server)s::text IS NULL OR {server} = %(server)s::text
               ON CONFLICT (lease_name) DO UPDATE SET
                   holder = EXCLUDED.holder,
                   holder_host = EXCLUDED.holder_host,
                   holder_pid = EXCLUDED.holder_pid,
                   holder_machine = EXCLUDED.holder_machine,
                   holder_started = EXCLUDED.holder_started,
                   instance = EXCLUDED.instance,
                   epoch = l.epoch + 1,
                   acquired_at = EXCLUDED.acquired_at,
                   renewed_at = EXCLUDED.renewed_at,
                   expires_at = EXCLUDED.expires_at,
                   handover_requested_at = NULL,
                   handover_to = NULL,
                   server_id = EXCLUDED.server_id
               WHERE %(has_expected)s
                 AND l.paused_at IS NULL
                 AND (l.handover_to IS NULL OR l.handover_to = %(holder)s
                      OR l.holder IS NOT NULL
                      OR clock_timestamp() >= l.expires_at + 2 * %(w)s)
                 AND l.epoch = %(e_epoch)s
                 AND l.instance IS NOT DISTINCT FROM %(e_instance)s::text
                 AND l.renewed_at IS NOT DISTINCT FROM %(e_renewed)s::timestamptz
                 AND (l.holder IS NULL
                      OR (clock_timestamp() > l.expires_at
                          AND clock_timestamp() > l.renewed_at + %(w)s)
                      OR (%(dead_pid)s::integer IS NOT NULL
                          AND l.holder = %(holder)s
                          AND l.holder_machine = %(machine)s
                          AND l.holder_pid = %(dead_pid)s::integer
                          AND l.holder_started IS NOT DISTINCT FROM %(dead_started)s::bigint))
               RETURNING l.epoch"""
        ).format(t, server=SERVER_ID)

    def _history(self, schema: str | None, table: str) -> None:
        """The history table (`<table>_history`) and its statements."""
        history = (sql.Identifier(schema, f"{table}_history"[:63]) if schema is not None
                   else sql.Identifier(f"{table}_history"[:63]))
        self.history_table = history
        self.create_history = sql.SQL(
            """CREATE TABLE IF NOT EXISTS {} (
                lease_name text NOT NULL,
                epoch bigint NOT NULL,
                holder text NOT NULL,
                holder_host text,
                how text,
                previous_holder text,
                acquired_at timestamptz NOT NULL,
                ended_at timestamptz,
                end_reason text,
                PRIMARY KEY (lease_name, epoch)
            )"""
        ).format(history)
        # an acquisition ends the previous one (if not ended by a release already)
        self.record_acquired = sql.SQL(
            """WITH ended AS (
                   UPDATE {h} SET ended_at = clock_timestamp(), end_reason = 'taken over'
                   WHERE lease_name = %(name)s AND epoch < %(epoch)s AND ended_at IS NULL)
               INSERT INTO {h} (lease_name, epoch, holder, holder_host, how, previous_holder,
                                acquired_at)
               VALUES (%(name)s, %(epoch)s, %(holder)s, %(host)s, %(how)s, %(previous)s,
                       clock_timestamp())
               ON CONFLICT (lease_name, epoch) DO NOTHING"""
        ).format(h=history)
        # the holder's own account of the end wins over the next acquirer's guess
        # (both are written a moment after the fact, in either order)
        self.record_ended = sql.SQL(
            """UPDATE {} SET ended_at = least(ended_at, clock_timestamp()),
                             end_reason = %(reason)s
               WHERE lease_name = %(name)s AND epoch = %(epoch)s
                 AND (ended_at IS NULL OR end_reason = 'taken over')"""
        ).format(history)
        self.read_history = sql.SQL(
            """SELECT epoch, holder, holder_host, how, previous_holder, acquired_at, ended_at,
                      end_reason,
                      extract(epoch FROM coalesce(ended_at, clock_timestamp())
                              - acquired_at)::float8
               FROM {} WHERE lease_name = %(name)s ORDER BY epoch DESC LIMIT %(limit)s"""
        ).format(history)


def snapshot_from_row(lease_name: str, row: tuple[Any, ...]) -> LeaseSnapshot:
    """One row of `LeaseSql.observe` as a `LeaseSnapshot`."""
    (exists, holder, host, pid, instance, epoch, acquired, renewed, expires, handover,
     now, expired, machine, started, server, uptime, row_server, paused, reserved) = row
    return LeaseSnapshot(
        lease_name=lease_name, exists=bool(exists), holder=holder, holder_host=host,
        holder_pid=pid, instance=instance, epoch=int(epoch), acquired_at=acquired,
        renewed_at=renewed, expires_at=expires, handover_requested_at=handover,
        db_now=now, expired=bool(expired), holder_machine=machine,
        holder_started=None if started is None else int(started), server=str(server),
        server_uptime=None if uptime is None else float(uptime), row_server=row_server,
        paused=bool(paused), reserved_for=reserved,
    )


def schema_lock_key(qualified_name: str) -> int:
    """The advisory lock that serialises schema creation for one table."""
    digest = hashlib.sha256(f"corda-ha-supervisor schema {qualified_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)
