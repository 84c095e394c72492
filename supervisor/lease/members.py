"""Members: every supervisor of a lease registers itself, so that an operator (and
`handover`) can see who could take over.

One row per supervisor process in `<lease table>_member`: machineName, machine
identity, host, pid, state, whether it could take over now (and why not), version,
when it started and when it was last seen (database clock). A supervisor refreshes
its row every `MEMBER_INTERVAL` seconds on its LISTEN connection (the refresh is
that connection's health check, so it costs no extra connection). A row not seen for
`MEMBER_FRESH` seconds belongs to a supervisor that is gone or cut off (`status` shows
it as gone, with when it was last seen). The rows of a dead predecessor (same
machineName and machine identity, not seen for that long) and rows not seen for
`MEMBER_RETENTION` (24 hours) are removed by the next refresh of any member.

The member table is an aid to operators: the lease never depends on it. A missing
table or privilege is logged once and the supervisor carries on without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg import sql

from supervisor.lease.bounded import Conn

MEMBER_INTERVAL = 2.0
#: Columns added after the first release; `ensure_schema` adds them when missing.
ADDED_MEMBER_COLUMNS = (("priority", "integer"), ("nofailover", "boolean"),
                        ("update_interval_ms", "bigint"), ("wait_interval_ms", "bigint"),
                        ("margin_ms", "bigint"))
MEMBER_FRESH = 3 * MEMBER_INTERVAL
#: A member not seen for this long is removed (shown as gone until then).
MEMBER_RETENTION = timedelta(hours=24)


@dataclass(frozen=True)
class Member:
    """What a supervisor says about itself."""

    instance: str
    machine_name: str
    machine_identity: str
    host: str
    pid: int
    state: str
    can_take_over: bool
    reason: str
    version: str
    priority: int = 0  # candidate.priority
    nofailover: bool = False  # candidate.nofailover
    timing_ms: tuple[int, int, int] | None = None  # U, W, M in milliseconds

    @property
    def settings(self) -> tuple[object, ...] | None:
        """(U, W, M in seconds, version): what members must agree on; None: unpublished."""
        if self.timing_ms is None:
            return None
        u, w, m = self.timing_ms
        return (u / 1000, w / 1000, m / 1000, self.version)


@dataclass(frozen=True)
class MemberRow:
    """A member as read back, with its age by the database clock."""

    member: Member
    started_at: datetime | None
    last_seen_age: float  # seconds since its last refresh
    last_seen: datetime | None = None

    @property
    def fresh(self) -> bool:
        return self.last_seen_age <= MEMBER_FRESH

    def as_dict(self) -> dict[str, Any]:
        m = self.member
        return {"machine_name": m.machine_name, "host": m.host, "pid": m.pid,
                "instance": m.instance, "machine_identity": m.machine_identity,
                "state": m.state, "can_take_over": m.can_take_over and self.fresh,
                "reason": m.reason if self.fresh else "not seen for "
                f"{self.last_seen_age:.1f} s (supervisor gone or cut off)",
                "version": m.version, "priority": m.priority, "nofailover": m.nofailover,
                "timing": None if m.timing_ms is None else dict(zip(
                    ("update_interval", "wait_interval", "margin"),
                    (v / 1000 for v in m.timing_ms), strict=True)),
                "last_seen_age": round(self.last_seen_age, 3),
                "fresh": self.fresh, "gone": not self.fresh,
                "last_seen": local_time(self.last_seen),
                "started_at": local_time(self.started_at)}


def local_time(moment: datetime | None) -> str | None:
    """`moment` as an ISO 8601 time in this host's time zone, to the second."""
    return None if moment is None else moment.astimezone().isoformat(timespec="seconds")


