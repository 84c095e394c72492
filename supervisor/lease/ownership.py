"""Who owns the lease tables, and which rows each supervisor role may touch.

A trusted role (`database.ownerRole`, default `corda_ha_owner`; `NOLOGIN`: nobody logs
in as it) owns the lease, member and history tables and the access table
`<table>_access (lease_name, supervisor_role)`. A supervisor's role gets row
privileges only (no ownership, no `TRIGGER`, no `CREATE` in the schema). Row-level
security, defined by the owner, lets each supervisor role read and change only the
rows of the leases the access table names for it, so pairs that keep their leases in
one table cannot touch each other's rows. `schema` prints all of it, idempotently:
`ALTER ... OWNER TO` fixes an install whose tables the supervisor's role created.

Everything here is DDL text for `corda-ha-supervisor schema` (run by a DBA as a
superuser); the supervisor itself never runs it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from psycopg import sql

from supervisor.lease.members import MemberSql
from supervisor.lease.sql import LeaseSql

#: The policy that limits a supervisor role to its own leases' rows.
ACCESS_POLICY = "corda_ha_access"
#: The access table's own policy: a role sees its own rows of it.
SELF_POLICY = "corda_ha_self"
#: The dollar-quote tag of every function body and DO block `schema` prints.
TAG = "$corda_ha$"


#: The row privileges `schema` grants the supervisor's role on each table it owns for a
#: lease, and what the supervisor does with them (the start-up probe checks exactly
#: these: `supervisor.lease.privileges`).
ROW_PRIVILEGES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("lease", ("SELECT", "INSERT", "UPDATE"),
     "reading, taking, renewing and releasing the lease row"),
    ("member", ("SELECT", "INSERT", "UPDATE", "DELETE"),
     "registering this supervisor among the members"),
    ("history", ("SELECT", "INSERT", "UPDATE"), "recording each acquisition and its end"),
    ("access", ("SELECT",), "finding the leases this role may act for"),
)


def grant(privileges: tuple[str, ...], table: sql.Identifier, role: str) -> str:
    """`GRANT <privileges> ON <table> TO <role>` as `schema` prints it."""
    return f"GRANT {', '.join(privileges)} ON {q(table)} TO {ident(role)}"


def access_row(access: sql.Identifier, lease_name: str, role: str) -> str:
    """The DBA's INSERT of the access row that lets `role` act for `lease_name`."""
    return (f"INSERT INTO {q(access)} (lease_name, supervisor_role) "
            f"VALUES ({literal(lease_name)}, {literal(role)}) ON CONFLICT DO NOTHING")


def q(composable: sql.Composable) -> str:
    """SQL text of an identifier or literal (no connection needed)."""
    return composable.as_string(None)


def ident(name: str) -> str:
    return q(sql.Identifier(name))


def literal(value: str) -> str:
    return q(sql.Literal(value))


def dollar_quoted(body: str) -> str:
    """`body` between `TAG`s; refuses a body that contains the tag (a name with `$`)."""
    if TAG in body:
        raise ValueError(f"a name contains {TAG}: refusing to print it inside a quoted body")
    return f"{TAG}{body}{TAG}"


def create_role_if_missing(name: str, attributes: str) -> str:
    """A DO block that creates role `name` unless it exists (so `schema` runs twice)."""
    return "DO " + dollar_quoted(f"""
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = {literal(name)}) THEN
        CREATE ROLE {ident(name)} {attributes};
    END IF;
END """)


_COLUMN = re.compile(r"^\s*([a-z_]+)\s+(text|integer|bigint|timestamptz|boolean|name)\b")


def guard_tables(tables: list[sql.Identifier], written: list[sql.Identifier],
                 owner: str) -> str:
    """A DO block that stops the script when one of `tables` exists but is no plain table
    (a view or anything else in its place), or when one of `written` (a table the script
    inserts into) exists but belongs to neither the owner role nor a superuser: a table
    someone else made (with a trigger, a rule, a default or an index expression of
    theirs) would run their code as the DBA on the script's INSERT."""
    def names(ts: list[sql.Identifier]) -> str:
        return "ARRAY[" + ", ".join(literal(q(t)) for t in ts) + "]::text[]"

    return "DO " + dollar_quoted(f"""
DECLARE
    t record;
BEGIN
    FOR t IN SELECT c.oid::pg_catalog.regclass AS rel, c.relkind,
                    pg_catalog.pg_get_userbyid(c.relowner) AS who,
                    n.name = ANY ({names(written)}) AND c.relowner NOT IN (
                        SELECT r.oid FROM pg_catalog.pg_roles r
                        WHERE r.rolname IN ({literal(owner)}, current_user) OR r.rolsuper)
                        AS foreign
             FROM pg_catalog.unnest({names(tables)}) AS n(name)
             JOIN pg_catalog.pg_class c ON c.oid = pg_catalog.to_regclass(n.name) LOOP
        IF t.relkind <> 'r' THEN
            RAISE EXCEPTION '% is not a plain table (relkind %): drop it, then run this again',
                t.rel, t.relkind;
        ELSIF t.foreign THEN
            RAISE EXCEPTION '% exists but belongs to %, not to % (nor to a superuser): drop '
                'it, then run this again', t.rel, t.who, {literal(owner)};
        END IF;
    END LOOP;
END """)


