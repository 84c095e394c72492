"""The privilege probe: can the supervisor's role do every statement it will need?

Run before the supervisor contends (and by `check-config --online`), after the tables
exist. It changes nothing: it asks the catalogs (`has_schema_privilege`,
`has_table_privilege`, `has_function_privilege`) about exactly what `schema` grants
(`supervisor.lease.ownership.ROW_PRIVILEGES`, the fence's EXECUTE and binding rows),
and, where row-level security is on, whether the access table names this role for
this lease (without that row every read finds nothing and every write is refused).

Each missing privilege is one `Missing`, which names the object, the privilege, what
the supervisor needs it for and the statement a DBA runs (the one `schema` prints).
Corda's lock row is advisory (`Missing.blocking` false): without it a node started
after a failover waits Corda's waitInterval out, nothing worse. So is the fence with
`fencing.required = false` (the node would start unfenced, as that setting asks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import LiteralString

from psycopg import sql

from supervisor.lease.bounded import Conn
from supervisor.lease.cordarow import CORDA_TABLE
from supervisor.lease.fence_sql import CONFIRM_ARGS, END_ARGS, LOCK_ARGS, FenceSql
from supervisor.lease.ownership import ROW_PRIVILEGES, OwnedTables, access_row, grant, q

#: The SQLSTATE of a missing privilege (and of a row-level security refusal).
INSUFFICIENT_PRIVILEGE = "42501"


@dataclass(frozen=True)
class Missing:
    """One thing the role may not do, and the fix."""

    role: str  # the role that lacks it (the connected one)
    object: str  # e.g. `table "public"."corda_ha_lease"`
    privilege: str  # e.g. "UPDATE", "USAGE", "EXECUTE", "access row"
    needed_for: str
    fix: str | None  # the statement a DBA runs (None: the whole `schema` script)
    blocking: bool = True

    def __str__(self) -> str:
        fix = (f"a DBA runs `{self.fix};` (as `corda-ha-supervisor schema` prints it)"
               if self.fix else "a DBA runs what `corda-ha-supervisor schema` prints, as a "
               "superuser")
        return (f"database.user {self.role} lacks {self.privilege} on {self.object} (needed "
                f"for {self.needed_for}): {fix}")


@dataclass(frozen=True)
class ProbeTarget:
    """What to probe: the lease's tables, the role, and which optional parts are on."""

    schema: str | None
    table: str
    lease_name: str
    fencing: bool
    fencing_required: bool = True  # a fence privilege missing blocks the start


async def probe(conn: Conn, target: ProbeTarget) -> list[Missing]:
    """Every missing privilege of the connected role for `target`; [] when none. Reads
    the catalogs (and the access table) only. Raises psycopg errors."""
    cur = await conn.execute("SELECT current_user")
    row = await cur.fetchone()
    role = str(row[0]) if row is not None else "?"
    missing: list[Missing] = []
    if target.schema is not None and not await _one(
            conn, "SELECT to_regnamespace(%s) IS NOT NULL", target.schema):
        if await _one(conn, "SELECT has_database_privilege(current_database(), 'CREATE')"):
            return []  # the supervisor creates it (and its tables) at start
        schema = q(sql.Identifier(target.schema))
        return [Missing(role, f"schema {schema}", "the schema itself (it does not exist, "
                        "and database.user may not create it)", "creating the lease tables",
                        None)]
    if target.schema is not None and not await _one(
            conn, "SELECT has_schema_privilege(%s, 'USAGE')", target.schema):
        schema = q(sql.Identifier(target.schema))
        return [Missing(role, f"schema {schema}", "USAGE", "finding the lease tables in it",
                        f"GRANT USAGE ON SCHEMA {schema} TO {q(sql.Identifier(role))}")]
    tables = OwnedTables.of(target.schema, target.table)
    absent = [t for t in (tables.lease, tables.member, tables.history)
              if not await _one(conn, "SELECT to_regclass(%s) IS NOT NULL", q(t))]
    if absent:
        return await _absent(conn, target, role, absent)
    for key, privileges, needed_for in ROW_PRIVILEGES:
        table = tables.by_key(key)
        if key == "access" and not await _one(
                conn, "SELECT to_regclass(%s) IS NOT NULL", q(table)):
            continue  # tables the supervisor created itself: no access table, no RLS
        lacking = [p for p in privileges if not await _one(
            conn, "SELECT to_regclass(%s) IS NOT NULL AND has_table_privilege(to_regclass(%s), %s)",
            q(table), q(table), p)]
        if lacking:
            missing.append(Missing(role, f"table {q(table)}", ", ".join(lacking), needed_for,
                                   grant(privileges, table, role)))
    if not missing:
        missing += await _access(conn, tables, target, role)
    if target.fencing:
        missing += await _fencing(conn, target, role)
    missing += await _corda_row(conn, target, role)
    return missing


