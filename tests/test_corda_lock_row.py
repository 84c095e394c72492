"""Corda's own guard kept on, and fast where it is safe: the holder makes Corda's
`node_mutual_exclusion` row takeable only while it holds the lease and only once the
database fence of its acquisition completed; otherwise it leaves the row to Corda's own
guard and says how long that will keep its node out. Real PostgreSQL; the row is
Corda's shape."""

from __future__ import annotations

import contextlib
import dataclasses
import uuid

import psutil
import pytest

from supervisor.config import DatabaseConfig
from supervisor.lease import PostgresLeaseStore
from supervisor.node.machine import this_process
from tests.harness import jvmnode
from tests.harness.aio import run
from tests.harness.cluster import Cluster
from tests.harness.config import supervisor_config
from tests.harness.cordapair import add_corda_host
from tests.harness.pgserver import PgServer
from tests.harness.proc import pid_alive, wait_until

pytestmark = pytest.mark.timeout(150)

W = 5.0
W_HARNESS = 2.0  # waitInterval of tests/harness/host.py's hosts


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


def test_holder_makes_a_fresh_foreign_row_takeable_and_nothing_else(
        db_config: DatabaseConfig, pg_server: PgServer, schema: str) -> None:
    db = dataclasses.replace(db_config, schema=schema)
    corda_row(pg_server, schema, "other-host")

    async def main() -> None:
        me = PostgresLeaseStore(db, this_process("this-host"), W)
        try:
            await me.ensure_schema(5)
            snap = await me.observe(5)
            epoch = await me.acquire(None, server=snap.server, timeout=5)
            assert epoch == 1
            assert await me.prepare_corda_row(epoch + 1, 5) == "not_holder"
            assert age_and_version(pg_server, schema)[0] < 1.0  # untouched
            assert await me.prepare_corda_row(epoch, 5) == "made_takeable"
            age, version = age_and_version(pg_server, schema)
            assert age > W and version == 7  # takeable by Corda's CAS; version kept for it
            assert await me.prepare_corda_row(epoch, 5) == "takeable"
            pg_server.execute(f'UPDATE "{schema}".node_mutual_exclusion SET machine_name = '
                              "'this-host', mutual_exclusion_timestamp = now()")
            assert await me.prepare_corda_row(epoch, 5) == "own"
            assert age_and_version(pg_server, schema)[0] < 1.0
            assert await me.release(epoch, 5)
            assert await me.prepare_corda_row(epoch, 5) == "not_holder"
        finally:
            await me.close()

    run(main())


def test_no_corda_table_is_absent(db_config: DatabaseConfig, schema: str) -> None:
    db = dataclasses.replace(db_config, schema=schema)

    async def main() -> None:
        me = PostgresLeaseStore(db, this_process("h"), W)
        try:
            await me.ensure_schema(5)
            snap = await me.observe(5)
            epoch = await me.acquire(None, server=snap.server, timeout=5)
            assert epoch is not None
            assert await me.prepare_corda_row(epoch, 5) == "absent"
        finally:
            await me.close()

    run(main())


def test_without_a_database_fence_cordas_row_is_left_alone(
        pair: Cluster, pg_server: PgServer) -> None:
    """End to end, fencing off: holding the lease does not prove the old node is dead (a
    frozen host's node may continue), so Corda's row of the other machine is left to
    Corda's own guard, and the log says how long it will keep our node out."""
    corda_row(pg_server, "public", "the-old-host", version=3, fresh_for=60)
    try:
        before = age_and_version(pg_server, "public")
        a = pair.add("a")
        a.start()
        left = a.wait_event("corda_lock_row_left_alone", 15)
        started = a.wait_event("node_started", 5)
        assert a.lines.index(left) < a.lines.index(started)
        assert left["outcome"] == "not_fenced" and left["holder"] == "the-old-host"
        assert left["wait"] == pytest.approx(W_HARNESS - left["age"], abs=0.01)
        assert not a.events("corda_lock_row_made_takeable")
        age, version = age_and_version(pg_server, "public")
        assert version == 3 and age < before[0] + 30, "the row was moved"
    finally:
        pg_server.execute("DROP TABLE IF EXISTS public.node_mutual_exclusion")


def test_a_frozen_hosts_node_that_keeps_its_row_fresh_keeps_the_new_node_out(
        pair: Cluster, pg_server: PgServer) -> None:
    """Fencing off, the JVM stand-in as the node with Corda's guard on: host a's
    supervisor and guard are frozen while its JVM runs on, refreshing Corda's row. b takes
    the lease after W, but its node must not become master while a's refreshes: b leaves
    Corda's row alone, and Corda's guard refuses b's node. (Setting the row back made b's
    node master at once: two masters for up to a second.) Once a's guard runs again and
    kills its JVM, b's node becomes master."""
    jvmnode.require()
    schema = f"cg_{uuid.uuid4().hex[:10]}"
    pg_server.execute(f'CREATE SCHEMA "{schema}"')
    patient = supervisor_config(restart={"maxCrashes": 20})  # b's refused starts: no loop
    a = add_corda_host(pair, "a", schema, extra_conf=patient)
    b = add_corda_host(pair, "b", schema, extra_conf=patient)
    row = f'SELECT machine_name FROM "{schema}".node_mutual_exclusion'
    a.start()
    a.wait_event("node_ready", 60)
    jvm_a = a.wait_node_up(5)
    b.start()
    b.wait_event("lease_seen", 20, match=lambda e: e["holder"] == "a")
    guard = psutil.Process(jvm_a).parent()
    assert guard is not None and guard.pid != a.supervisor_pid()
    frozen = [psutil.Process(a.supervisor_pid()), guard]  # not the JVM
    for p in frozen:
        p.suspend()
    try:
        mark = b.mark()
        b.wait_event("lease_acquired", 20, since=mark)
        left = b.wait_event("corda_lock_row_left_alone", 5, since=mark)
        assert left["holder"] == "a" and left["outcome"] == "not_fenced", left
        b.no_event("node_ready", 5.0, since=mark)  # a's JVM refreshes its row all along
        assert pid_alive(jvm_a)
        assert pg_server.execute(row) == [("a",)]
        assert jvmnode.FAILED_MASTER in b.output(), "b's node was not even refused"
    finally:
        for p in frozen:
            with contextlib.suppress(psutil.Error):
                p.resume()
    wait_until(lambda: not pid_alive(jvm_a), 20, message="a's guard kills its JVM")
    b.wait_event("node_ready", 60, since=mark)
    assert pg_server.execute(row) == [("b",)]
