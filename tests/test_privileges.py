"""The privilege probe (`supervisor.lease.privileges`), on a database set up exactly as
`schema` prints it: a role granted all of it lacks nothing; each privilege taken away
(one at a time) is named with its table and the statement that gives it back, and that
statement really does; the probe changes nothing; `run` refuses to contend (exit 78)
when a table exists but a grant is missing, naming the table, the privilege and the
GRANT. Real PostgreSQL, real roles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import psycopg
import pytest

from supervisor.lease import PostgresLeaseStore
from supervisor.lease.fence_sql import CONFIRM_ARGS, END_ARGS, LOCK_ARGS, FenceSql
from supervisor.lease.ownership import ROW_PRIVILEGES, OwnedTables, q
from supervisor.lease.privileges import Missing, ProbeTarget, probe
from supervisor.node.machine import this_process
from tests.harness.aio import run
from tests.harness.cli import assert_clean, run_cli, run_to_exit
from tests.harness.cluster import Cluster
from tests.harness.config import Raw, supervisor_config
from tests.harness.fencedb import FenceDb, set_up
from tests.harness.host import http_get
from tests.harness.pgserver import PgServer
from tests.harness.proc import Reaper, wait_until

pytestmark = pytest.mark.timeout(90)


def missing(db: FenceDb, tmp_path: Path, *, fencing: bool = True) -> list[Missing]:
    """The probe through the store, as host a's supervisor role."""
    config = db.load(tmp_path, "a", fencing=fencing)
    store = PostgresLeaseStore(config.database, this_process("a"), 2.0)

    async def body() -> list[Missing]:
        try:
            return await store.missing_privileges(fencing=fencing, fencing_required=True,
                                                  timeout=5.0)
        finally:
            await store.close()

    return run(body())


def as_dba(db: FenceDb, statement: str) -> None:
    with psycopg.connect(db.server.dsn, autocommit=True) as conn:
        conn.execute(statement.encode())


def test_a_role_granted_what_schema_prints_lacks_nothing(fdb: FenceDb, tmp_path: Path) -> None:
    assert missing(fdb, tmp_path) == []
    assert missing(fdb, tmp_path, fencing=False) == []


def test_the_probe_changes_nothing(fdb: FenceDb, tmp_path: Path) -> None:
    """Every statement of the probe runs in a read-only session (a write would fail)."""
    as_dba(fdb, f"REVOKE UPDATE ON {fdb.table} FROM {fdb.supervisor}")
    target = ProbeTarget(schema=None, table=fdb.table, lease_name=fdb.lease_name,
                         fencing=True)

    async def body() -> list[Missing]:
        conn = await psycopg.AsyncConnection.connect(
            fdb.dsn(fdb.supervisor), autocommit=True,
            options="-c default_transaction_read_only=on")
        async with conn:
            return await probe(conn, target)

    found = run(body())
    assert [(m.object, m.privilege) for m in found] == [(f'table "{fdb.table}"', "UPDATE")]


ROW_CASES = [(key, p) for key, privileges, _ in ROW_PRIVILEGES for p in privileges]


@pytest.mark.parametrize(("key", "privilege"), ROW_CASES,
                         ids=[f"{k}-{p}" for k, p in ROW_CASES])
def test_each_row_privilege_taken_away_is_named_with_its_grant(
        fdb: FenceDb, tmp_path: Path, key: str, privilege: str) -> None:
    table = OwnedTables.of(None, fdb.table).by_key(key)
    as_dba(fdb, f"REVOKE {privilege} ON {q(table)} FROM {fdb.supervisor}")
    found = missing(fdb, tmp_path)
    assert len(found) == 1, found
    m = found[0]
    assert m.blocking and m.role == fdb.supervisor
    assert m.object == f"table {q(table)}" and m.privilege == privilege
    assert m.fix is not None
    assert m.fix.startswith("GRANT ") and q(table) in m.fix and fdb.supervisor in m.fix
    text = str(m)
    assert q(table) in text and privilege in text and m.fix in text
    as_dba(fdb, m.fix)  # the statement named gives it back
    assert missing(fdb, tmp_path) == []


def test_a_missing_access_row_is_named_with_its_insert(fdb: FenceDb, tmp_path: Path) -> None:
    access = OwnedTables.of(None, fdb.table).access
    as_dba(fdb, f"DELETE FROM {q(access)} WHERE supervisor_role = '{fdb.supervisor}'")
    found = missing(fdb, tmp_path)
    assert [m.privilege for m in found] == ["an access row"], found
    assert str(found[0].fix).startswith(f"INSERT INTO {q(access)}")
    as_dba(fdb, str(found[0].fix))
    assert missing(fdb, tmp_path) == []


FENCE_CASES = ["confirm", "lock", "end", "binding"]


@pytest.mark.parametrize("what", FENCE_CASES)
def test_each_fencing_privilege_taken_away_is_named(fdb: FenceDb, tmp_path: Path,
                                                    what: str) -> None:
    f = FenceSql(None, fdb.table)
    target = {"confirm": q(f.confirm_fn) + CONFIRM_ARGS, "lock": q(f.lock_fn) + LOCK_ARGS,
              "end": q(f.end_fn) + END_ARGS, "binding": q(f.binding)}[what]
    kind = "TABLE" if what == "binding" else "FUNCTION"
    privilege = "SELECT" if what == "binding" else "EXECUTE"
    as_dba(fdb, f"REVOKE {privilege} ON {kind} {target} FROM {fdb.supervisor}")
    found = missing(fdb, tmp_path)
    assert [(m.object.split(" ", 1)[1], m.privilege) for m in found] == [(target, privilege)]
    assert missing(fdb, tmp_path, fencing=False) == []  # only fencing needs it
    as_dba(fdb, str(found[0].fix))
    assert missing(fdb, tmp_path) == []