async def _absent(conn: Conn, target: ProbeTarget, role: str,
                  absent: list[sql.Identifier]) -> list[Missing]:
    """Tables not there yet: the supervisor creates them at its start when it may
    create in the schema; otherwise a DBA must run `schema` first."""
    if await _one(conn, "SELECT has_schema_privilege(coalesce(%s, current_schema()), 'CREATE')",
                  target.schema):
        return []
    return [Missing(role, f"table {q(t)}", "the table itself (it does not exist, and "
                    "database.user may not create it)", "creating the lease tables", None)
            for t in absent]


async def _access(conn: Conn, tables: OwnedTables, target: ProbeTarget,
                  role: str) -> list[Missing]:
    """Under row-level security (and not exempt from it), the access row for the lease."""
    limited = await _one(
        conn, "SELECT c.relrowsecurity AND NOT pg_has_role(c.relowner, 'USAGE') "
              "AND NOT (SELECT rolbypassrls FROM pg_roles WHERE rolname = current_user) "
              "FROM pg_class c WHERE c.oid = to_regclass(%s)", q(tables.lease))
    if not limited:
        return []
    statement = sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE lease_name = %s "
                        "AND supervisor_role = current_user)").format(tables.access)
    cur = await conn.execute(statement, (target.lease_name,))
    row = await cur.fetchone()
    if row is not None and row[0]:
        return []
    return [Missing(role, f"lease {target.lease_name!r} in {q(tables.access)}", "an access row",
                    "seeing and writing the lease's rows under row-level security",
                    access_row(tables.access, target.lease_name, role))]


async def _fencing(conn: Conn, target: ProbeTarget, role: str) -> list[Missing]:
    """EXECUTE on the fence functions and SELECT on the binding table."""
    f = FenceSql(target.schema, target.table)
    to = q(sql.Identifier(role))
    missing = []
    for fn, args, needed_for in ((f.confirm_fn, CONFIRM_ARGS, "confirming this host's binding"),
                                 (f.lock_fn, LOCK_ARGS, "locking the other node out"),
                                 (f.end_fn, END_ARGS, "ending the other node's sessions")):
        signature = q(fn) + args
        if not await _one(conn, "SELECT to_regprocedure(%s) IS NOT NULL AND "
                                "has_function_privilege(to_regprocedure(%s), 'EXECUTE')",
                          signature, signature):
            missing.append(Missing(role, f"function {signature}", "EXECUTE", needed_for,
                                   f"GRANT EXECUTE ON FUNCTION {signature} TO {to}",
                                   blocking=target.fencing_required))
    binding = q(f.binding)
    if not await _one(conn, "SELECT to_regclass(%s) IS NOT NULL AND "
                            "has_table_privilege(to_regclass(%s), 'SELECT')", binding, binding):
        missing.append(Missing(role, f"table {binding}", "SELECT",
                               "reading the node roles' bindings",
                               f"GRANT SELECT ON {binding} TO {to}",
                               blocking=target.fencing_required))
    return missing


async def _corda_row(conn: Conn, target: ProbeTarget, role: str) -> list[Missing]:
    """Corda's lock table, when it exists next to the lease: SELECT (to say how long
    Corda's guard keeps a new node out) and, with fencing, UPDATE (to make a fenced old
    node's row takeable). Advisory."""
    table = q(sql.Identifier(target.schema, CORDA_TABLE) if target.schema
              else sql.Identifier(CORDA_TABLE))
    if not await _one(conn, "SELECT to_regclass(%s) IS NOT NULL", table):
        return []
    wanted = ("SELECT", "UPDATE") if target.fencing else ("SELECT",)
    lacking = [p for p in wanted if not await _one(
        conn, "SELECT has_table_privilege(to_regclass(%s), %s)", table, p)]
    if not lacking:
        return []
    return [Missing(role, f"Corda's table {table}", ", ".join(lacking),
                    "shortening a failover past Corda's own guard (without it the new node "
                    "waits Corda's waitInterval out)",
                    f"GRANT SELECT, UPDATE ON {table} TO {q(sql.Identifier(role))}",
                    blocking=False)]


async def _one(conn: Conn, query: LiteralString, *params: object) -> bool:
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    return bool(row is not None and row[0])
