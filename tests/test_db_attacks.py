"""Attacks on database fencing from the supervisor's own database role.

Two pairs keep their leases in one table (pair 1: hosts a, b, role `sup_*`; pair 2: hosts
c, d, role `sup2_*`, its nodes connected), set up exactly as `schema` prints it
(tests/harness/fencedb.py). Pair 1's supervisor role holds its own lease and attacks: a
row-level security policy on the lease table that calls its own function, a view in
place of the table, a trigger, functions that shadow every name the definer functions
call (in every schema the role can create in, pg_temp included), a column retyped to
its own type with an implicit cast, a forged lease row (another lease name, future
expiry), another pair's node role bound under its own lease, another pair's lease row
updated, and (the old way only) a table `schema` is about to create, made first.

Each also runs where the DBA set things up the OLD way: the supervisor's role owns the
lease tables (it created them) and may create objects in the schema. The payload, when
run as the fencer, would grant `pg_execute_server_program` and CREATEROLE to the
supervisor's role and lock pair 2's node out (what the old fence function allowed).

Afterwards: the supervisor's role has no new membership or attribute (pg_auth_members and
pg_roles compared before and after), no role outside pair 1 changed, pair 2's sessions
are alive, and the fence either refused with a reason naming the fix (the old way, and
again after the DBA re-ran `schema`) or did only what is legitimate (as printed: pair 1's
other role b locked out, nothing else), and pair 2's lease row is untouched."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from supervisor.lease.fence_sql import NOT_HOLDER, REFUSED, FenceSql
from tests.harness.fencedb import FenceDb, set_up
from tests.harness.pgserver import PgServer

pytestmark = pytest.mark.timeout(60)

Conn = psycopg.Connection[Any]


@dataclass
class World:
    one: FenceDb  # pair 1: the attacker's pair
    two: FenceDb  # pair 2: same table, node group and fencer
    tmp: Path
    sessions: list[Conn]  # pair 2's nodes, connected

    @property
    def sql(self) -> FenceSql:
        return FenceSql(self.one.schema, self.one.table)

    def lease(self) -> str:
        return FenceSql(self.one.schema, self.one.table).lease_table.as_string(None)


@pytest.fixture
def world(pg_server: PgServer, tmp_path: Path) -> Iterator[World]:
    if not pg_server.can_restart:
        pytest.skip("external database (CORDA_HA_TEST_DSN): cannot create roles")
    one = set_up(pg_server, tmp_path)
    sessions: list[Conn] = []
    try:
        two = one.second_pair(tmp_path)
        w = World(one, two, tmp_path, sessions)
        pg_server.execute(f"INSERT INTO {w.lease()} (lease_name, holder, instance, epoch, "
                          "renewed_at, expires_at) VALUES ('pair-2', 'c', 'inst-c', 3, "
                          "clock_timestamp(), clock_timestamp() + interval '1 hour')")
        for host in two.hosts:
            sessions.append(psycopg.connect(two.dsn(two.node_role(host)), autocommit=True))
        yield w
    finally:
        for s in sessions:
            s.close()
        one.drop()


def snapshot(w: World, *, row: bool = True) -> dict[str, Any]:
    """Every test role's attributes and memberships (from the catalogs), and pair 2's
    lease row (read as a superuser: never where the attacker owns the table, whose
    retyped column's cast would run the attacker's code as the reader)."""
    roles = [w.one.supervisor, w.two.supervisor, w.one.fencer, w.one.owner, w.one.group,
             *[w.one.node_role(h) for h in "abcd"]]
    server = w.one.server
    return {
        "attributes": server.execute(
            "SELECT rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, "
            "rolreplication, rolbypassrls FROM pg_roles WHERE rolname = ANY (%s) ORDER BY 1",
            (roles,)),
        "memberships": server.execute(
            "SELECT m.roleid::regrole::text, m.member::regrole::text, m.admin_option "
            "FROM pg_auth_members m WHERE m.member::regrole::text = ANY (%s) "
            "OR m.roleid::regrole::text = ANY (%s) ORDER BY 1, 2", (roles, roles)),
        "pair_2_row": server.execute(f"SELECT * FROM {w.lease()} WHERE lease_name = 'pair-2'")
        if row else None,
    }


def payload(w: World, schema: str) -> str:
    """The attacker's function: harmless as itself, an escalation as the fencer."""
    sup, victim = w.one.supervisor, w.two.node_role("c")
    steps = "\n".join(f"    BEGIN EXECUTE {s!r}; EXCEPTION WHEN others THEN NULL; END;" for s in (
        f"GRANT pg_execute_server_program TO {sup}", f"ALTER ROLE {sup} CREATEROLE",
        f"ALTER ROLE {victim} NOLOGIN"))
    return (f"CREATE OR REPLACE FUNCTION {schema}.evil() RETURNS boolean LANGUAGE plpgsql AS "
            f"$$\nBEGIN\n{steps}\n    RETURN true;\nEND $$")