def test_no_usage_on_the_schema_is_named_first(pg_server: PgServer, tmp_path: Path) -> None:
    if not pg_server.can_restart:
        pytest.skip("external database (CORDA_HA_TEST_DSN): cannot create roles")
    db = set_up(pg_server, tmp_path, schema=f"s_{tmp_path.name[-12:].lower()}")
    try:
        assert missing(db, tmp_path) == []
        as_dba(db, f'REVOKE USAGE ON SCHEMA "{db.schema}" FROM {db.supervisor}')
        found = missing(db, tmp_path)
        assert [(m.object, m.privilege) for m in found] == [(f'schema "{db.schema}"', "USAGE")]
        as_dba(db, str(found[0].fix))
        assert missing(db, tmp_path) == []
    finally:
        db.drop()


def test_corda_row_without_a_grant_is_advisory(fdb: FenceDb, tmp_path: Path) -> None:
    """Without it a failover waits Corda's waitInterval out: named, never blocking."""
    as_dba(fdb, "CREATE TABLE IF NOT EXISTS node_mutual_exclusion "
                "(mutual_exclusion_id char(1) PRIMARY KEY)")
    try:
        found = missing(fdb, tmp_path)
        assert [(m.privilege, m.blocking) for m in found] == [("SELECT, UPDATE", False)]
        assert missing(fdb, tmp_path, fencing=False)[0].privilege == "SELECT"
        as_dba(fdb, str(found[0].fix))
        assert missing(fdb, tmp_path) == []
    finally:
        as_dba(fdb, "DROP TABLE IF EXISTS node_mutual_exclusion")


def config_file(db: FenceDb, tmp_path: Path, *, fencing: bool = False) -> Path:
    path = tmp_path / "a.conf"
    path.write_text(db.conf("a", fencing=fencing) + supervisor_config(
        node={"command": ["/bin/sleep", "1000"], "workingDirectory": str(tmp_path)},
        health={"host": "127.0.0.1", "port": 0}, logging={"format": Raw("json")}))
    return path


def test_run_with_a_grant_missing_on_existing_tables_exits_78_naming_it(
        fdb: FenceDb, tmp_path: Path, reaper: Reaper) -> None:
    """The tables exist (a DBA ran `schema`), but UPDATE on the lease table was revoked:
    the supervisor refuses to contend, naming the table, the privilege and the GRANT
    (it once stayed up as a standby that could never take over, reporting the database
    unreachable)."""
    as_dba(fdb, f"REVOKE UPDATE ON {fdb.table} FROM {fdb.supervisor}")
    code, out = run_to_exit(reaper, config_file(fdb, tmp_path))
    assert code == 78, out
    assert "privilege_missing" in out
    assert f'lacks UPDATE on table \\"{fdb.table}\\"' in out or \
        f'lacks UPDATE on table "{fdb.table}"' in out, out
    assert f'GRANT SELECT, INSERT, UPDATE ON \\"{fdb.table}\\" TO \\"{fdb.supervisor}\\"' in out \
        or f'GRANT SELECT, INSERT, UPDATE ON "{fdb.table}" TO "{fdb.supervisor}"' in out, out
    assert "node_started" not in out and "lease_acquired" not in out
    assert_clean(out)



def test_a_privilege_lost_while_running_is_reported_as_missing_not_unreachable(
        pair: Cluster, fdb: FenceDb) -> None:
    """UPDATE on the lease table revoked under a running holder: the renewals fail for a
    missing privilege, and the log, /status, the metric and `status` say so (they once
    said "database UNREACHABLE ... N failures in a row"); the lease is lost as ever."""
    a = pair.add("a", dsn=fdb.dsn(fdb.supervisor), extra_conf=supervisor_config(
        database={"table": fdb.table, "ownerRole": fdb.owner}))
    a.start()
    a.wait_node_up(15)
    mark = a.mark()
    as_dba(fdb, f"REVOKE UPDATE ON {fdb.table} FROM {fdb.supervisor}")
    said = a.wait_event("database_privilege_missing", 10, since=mark)
    assert "permission denied" in said["reason"]

    def view() -> dict[str, Any]:
        return cast(dict[str, Any], json.loads(http_get(a.health_port(), "/status")[1]))

    wait_until(lambda: view()["database"]["missing_privilege"] is not None, 10,
               message="/status names the missing privilege")
    database = view()["database"]
    assert database["reachable"] is True and "permission denied" in database["missing_privilege"]
    metrics = http_get(a.health_port(), "/metrics")[1].decode()
    assert "corda_ha_database_privilege_missing 1.0" in metrics
    operator_conf = a.root / "operator.conf"  # a's config, naming the port a listens on
    operator_conf.write_text(a.config_path.read_text() + f"\nhealth.port = {a.health_port()}\n")
    out = run_cli("status", "--config", str(operator_conf))
    assert out.returncode == 78, out
    assert "REFUSES this supervisor for a missing privilege" in out.stdout
    assert f'lacks UPDATE on table "{fdb.table}"' in out.stderr
    assert "UNREACHABLE" not in out.stdout
    # safety first: no renewal, no lease; the node is stopped before the kill deadline
    a.wait_event("lease_renewal_overdue", 10, since=mark)
    a.wait_event("node_exited", 10, since=mark)
    as_dba(fdb, f"GRANT UPDATE ON {fdb.table} TO {fdb.supervisor}")
    wait_until(lambda: view()["database"]["missing_privilege"] is None, 15,
               message="the privilege back, the problem gone")
