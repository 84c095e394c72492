"""A handover set for a time (`handover --at`, `--cancel`) in the lease row, and the
holder's taking it off the row when the time has come (docs/operations.md, "Handover at a
set time").

Two columns of the lease row: `handover_at` (the time, database clock) and
`handover_at_to` (the member named, or NULL: the best live candidate then). They stay
across restarts of either supervisor and across acquisitions, until the holder takes the
schedule off the row: as a handover request (`handover_requested_at`, `handover_to`: the
path `handover --to` takes) when a live standby can take over then, else as a
cancellation. Taking it off compares the time, so a schedule set again meanwhile stays.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from psycopg import sql

from supervisor.lease.bounded import Conn


class ScheduleSql:
    """The statements of the schedule for lease table `schema.table`."""

    def __init__(self, schema: str | None, table: str) -> None:
        t = sql.Identifier(schema, table) if schema is not None else sql.Identifier(table)
        self.settle = sql.SQL(
            """UPDATE {} SET handover_at = NULL, handover_at_to = NULL,
                   handover_requested_at = CASE WHEN %(proceed)s
                       THEN coalesce(handover_requested_at, clock_timestamp())
                       ELSE handover_requested_at END,
                   handover_to = CASE WHEN %(proceed)s THEN %(to)s::text ELSE handover_to END
               WHERE lease_name = %(name)s AND instance = %(instance)s AND epoch = %(epoch)s
                 AND handover_at <= clock_timestamp()
               RETURNING 1"""
        ).format(t)
        self.set = sql.SQL(
            """UPDATE {} SET handover_at = %(at)s, handover_at_to = %(to)s
               WHERE lease_name = %(name)s
               RETURNING holder, handover_at"""
        ).format(t)
        self.read = sql.SQL(
            "SELECT handover_at, handover_at_to FROM {} WHERE lease_name = %(name)s"
        ).format(t)


def schedule_of(row: tuple[Any, ...]) -> dict[str, Any]:
    """The schedule fields of a renewal's row (`LeaseSql.renew`): seconds to the set
    time from the database's now, and the member named."""
    return {"handover_in": None if row[3] is None else float(row[3]),
            "handover_at_to": row[4]}


def settle_op(name: str, instance: str, epoch: int, proceed: bool, to: str | None,
              statements: ScheduleSql) -> Callable[[Conn], Awaitable[bool]]:
    """The holder's one statement that takes a due schedule off the row; True when it
    did (False: not ours any more, or the schedule changed meanwhile)."""
    async def op(conn: Conn) -> bool:
        cur = await conn.execute(statements.settle, {
            "name": name, "instance": instance, "epoch": epoch, "proceed": proceed,
            "to": to})
        return await cur.fetchone() is not None
    return op


def set_op(name: str, at: datetime | None, to: str | None,
           statements: ScheduleSql) -> Callable[[Conn], Awaitable[tuple[bool, str | None]]]:
    """The operator's one statement: set (or with `at` None, cancel) the schedule;
    (whether the row exists, its holder)."""
    async def op(conn: Conn) -> tuple[bool, str | None]:
        cur = await conn.execute(statements.set, {"name": name, "at": at, "to": to})
        row = await cur.fetchone()
        return (False, None) if row is None else (True, row[0])
    return op


def read_op(name: str, statements: ScheduleSql
            ) -> Callable[[Conn], Awaitable[tuple[datetime | None, str | None]]]:
    """The schedule as it stands: (time or None, member named or None)."""
    async def op(conn: Conn) -> tuple[datetime | None, str | None]:
        cur = await conn.execute(statements.read, {"name": name})
        row = await cur.fetchone()
        return (None, None) if row is None else (row[0], row[1])
    return op