def plant(conn: Conn, statements: list[str]) -> list[str]:
    """Run the attacker's statements one by one; what each did ("ok" or the error)."""
    done = []
    for statement in statements:
        try:
            conn.execute(statement.encode())
            done.append("ok")
        except psycopg.Error as e:
            done.append(f"{type(e).__name__}: {e.diag.message_primary}")
    return done


# ----------------------------------------------------------------------- the attacks

def rls_policy(w: World, conn: Conn) -> list[str]:
    return plant(conn, [payload(w, "public"),
                        f"ALTER TABLE {w.lease()} ENABLE ROW LEVEL SECURITY",
                        f"CREATE POLICY evil ON {w.lease()} USING (public.evil())"])


def view_in_place(w: World, conn: Conn) -> list[str]:
    return plant(conn, [payload(w, "public"),
                        f"ALTER TABLE {w.lease()} RENAME TO {w.one.table}_real",
                        f"CREATE VIEW {w.lease()} AS SELECT * FROM public.{w.one.table}_real "
                        "WHERE public.evil()"])


def trigger(w: World, conn: Conn) -> list[str]:
    return plant(conn, [
        payload(w, "public"),
        "CREATE OR REPLACE FUNCTION public.evil_trigger() RETURNS trigger LANGUAGE plpgsql "
        "AS $$ BEGIN PERFORM public.evil(); RETURN NEW; END $$",
        f"CREATE TRIGGER evil BEFORE INSERT OR UPDATE ON {w.lease()} FOR EACH ROW "
        "EXECUTE FUNCTION public.evil_trigger()"])


# what the definer functions call, with a signature each call could resolve to
SHADOWED = [("clock_timestamp", "", "timestamptz", "now()"),
            ("format", "a text", "text", "a"), ("format", "a text, b text", "text", "a"),
            ("pg_has_role", "a name, b oid, c text", "boolean", "false"),
            ("pg_has_role", "a oid, b name, c text", "boolean", "true"),
            ("pg_has_role", "a oid, b oid, c text", "boolean", "false"),
            ("has_schema_privilege", "a name, b oid, c text", "boolean", "false"),
            ("has_table_privilege", "a name, b oid, c text", "boolean", "false"),
            ("has_table_privilege", "a name, b regclass, c text", "boolean", "false"),
            ("to_regclass", "a text", "regclass", "NULL"),
            ("to_regprocedure", "a text", "regprocedure", "NULL"),
            ("pg_get_userbyid", "a oid", "name", "'x'"),
            ("current_setting", "a text", "text", "'170000'"),
            ("pg_terminate_backend", "a integer", "boolean", "true"),
            ("pg_terminate_backend", "a integer, b bigint", "boolean", "true"),
            ("pg_stat_clear_snapshot", "", "void", "NULL"),
            ("pg_sleep", "a double precision", "void", "NULL"),
            ("quote_literal", "a text", "text", "a"),
            ("format_type", "a oid, b integer", "text", "'text'"),
            ("pg_describe_object", "a oid, b oid, c integer", "text", "'x'")]