class MemberSql:
    """Statements for the member table of lease table `schema.table`."""

    def __init__(self, schema: str | None, table: str) -> None:
        name = f"{table}_member"[:63]
        self.table = sql.Identifier(schema, name) if schema else sql.Identifier(name)
        t = self.table
        self.create_table = sql.SQL(
            """CREATE TABLE IF NOT EXISTS {} (
                lease_name text NOT NULL,
                instance text NOT NULL,
                machine_name text NOT NULL,
                machine_identity text,
                host text,
                pid integer,
                state text,
                can_take_over boolean,
                reason text,
                version text,
                started_at timestamptz,
                last_seen timestamptz,
                priority integer,
                nofailover boolean,
                update_interval_ms bigint,
                wait_interval_ms bigint,
                margin_ms bigint,
                PRIMARY KEY (lease_name, instance)
            )"""
        ).format(t)
        self.add_columns = sql.SQL("ALTER TABLE {} ").format(t) + sql.SQL(", ").join(
            sql.SQL("ADD COLUMN IF NOT EXISTS {} {}").format(sql.Identifier(name), sql.SQL(kind))
            for name, kind in ADDED_MEMBER_COLUMNS)
        self.upsert = sql.SQL(
            """WITH gone AS (
                   DELETE FROM {t} WHERE lease_name = %(name)s AND instance <> %(instance)s
                     AND (last_seen < clock_timestamp() - %(retention)s
                          OR (machine_name = %(machine_name)s
                              AND machine_identity = %(machine_identity)s
                              AND last_seen < clock_timestamp() - %(fresh)s)))
               INSERT INTO {t} AS m (lease_name, instance, machine_name, machine_identity,
                                     host, pid, state, can_take_over, reason, version,
                                     started_at, last_seen, priority, nofailover,
                                     update_interval_ms, wait_interval_ms, margin_ms)
               VALUES (%(name)s, %(instance)s, %(machine_name)s, %(machine_identity)s,
                       %(host)s, %(pid)s, %(state)s, %(can_take_over)s, %(reason)s,
                       %(version)s, clock_timestamp(), clock_timestamp(), %(priority)s,
                       %(nofailover)s, %(u_ms)s, %(w_ms)s, %(m_ms)s)
               ON CONFLICT (lease_name, instance) DO UPDATE SET
                   state = EXCLUDED.state, can_take_over = EXCLUDED.can_take_over,
                   reason = EXCLUDED.reason, last_seen = EXCLUDED.last_seen"""
        ).format(t=t)
        self.select = sql.SQL(
            """SELECT instance, machine_name, machine_identity, host, pid, state,
                      can_take_over, reason, version, started_at,
                      extract(epoch FROM clock_timestamp() - last_seen)::float8, last_seen,
                      priority, nofailover, update_interval_ms, wait_interval_ms, margin_ms
               FROM {} WHERE lease_name = %(name)s ORDER BY machine_name, started_at"""
        ).format(t)


async def refresh(conn: Conn, statements: MemberSql, lease_name: str, member: Member) -> None:
    """Upsert `member`'s row (one statement, autocommit)."""
    await conn.execute(statements.upsert, {
        "name": lease_name, "instance": member.instance, "machine_name": member.machine_name,
        "machine_identity": member.machine_identity, "host": member.host, "pid": member.pid,
        "state": member.state, "can_take_over": member.can_take_over, "reason": member.reason,
        "version": member.version, "priority": member.priority,
        "nofailover": member.nofailover,
        "u_ms": None if member.timing_ms is None else member.timing_ms[0],
        "w_ms": None if member.timing_ms is None else member.timing_ms[1],
        "m_ms": None if member.timing_ms is None else member.timing_ms[2],
        "fresh": timedelta(seconds=MEMBER_FRESH),
        "retention": MEMBER_RETENTION})


async def read(conn: Conn, statements: MemberSql, lease_name: str) -> list[MemberRow]:
    """Every member row of `lease_name`."""
    cur = await conn.execute(statements.select, {"name": lease_name})
    rows = await cur.fetchall()
    return [MemberRow(Member(instance=r[0], machine_name=r[1], machine_identity=r[2] or "",
                             host=r[3] or "", pid=int(r[4] or 0), state=r[5] or "",
                             can_take_over=bool(r[6]), reason=r[7] or "", version=r[8] or "",
                             priority=int(r[12] or 0), nofailover=bool(r[13]),
                             timing_ms=(None if None in (r[14], r[15], r[16])
                                        else (int(r[14]), int(r[15]), int(r[16])))),
                      started_at=r[9], last_seen_age=float(r[10]), last_seen=r[11])
            for r in rows]
