"""Creating what is missing of the lease tables (the supervisor's `ensure_schema`).

In one transaction, serialised by a transaction-scoped advisory lock, so supervisors
starting together never fail on each other's CREATE: the schema, the lease table, the
members and history tables, when missing. Existing objects are only looked up, so a
role without CREATE privilege works once a DBA created them (`corda-ha-supervisor
schema`). Columns added by later versions are added when missing (which needs
ownership of the table only then).
"""

from __future__ import annotations

import contextlib

import psycopg

from supervisor.lease.bounded import Conn
from supervisor.lease.members import ADDED_MEMBER_COLUMNS, MemberSql
from supervisor.lease.sql import ADDED_COLUMNS, LeaseSql, schema_lock_key


async def create_missing(conn: Conn, lease: LeaseSql, members: MemberSql,
                         schema: str | None) -> None:
    """See the module docstring. Raises psycopg errors."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)",
                           (schema_lock_key(lease.qualified_name),))
        if lease.create_schema is not None:
            cur = await conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                                     (schema,))
            if await cur.fetchone() is None:
                await conn.execute(lease.create_schema)
        exists = await _exists(conn, lease.table.as_string(conn))
        if not await _exists(conn, members.table.as_string(conn)):
            await conn.execute(members.create_table)
        elif await _missing(conn, lease, members.table.as_string(conn), ADDED_MEMBER_COLUMNS):
            # the member table is an aid: without ownership, the registry stays off
            # until a DBA runs `schema` again; the lease goes on
            with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
                async with conn.transaction():
                    await conn.execute(members.add_columns)
        if not await _exists(conn, lease.history_table.as_string(conn)):
            await conn.execute(lease.create_history)
        if not exists:
            await conn.execute(lease.create_table)
            return
        if await _missing(conn, lease, lease.table.as_string(conn), ADDED_COLUMNS):
            await conn.execute(lease.add_columns)


async def _missing(conn: Conn, lease: LeaseSql, table: str,
                   columns: tuple[tuple[str, str], ...]) -> bool:
    """True when `table` lacks one of `columns`."""
    cur = await conn.execute(lease.missing_columns, {
        "names": [name for name, _ in columns], "table": table})
    missing = await cur.fetchone()
    return missing is not None and bool(missing[0])


async def _exists(conn: Conn, name: str) -> bool:
    cur = await conn.execute("SELECT to_regclass(%s)", (name,))
    row = await cur.fetchone()
    return row is not None and row[0] is not None