def shadowing(w: World, conn: Conn) -> list[str]:
    schemas = [r[0] for r in conn.execute(
        "SELECT nspname FROM pg_namespace WHERE has_schema_privilege(nspname, 'CREATE') "
        "AND nspname NOT LIKE 'pg_temp%%' AND nspname NOT LIKE 'pg_toast%%'").fetchall()]
    statements = [payload(w, "pg_temp")]
    for schema in [*schemas, "pg_temp"]:
        if schema != "pg_temp":
            statements.append(payload(w, schema))
        for name, args, returns, value in SHADOWED:
            statements.append(
                f"CREATE OR REPLACE FUNCTION {schema}.{name}({args}) RETURNS {returns} "
                f"LANGUAGE plpgsql AS $$ BEGIN PERFORM {schema}.evil(); "
                f"RETURN {value}; END $$")
    # relations the definers read, shadowed in pg_temp (searched after pg_catalog)
    for name in ("pg_roles", "pg_stat_activity", "pg_class", "pg_namespace", "pg_policy",
                 "pg_trigger", "pg_auth_members", "pg_depend", "pg_proc", "pg_attribute"):
        statements.append(f"CREATE TEMP VIEW {name} AS SELECT * FROM pg_catalog.{name} "
                          "WHERE pg_temp.evil()")
    return plant(conn, statements)


def retyped_column(w: World, conn: Conn) -> list[str]:
    return plant(conn, [
        payload(w, "public"),
        "CREATE TYPE public.lease_enum AS ENUM ('corda-node', 'pair-2')",
        "CREATE FUNCTION public.lease_text(public.lease_enum) RETURNS text LANGUAGE plpgsql "
        "AS $$ BEGIN PERFORM public.evil(); RETURN format('%s', $1); END $$",
        "CREATE CAST (public.lease_enum AS text) WITH FUNCTION "
        "public.lease_text(public.lease_enum) AS IMPLICIT",
        f"DROP POLICY corda_ha_access ON {w.lease()}",  # it uses the column
        f"ALTER TABLE {w.lease()} ALTER COLUMN lease_name TYPE public.lease_enum "
        "USING lease_name::text::public.lease_enum"])


def forged_lease(w: World, conn: Conn) -> list[str]:
    f, victim = w.sql, w.two.node_role("c")
    return plant(conn, [
        f"INSERT INTO {w.lease()} (lease_name, holder, instance, epoch, renewed_at, "
        "expires_at) VALUES ('forged', 'x', 'inst-x', 1, clock_timestamp(), "
        "clock_timestamp() + interval '1 hour')",
        f"SELECT {f.bind_fn.as_string(None)}('{victim}', 'forged', 'x')",
        f"INSERT INTO {f.binding.as_string(None)} (node_role, lease_name, machine_name) "
        f"VALUES ('{victim}', 'forged', 'x')"])


def other_pairs_role(w: World, conn: Conn) -> list[str]:
    f, victim = w.sql, w.two.node_role("c")
    return plant(conn, [
        f"SELECT {f.bind_fn.as_string(None)}('{victim}', 'corda-node', 'x')",
        f"UPDATE {f.binding.as_string(None)} SET lease_name = 'corda-node' "
        f"WHERE node_role = '{victim}'",
        f"INSERT INTO {f.binding.as_string(None)} (node_role, lease_name, machine_name) "
        f"VALUES ('{victim}', 'corda-node', 'x')"])


def other_pairs_row(w: World, conn: Conn) -> list[str]:
    return plant(conn, [f"UPDATE {w.lease()} SET instance = 'inst-x', epoch = epoch + 1, "
                        "expires_at = clock_timestamp() + interval '2 hours' "
                        "WHERE lease_name = 'pair-2'"])


