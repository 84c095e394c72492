"""The database the fence's predicate scenarios run in (`tests/harness/fencecall.py` runs them).

A world is a database of its own on a server where roles may be created, with two pairs
in one lease table (pair 1: hosts a, b, lease "corda-node", supervisor role `sup`; pair
2: hosts c, d, lease "pair-2", role `sup2`), each host installed exactly as
`corda-ha-supervisor schema` prints it (`tests/fencedb.py`), lease tables in schema
`fp_<suffix>`. It is set up once and shared by every scenario (`tests/mutants/fencecases.py`),
each of which runs in a transaction rolled back afterwards. `kept` keeps one for a whole
generated run's job: found again, it is installed again from the current (maybe mutated)
source, as a DBA runs `schema` again, and not dropped.

**The clock.** In the world's database only, `pg_catalog.clock_timestamp()` is replaced
by a scripted clock (the fence functions run with `search_path = pg_catalog, pg_temp`,
so no schema of ours can shadow it): each read takes the next number of the sequence
`corda_ha_test_clock.reads` and answers the time of the last script row at or before
it (`corda_ha_test_clock.script`: after which read, what time, an optional statement
run by that read), or the real time without script rows. So a scenario holds the clock
at `T0` (a lease that expires exactly now is exact), moves it at a given read (the lease
runs out between the end call's first holder check and its check before a signal), or
drives it from outside while a call waits.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from supervisor.lease.fence import roles_ddl
from supervisor.lease.fence_sql import FenceSql
from tests.harness.db_writer import create_table
from tests.harness.fencedb import FenceDb
from tests.harness.pgserver import PgServer

T0 = datetime(2030, 1, 1, tzinfo=UTC)
LEASE, LEASE2 = "corda-node", "pair-2"
CLOCK = "corda_ha_test_clock"

CLOCK_DDL = (
    f"CREATE SCHEMA {CLOCK}",
    f"CREATE SEQUENCE {CLOCK}.reads",
    f"CREATE TABLE {CLOCK}.script (after bigint PRIMARY KEY, t timestamptz NOT NULL, "
    "run text)",
    f"CREATE FUNCTION {CLOCK}.read() RETURNS timestamptz LANGUAGE plpgsql VOLATILE "
    "SECURITY DEFINER SET search_path = pg_catalog COST 1000 AS $$\n"
    "DECLARE\n"
    f"    n bigint := nextval('{CLOCK}.reads');\n"
    "    s record;\n"
    "BEGIN\n"
    f"    SELECT * INTO s FROM {CLOCK}.script WHERE after < n ORDER BY after DESC LIMIT 1;\n"
    "    IF NOT FOUND THEN\n"
    "        RETURN timeofday()::timestamptz;\n"
    "    END IF;\n"
    "    IF s.run IS NOT NULL AND s.after = n - 1 THEN\n"
    "        EXECUTE s.run;\n"
    "    END IF;\n"
    "    RETURN s.t;\n"
    "END $$",
    # A built-in function is called by its OID without a look at pg_proc, but the planner
    # inlines a one-expression SQL function wherever it is called: this database's
    # clock_timestamp() becomes a call of the script.
    "CREATE OR REPLACE FUNCTION pg_catalog.clock_timestamp() RETURNS timestamptz "
    f"LANGUAGE sql VOLATILE AS 'SELECT {CLOCK}.read()'",
)


def at(offset: float | None) -> datetime | None:
    return None if offset is None else T0 + timedelta(seconds=offset)


def offset(value: Any) -> Any:
    return (value - T0).total_seconds() if isinstance(value, datetime) else value


@dataclass
class World:
    server: PgServer  # the cluster, as its superuser
    db: PgServer  # the world's database, as the superuser
    one: FenceDb
    two: FenceDb
    version: int  # server_version_num
    names: dict[str, str] = field(default_factory=dict)

    @property
    def fence(self) -> FenceSql:
        return FenceSql(self.one.schema, self.one.table)

    def role(self, key: str) -> str:
        """A role by its key in the scenarios ("a", "sup", ...)."""
        return self.names[key]

    def fmt(self, text: str) -> str:
        return text.format(**self.names)

    def dsn(self, role: str) -> str:
        return make_conninfo(self.db.dsn, user=role)


def may_create_roles(server: PgServer) -> bool:
    """Roles are cluster-wide: only a throwaway server (ours, or one the generated run
    started and names in `CORDA_HA_TEST_DSN_THROWAWAY=1`) gets them."""
    return server.can_restart or os.environ.get("CORDA_HA_TEST_DSN_THROWAWAY") == "1"


ENV_KEPT = "CORDA_HA_TEST_FENCE_WORLD"  # a generated run's job: keep its world by this name


def build(server: PgServer, tmp: Path, suffix: str | None = None) -> World:
    """A world on `server` (see the module docstring); `suffix` names it."""
    suffix = suffix or uuid.uuid4().hex[:8]
    name = f"fp_{suffix}"
    server.execute(f"CREATE DATABASE {name}")
    db = _database(server, name)
    try:
        with psycopg.connect(db.dsn, autocommit=True) as conn:
            for ddl in CLOCK_DDL:
                conn.execute(ddl.encode())
            conn.execute(f"GRANT USAGE ON SCHEMA {CLOCK} TO PUBLIC".encode())
        w = _world(server, db, suffix)
        one = w.one
        with psycopg.connect(db.dsn, autocommit=True) as conn:
            for line in roles_ddl(node_group=one.group, fencer=one.fencer,
                                  node_roles=[one.node_role("a"), one.node_role("b")]):
                conn.execute(line.encode())
            conn.execute(f'CREATE SCHEMA "{name}"'.encode())
            conn.execute(f'GRANT CREATE, USAGE ON SCHEMA "{name}" TO {one.group}'.encode())
            conn.execute(f"CREATE ROLE {one.supervisor} LOGIN".encode())
        for host in one.hosts:  # as tests.harness.fencedb.set_up, under a name of our own
            one.install(tmp, host)
        create_table(db.dsn, one.writes, one.group)
        one.second_pair(tmp)
    except BaseException:
        drop_database(server, name)
        raise
    return w


def _database(server: PgServer, name: str) -> PgServer:
    params = conninfo_to_dict(server.dsn)
    params["dbname"] = name
    return PgServer(make_conninfo("", **params))


def _world(server: PgServer, db: PgServer, suffix: str) -> World:
    """The World of the names `suffix` gives (its database made or not)."""
    name = f"fp_{suffix}"
    one = FenceDb(server=db, suffix=suffix, table=f"lease_{suffix}", group=f"nodes_{suffix}",
                  fencer=f"fencer_{suffix}", owner=f"owner_{suffix}", supervisor=f"sup_{suffix}",
                  writes=f"writes_{suffix}", schema=name)
    two = FenceDb(**{**one.__dict__, "lease_name": "pair-2", "hosts": ("c", "d"),
                     "supervisor": f"sup2_{suffix}"})
    version = int(server.execute("SHOW server_version_num")[0][0])
    w = World(server, db, one, two, version)
    f = w.fence
    w.names = {
        "a": one.node_role("a"), "b": one.node_role("b"), "c": one.node_role("c"),
        "d": one.node_role("d"), "e": one.node_role("e"), "x": one.node_role("x"),
        "ghost": f"ghost_{suffix}", "priv": f"priv_{suffix}", "dev": f"dev_{suffix}",
        "sup": one.supervisor, "sup2": two.supervisor, "fencer": one.fencer,
        "owner": one.owner, "group": one.group, "schema": name, "other": f"{name}_x",
        "writes": one.writes, "suffix": suffix, "table": one.table,
        "T0": f"timestamptz '{T0.isoformat()}'",
        **{k: getattr(f, k).as_string(None) for k in (
            "lease_table", "member_table", "history_table", "access_table", "binding",
            "confirm_fn", "lock_fn", "end_fn", "bind_fn")},
    }
    return w


def drop_database(server: PgServer, name: str) -> None:
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)".encode())


def drop(w: World) -> None:
    """The database, then the roles (cluster-wide)."""
    drop_database(w.server, w.names["schema"])
    with psycopg.connect(w.server.dsn, autocommit=True) as conn:
        for key in ("a", "b", "c", "d", "sup", "sup2", "fencer", "owner", "group"):
            with contextlib.suppress(psycopg.Error):
                conn.execute(f"DROP ROLE IF EXISTS {w.role(key)}".encode())


@contextlib.contextmanager
def world(server: PgServer, tmp: Path) -> Iterator[World]:
    """A world for the block: `kept` when `CORDA_HA_TEST_FENCE_WORLD` names one (a
    generated run's job), else a new one, dropped afterwards."""
    name = os.environ.get(ENV_KEPT)
    if name:
        yield kept(server, tmp, name)
        return
    w = build(server, tmp)
    try:
        yield w
    finally:
        drop(w)


def kept(server: PgServer, tmp: Path, name: str) -> World:
    """The world called `name` on `server`: found and installed again from the current
    source (all four hosts, as `schema` prints it), or built; never dropped."""
    suffix = f"k{name}"
    if not server.execute("SELECT 1 FROM pg_database WHERE datname = %s", (f"fp_{suffix}",)):
        return build(server, tmp, suffix)
    w = _world(server, _database(server, f"fp_{suffix}"), suffix)
    for pair in (w.one, w.two):
        for host in pair.hosts:
            pair.install(tmp, host)
    return w