def column_types(create_table: str) -> list[tuple[str, str]]:
    """(column, type) of each column line of a CREATE TABLE statement `schema` prints."""
    return [(m.group(1), m.group(2)) for line in create_table.splitlines()[1:]
            if (m := _COLUMN.match(line))]


@dataclass(frozen=True)
class OwnedTables:
    """The tables the owner role owns for lease table `schema.table`, named as `schema`
    prints them (`schema` None: unqualified, the DBA's search_path schema)."""

    lease: sql.Identifier
    member: sql.Identifier
    history: sql.Identifier
    access: sql.Identifier
    create_lease: str
    create_member: str
    create_history: str
    add_lease_columns: str  # columns later versions added to the lease table
    add_member_columns: str = ""  # ... and to the member table

    @classmethod
    def of(cls, schema: str | None, table: str) -> OwnedTables:
        lease, members = LeaseSql(schema, table), MemberSql(schema, table)
        name = f"{table}_access"[:63]
        access = sql.Identifier(schema, name) if schema else sql.Identifier(name)
        return cls(lease=lease.table, member=members.table, history=lease.history_table,
                   access=access, create_lease=q(lease.create_table),
                   create_member=q(members.create_table),
                   create_history=q(lease.create_history),
                   add_lease_columns=q(lease.add_columns),
                   add_member_columns=q(members.add_columns))

    def by_key(self, key: str) -> sql.Identifier:
        """The table `ROW_PRIVILEGES` calls `key`: lease, member, history or access."""
        table: sql.Identifier = getattr(self, key)
        return table

    @property
    def create_access(self) -> str:
        return f"""CREATE TABLE IF NOT EXISTS {q(self.access)} (
    lease_name text NOT NULL,
    supervisor_role name NOT NULL,
    PRIMARY KEY (lease_name, supervisor_role)
)"""

    @property
    def own_rows(self) -> str:
        """The policy condition: a row of a lease the access table names for the role
        running the statement."""
        return (f"lease_name IN (SELECT a.lease_name FROM {q(self.access)} a "
                "WHERE a.supervisor_role = current_user)")


def owner_ddl(t: OwnedTables, *, owner: str, supervisor_role: str, lease_name: str,
              schema: str | None) -> list[str]:
    """The owner role, the tables it owns, the supervisor role's row privileges, row-level
    security and the access row of `lease_name` for `supervisor_role`. Idempotent."""
    role = ident(supervisor_role)
    tables = [t.lease, t.member, t.history, t.access]
    out = [create_role_if_missing(owner, "NOLOGIN"),
           f"ALTER ROLE {ident(owner)} NOLOGIN"]
    if schema is not None:
        out.append(f"CREATE SCHEMA IF NOT EXISTS {ident(schema)}")
    out += [guard_tables(tables, [t.access], owner), t.create_lease, t.add_lease_columns,
            t.create_member, t.add_member_columns, t.create_history, t.create_access]
    for table in tables:
        out += [f"ALTER TABLE {q(table)} OWNER TO {ident(owner)}",
                f"REVOKE ALL ON {q(table)} FROM PUBLIC, {role}",
                f"ALTER TABLE {q(table)} ENABLE ROW LEVEL SECURITY"]
    if schema is not None:
        out += [f"GRANT USAGE ON SCHEMA {ident(schema)} TO {role}",
                f"REVOKE CREATE ON SCHEMA {ident(schema)} FROM {role}"]
    out += [grant(privileges, t.by_key(key), supervisor_role)
            for key, privileges, _ in ROW_PRIVILEGES]
    for table in (t.lease, t.member, t.history):
        rows = t.own_rows
        out += [f"DROP POLICY IF EXISTS {ACCESS_POLICY} ON {q(table)}",
                f"CREATE POLICY {ACCESS_POLICY} ON {q(table)} USING ({rows}) "
                f"WITH CHECK ({rows})"]
    out += [f"DROP POLICY IF EXISTS {SELF_POLICY} ON {q(t.access)}",
            f"CREATE POLICY {SELF_POLICY} ON {q(t.access)} FOR SELECT "
            "USING (supervisor_role = current_user)",
            access_row(t.access, lease_name, supervisor_role)]
    return out
