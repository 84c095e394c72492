"""Corda's own guard kept on, and fast (issue 8 item 2): before our node starts, the
holder makes Corda's `node_mutual_exclusion` row takeable, only while it holds the
lease, and leaves the row alone otherwise. Real PostgreSQL; the row is Corda's shape."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import pytest

from supervisor.config import DatabaseConfig
from supervisor.identity import Identity
from supervisor.lease import PostgresLeaseStore
from tests.cluster import Cluster
from tests.pgserver import PgServer

pytestmark = pytest.mark.timeout(60)

W = 5.0


def corda_row(pg: PgServer, schema: str, machine: str, version: int = 7,
              fresh_for: float = 0.0) -> None:
    """Corda's row of `machine`, refreshed now (or `fresh_for` s in the future, so that it
    still looks fresh however long a loaded machine takes to start a supervisor)."""
    pg.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    pg.execute(f'''CREATE TABLE IF NOT EXISTS "{schema}".node_mutual_exclusion (
        mutual_exclusion_id char(1) PRIMARY KEY, machine_name varchar(255) NOT NULL,
        pid varchar(255) NOT NULL, mutual_exclusion_timestamp timestamp NOT NULL,
        version bigint)''')
    pg.execute(f'INSERT INTO "{schema}".node_mutual_exclusion VALUES '
               f"('X', %s, '4242', now() + make_interval(secs => %s), %s)",
               [machine, fresh_for, version])


def age_and_version(pg: PgServer, schema: str) -> tuple[float, int]:
    ((age, version),) = pg.execute(
        f'SELECT extract(epoch FROM now() - mutual_exclusion_timestamp)::float8, version '
        f'FROM "{schema}".node_mutual_exclusion')
    return float(age), int(version)


@pytest.fixture
def schema() -> str:
    return f"cg_{uuid.uuid4().hex[:10]}"


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_holder_makes_a_fresh_foreign_row_takeable_and_nothing_else(
        db_config: DatabaseConfig, pg_server: PgServer, schema: str) -> None:
    db = dataclasses.replace(db_config, schema=schema)
    corda_row(pg_server, schema, "other-host")

    async def main() -> None:
        me = PostgresLeaseStore(db, Identity.for_this_process("this-host"), W)
        try:
            await me.ensure_schema(5)
            snap = await me.observe(5)
            epoch = await me.acquire(None, server=snap.server, timeout=5)
            assert epoch == 1
            assert await me.prepare_corda_guard(epoch + 1, 5) == "not_holder"
            assert age_and_version(pg_server, schema)[0] < 1.0  # untouched
            assert await me.prepare_corda_guard(epoch, 5) == "made_takeable"
            age, version = age_and_version(pg_server, schema)
            assert age > W and version == 7  # takeable by Corda's CAS; version kept for it
            assert await me.prepare_corda_guard(epoch, 5) == "takeable"
            pg_server.execute(f'UPDATE "{schema}".node_mutual_exclusion SET machine_name = '
                              "'this-host', mutual_exclusion_timestamp = now()")
            assert await me.prepare_corda_guard(epoch, 5) == "own"
            assert age_and_version(pg_server, schema)[0] < 1.0
            assert await me.release(epoch, 5)
            assert await me.prepare_corda_guard(epoch, 5) == "not_holder"
        finally:
            await me.close()

    run(main())


def test_no_corda_table_is_absent(db_config: DatabaseConfig, schema: str) -> None:
    db = dataclasses.replace(db_config, schema=schema)

    async def main() -> None:
        me = PostgresLeaseStore(db, Identity.for_this_process("h"), W)
        try:
            await me.ensure_schema(5)
            snap = await me.observe(5)
            epoch = await me.acquire(None, server=snap.server, timeout=5)
            assert epoch is not None
            assert await me.prepare_corda_guard(epoch, 5) == "absent"
        finally:
            await me.close()

    run(main())


def test_the_supervisor_prepares_corda_before_its_node_starts(
        pair: Cluster, pg_server: PgServer) -> None:
    """End to end: the row of the other machine is made takeable before the node starts
    (the log says so first), so a Corda node would take it at once."""
    corda_row(pg_server, "public", "the-old-host", version=3, fresh_for=60)
    try:
        a = pair.add("a")
        a.start()
        made = a.wait_event("corda_guard_made_takeable", 15)
        started = a.wait_event("node_started", 5)
        assert a.lines.index(made) < a.lines.index(started)
        age, version = age_and_version(pg_server, "public")
        assert age > 2.0 and version == 3  # W of the harness is 2 s
    finally:
        pg_server.execute("DROP TABLE IF EXISTS public.node_mutual_exclusion")