def made_first(w: World, conn: Conn) -> list[str]:
    """A table `schema` creates and writes to, made first by the attacker (with a trigger
    that would run as the DBA when the script inserts its row): the old way's install
    has no access table yet."""
    access = w.sql.access_table.as_string(None)
    return plant(conn, [
        payload(w, "public"),
        "CREATE OR REPLACE FUNCTION public.evil_trigger() RETURNS trigger LANGUAGE plpgsql "
        "AS $$ BEGIN PERFORM public.evil(); RETURN NEW; END $$",
        f"CREATE TABLE {access} (lease_name text, supervisor_role name, "
        "PRIMARY KEY (lease_name, supervisor_role))",
        f"CREATE TRIGGER evil BEFORE INSERT ON {access} FOR EACH ROW "
        "EXECUTE FUNCTION public.evil_trigger()"])


ATTACKS: dict[str, Callable[[World, Conn], list[str]]] = {
    "rls_policy": rls_policy, "view_in_place": view_in_place, "trigger": trigger,
    "shadowing": shadowing, "retyped_column": retyped_column, "forged_lease": forged_lease,
    "other_pairs_role": other_pairs_role, "other_pairs_row": other_pairs_row,
    "made_first": made_first}
#: what `confirm` names once the DBA re-ran `schema` over the old way's leftovers
LEFTOVER = {"rls_policy": "DROP POLICY evil ON", "view_in_place": "is not a plain table",
            "trigger": "DROP TRIGGER evil ON",
            "retyped_column": "ALTER COLUMN lease_name TYPE text",
            "made_first": "exists but belongs to"}


def old_way(w: World) -> None:
    """What an install looked like when the supervisor's role created its tables: it owns
    them (and so may change them) and may create objects in the schema."""
    for t in (w.sql.lease_table, w.sql.member_table, w.sql.history_table):
        w.one.server.execute(f"ALTER TABLE {t.as_string(None)} OWNER TO {w.one.supervisor}")
    w.one.server.execute(f"GRANT CREATE ON SCHEMA public TO {w.one.supervisor}")


def fence(w: World, conn: Conn, lease: str = "corda-node", instance: str = "inst-a",
          epoch: int = 1, role: str | None = None, machine: str = "a") -> str | list[Any]:
    """The lock call, then one end call, on the attacker's own session; the refusal
    (its message) or the rows of both."""
    f = w.sql
    args = {"lease": lease, "epoch": epoch, "instance": instance,
            "role": role or w.one.node_role("a"), "machine": machine, "wait_ms": 500}
    try:
        rows = conn.execute(f.lock, args).fetchall()
        return rows + conn.execute(f.end, args).fetchall()
    except psycopg.Error as e:
        assert e.sqlstate in (REFUSED, NOT_HOLDER), e
        return f"{e.sqlstate}: {e.diag.message_primary}"


def confirm(w: World, conn: Conn, role: str | None = None, machine: str = "a",
            lease: str = "corda-node") -> str | None:
    row = conn.execute(w.sql.confirm, {"lease": lease, "role": role or w.one.node_role("a"),
                                       "machine": machine}).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def assert_nothing_gained(w: World, before: dict[str, Any], *, b_locked: bool,
                          row_untouched: bool = True) -> None:
    after = snapshot(w, row=row_untouched)
    b = w.one.node_role("b")
    if b_locked:  # the one legitimate change: pair 1's other node role is locked out
        before["attributes"] = [(*r[:5], False, *r[6:]) if r[0] == b else r
                                for r in before["attributes"]]
    assert after["attributes"] == before["attributes"]
    assert after["memberships"] == before["memberships"]
    if row_untouched:
        assert after["pair_2_row"] == before["pair_2_row"]
    for s in w.sessions:  # pair 2's nodes were not disconnected
        assert s.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.parametrize("name", ATTACKS)
