"""Database fencing with the JVM stand-in as the node: each host's node logs in as a
role of its own (Corda's `dataSource.user`), as fencing needs, and the roles are set up
exactly as `corda-ha-supervisor schema` prints them.

What only a Corda-shaped pair shows: the node of host a creates Corda's tables at its
first start, so without more they would belong to a's role and b's node could not use
them after a failover. Each node role acts as the node group (`SET role`), so the
tables are the group's. And a JDBC session of a frozen JVM is ended by the fence; the
JVM, continued, finds its database connection gone and exits 1 without touching
Corda's row again, and its role cannot log in."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest

from tests.harness import jvmnode
from tests.harness.cluster import Cluster
from tests.harness.config import supervisor_config
from tests.harness.cordapair import (
    CordaHost,
    add_corda_host,
    assert_corda_row_prepared,
    never_waited,
)
from tests.harness.fencedb import FenceDb, set_up
from tests.harness.pgserver import PgServer
from tests.harness.proc import pid_alive, wait_until

pytestmark = pytest.mark.timeout(150)

CORDA_TABLE = "node_mutual_exclusion"


@pytest.fixture
def corda_fdb(pg_server: PgServer, tmp_path: Path) -> Iterator[FenceDb]:
    if not pg_server.can_restart:
        pytest.skip("external database (CORDA_HA_TEST_DSN): cannot create roles")
    db = set_up(pg_server, tmp_path, schema=f"corda_{uuid.uuid4().hex[:8]}")
    try:
        yield db
    finally:
        db.drop()


# (U, W, stopTimeout) in ms: the lab's, and Corda's 20:40 ratio scaled down with a stop
# timeout longer than a lost lease leaves, as a JVM's
TIMINGS = {"lab": (500, 2000, 500), "corda-ratio": (2000, 4000, 3000)}


def fenced_corda_host(pair: Cluster, fdb: FenceDb, name: str,
                      timing: tuple[int, int, int]) -> CordaHost:
    """A Corda host whose node logs in as its own role (node.conf's dataSource.user, the
    fencing nodeRole by default); the supervisor as the least-privilege role."""
    assert fdb.schema is not None
    update_ms, wait_ms, stop_ms = timing
    return add_corda_host(pair, name, fdb.schema, node_dsn=fdb.dsn(fdb.node_role(name)),
                          update_ms=update_ms, wait_ms=wait_ms, stop_ms=stop_ms,
                          extra_conf=supervisor_config(
                              database={"url": f"postgresql://{fdb.server.host}:"
                                               f"{fdb.server.port}/postgres",
                                        "user": fdb.supervisor, "table": fdb.table,
                                        "schema": fdb.schema},
                              fencing={"nodeGroup": fdb.group, "fencerRole": fdb.fencer,
                                       "required": True}))


@pytest.mark.parametrize("timing", TIMINGS.values(), ids=TIMINGS.keys())
def test_a_frozen_jvm_node_is_fenced_and_the_other_role_uses_cordas_tables(
        pair: Cluster, corda_fdb: FenceDb, timing: tuple[int, int, int]) -> None:
    jvmnode.require()
    fdb = corda_fdb
    corda_row = f'SELECT machine_name, version FROM "{fdb.schema}".{CORDA_TABLE}'
    a, b = (fenced_corda_host(pair, fdb, "a", timing),
            fenced_corda_host(pair, fdb, "b", timing))
    a.start()
    a.wait_event("node_ready", 60)
    jvm_a = a.wait_node_up(5)
    owner = fdb.server.execute("SELECT tableowner FROM pg_tables WHERE schemaname = %s "
                               "AND tablename = %s", (fdb.schema, CORDA_TABLE))
    assert owner == [(fdb.group,)], "Corda's table must belong to the node group"
    # the DBA's one step once Corda created its table (printed by `schema`)
    fdb.server.execute(f'GRANT SELECT, UPDATE ON "{fdb.schema}".{CORDA_TABLE} '
                       f"TO {fdb.supervisor}")
    b.start()
    b.wait_event("lease_seen", 20, match=lambda e: e["holder"] == "a")
    b.wait_event("fencing_ready", 20)

    frozen = a.tree()  # supervisor, guard and JVM: a paused VM
    for p in frozen:
        p.suspend()
    try:
        mark = b.mark()
        b.wait_event("node_ready", 60, since=mark)
        fenced = b.wait_event("database_fenced", 1, since=mark)
        assert fenced["roles"][fdb.node_role("a")] == "locked", fenced
        assert fenced["sessions_ended"] >= 1, fenced  # the frozen JVM's JDBC session
        never_waited(b)  # b's node, another role, took Corda's row in a's table at once
        assert_corda_row_prepared(b, since=mark)  # the supervisor's role may touch the row
        [(holder, version)] = fdb.server.execute(corda_row)
        assert holder == "b"

        psutil.Process(jvm_a).resume()  # the old JVM alone continues: its guard stays frozen
        wait_until(lambda: not pid_alive(jvm_a), 20, message="a's continued JVM exits")
        record = a.node_record(jvm_a)
        assert record.get("exit") == 1, record
        [(holder, later)] = fdb.server.execute(corda_row)
        assert holder == "b" and later >= version  # only b's node refreshed it since
        with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):
            psycopg.connect(fdb.dsn(fdb.node_role("a")), connect_timeout=5).close()
    finally:
        for p in frozen:
            with contextlib.suppress(psutil.Error):
                p.resume()
    wait_until(lambda: "Database connection down" in a.output(), 20,
               message="a's supervisor relays its node's last words")
    # a's supervisor, continued, lost the lease: it becomes the standby; b's node runs on
    a.wait_event("lease_seen", 30, match=lambda e: e["holder"] == "b")
    assert not b.events("node_exited")
    print(f"fenced a frozen JVM: {fenced['sessions_ended']} session(s) ended in "
          f"{fenced['seconds']} s, {fenced['calls']} call(s)")