def test_attack_as_schema_prints_it(world: World, name: str) -> None:
    """As printed: whatever the attack needed ownership or CREATE for is denied; the
    fence does exactly the legitimate thing; the role gains nothing."""
    w = world
    with psycopg.connect(w.one.dsn(w.one.supervisor), autocommit=True) as conn:
        conn.execute(f"INSERT INTO {w.lease()} (lease_name, holder, instance, epoch, "
                     "renewed_at, expires_at) VALUES ('corda-node', 'a', 'inst-a', 1, "
                     "clock_timestamp(), clock_timestamp() + interval '1 hour')")
        before = snapshot(w)
        done = ATTACKS[name](w, conn)
        print(f"{name}: {done}")
        if name not in ("shadowing", "other_pairs_row"):  # (those run, to no effect)
            assert "ok" not in done, done  # every step was denied
        assert confirm(w, conn) is None
        result = fence(w, conn)
        assert isinstance(result, list), result
        assert {(r[0], r[1]) for r in result} == {
            (w.one.node_role("a"), "can log in"), (w.one.node_role("b"), "locked")}
        if name in ("forged_lease", "other_pairs_row"):  # acting for another lease
            lease = "forged" if name == "forged_lease" else "pair-2"
            # as the forged row's holder, or as pair 2's real holder (instance and epoch
            # known), with pair 2's role on pair 2's machine
            refused = (fence(w, conn, lease="forged", instance="inst-x")
                       if name == "forged_lease" else
                       fence(w, conn, lease="pair-2", instance="inst-c", epoch=3,
                             role=w.two.node_role("c"), machine="c"))
            assert refused == (f"{REFUSED}: database.user {w.one.supervisor} may not act "
                               f"for lease '{lease}': INSERT INTO " +
                               w.sql.access_table.as_string(None) +
                               f" (lease_name, supervisor_role) VALUES ('{lease}', "
                               f"'{w.one.supervisor}') (printed by `corda-ha-supervisor "
                               "schema`)"), refused
        if name == "other_pairs_role":  # claiming pair 2's role as its own
            problem = confirm(w, conn, role=w.two.node_role("c"), machine="c")
            assert problem is not None and "bound to lease 'pair-2'" in problem
    assert_nothing_gained(w, before, b_locked=True)


@pytest.mark.parametrize("name", ATTACKS)
def test_attack_where_the_supervisor_owns_the_tables(world: World, name: str) -> None:
    """The old way: the attack is planted; confirm and the fence refuse, naming the
    ownership fix; once the DBA re-ran `schema`, they name what the attack left behind
    (or the script itself stops); the role gains nothing either way."""
    w = world
    old_way(w)
    if name == "made_first":  # an install from before the access table
        w.one.server.execute(f"DROP TABLE {w.sql.access_table.as_string(None)} CASCADE")
    with psycopg.connect(w.one.dsn(w.one.supervisor), autocommit=True) as conn:
        conn.execute(f"INSERT INTO {w.lease()} (lease_name, holder, instance, epoch, "
                     "renewed_at, expires_at) VALUES ('corda-node', 'a', 'inst-a', 1, "
                     "clock_timestamp(), clock_timestamp() + interval '1 hour')")
        before = snapshot(w, row=False)
        done = ATTACKS[name](w, conn)
        print(f"{name}: {done}")
        problem = confirm(w, conn)
        assert problem is not None, done
        owner = f"OWNER TO {w.one.owner}"
        assert f"database.user {w.one.supervisor} owns" in problem and owner in problem, problem
        refused = fence(w, conn)
        assert refused == f"{REFUSED}: {problem}"
        assert_nothing_gained(w, before, b_locked=False, row_untouched=False)
        try:  # the DBA fixes the install: runs what `schema` prints again, for both hosts
            for host in w.one.hosts:
                w.one.install(w.tmp, host)
            script_error = None
        except psycopg.Error as e:
            script_error = str(e)
        after_fix = confirm(w, conn)
        print(f"{name}: after re-running schema: {script_error or after_fix}")
        if name in LEFTOVER:
            assert LEFTOVER[name] in (script_error or after_fix or ""), (script_error,
                                                                         after_fix)
            assert isinstance(fence(w, conn), str)
        else:
            assert script_error is None and after_fix is None
            result = fence(w, conn)
            assert isinstance(result, list), result
        assert_nothing_gained(w, before, b_locked=name not in LEFTOVER, row_untouched=False)
