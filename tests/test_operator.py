"""The operator's commands: `schema` gives a least-privilege role that runs
the whole lease protocol, `status` creates nothing and lists every member, a holder
that stopped renewing is not "live", and `handover` refuses when nobody could take
over. Real PostgreSQL, real supervisors."""

from __future__ import annotations

import dataclasses
import json
import signal
import uuid
from pathlib import Path

import psycopg
import pytest

from supervisor.cli.schema import schema_script
from supervisor.config import DatabaseConfig, load_config
from supervisor.lease import PostgresLeaseStore
from supervisor.lease.members import Member
from supervisor.node.machine import this_process
from tests.harness.aio import run
from tests.harness.cli import run_cli
from tests.harness.cluster import Cluster, holder_registered
from tests.harness.config import lease, seconds, write_config
from tests.harness.host import http_get
from tests.harness.pgserver import PgServer
from tests.harness.proc import wait_until

pytestmark = pytest.mark.timeout(90)


def conf(tmp_path: Path, url: str, *, schema: str, user: str, owner: str | None = None
         ) -> Path:
    return write_config(
        tmp_path / "op.conf", lease=lease("op"),
        database={"url": url, "schema": schema, "user": user, "password": f"pw-{user}",
                  "operationTimeout": seconds(1), "connectTimeout": seconds(2),
                  "ownerRole": owner},
        node={"command": ["/bin/true"]})


def test_schema_gives_a_least_privilege_role_that_runs_the_protocol(
        tmp_path: Path, pg_server: PgServer) -> None:
    if not pg_server.can_restart:
        pytest.skip("external database (CORDA_HA_TEST_DSN): cannot create roles")
    suffix = uuid.uuid4().hex[:8]
    role, schema, owner = f"sup_{suffix}", f"ha_{suffix}", f"owner_{suffix}"
    pg_server.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'pw-{role}'")
    path = conf(tmp_path, pg_server.dsn_via(pg_server.host, pg_server.port).replace(
        "postgres@", ""), schema=schema, user=role, owner=owner)
    out = run_cli("schema", "--config", str(path))
    assert out.returncode == 0, out
    script = out.stdout
    assert f'GRANT SELECT, INSERT, UPDATE ON "{schema}"."corda_ha_lease" TO "{role}";' in script
    assert f'ALTER TABLE "{schema}"."corda_ha_lease" OWNER TO "{owner}";' in script
    assert "pw-" not in script
    with psycopg.connect(pg_server.dsn, autocommit=True) as dba:
        dba.execute(script.encode())  # the DBA runs it, as printed ...
        dba.execute(script.encode())  # ... and again (the other host): no error
        owners = dba.execute(
            "SELECT c.relname, pg_get_userbyid(c.relowner), c.relrowsecurity FROM pg_class c "
            "WHERE c.relnamespace = %s::regnamespace AND c.relkind = 'r' ORDER BY 1",
            (schema,)).fetchall()
        # another pair's row in the same table, invisible to this pair's role
        dba.execute(f'INSERT INTO "{schema}".corda_ha_lease (lease_name, epoch) '
                    "VALUES ('other-pair', 7)")
    assert owners == [(f"corda_ha_lease{t}", owner, True)
                      for t in ("", "_access", "_history", "_member")]
    config = load_config(str(path))
    db = config.database

    async def as_the_role() -> None:
        ident = this_process("op")
        store = PostgresLeaseStore(db, ident, 2.0)
        try:
            await store.ensure_schema(5)  # finds everything: creates nothing
            snap = await store.observe(5)
            epoch = await store.acquire(None, server=snap.server, timeout=5)
            assert epoch == 1
            assert await store.renew(epoch, 5) is not None
            assert await store.release(epoch, 5)
            store.member_info = lambda: Member(ident.instance, "op", ident.machine, "h", 1,
                                               "standby", True, "ok", "t")
            async with await psycopg.AsyncConnection.connect(
                    db.conninfo, user=db.user, password=db.password, autocommit=True) as c:
                await store._listener._health_check(c)
            (row,) = await store.members(5)
            assert row.member.machine_name == "op" and row.fresh
            assert await store.set_paused(True, 5) is None  # pause and resume: the row
            assert await store.set_paused(False, 5) is None  # exists, held by nobody
        finally:
            await store.close()

    run(as_the_role())
    denied = psycopg.errors.InsufficientPrivilege
    with psycopg.connect(db.conninfo, user=db.user, password=db.password,
                         autocommit=True) as conn:
        with pytest.raises(denied):
            conn.execute(f'CREATE TABLE "{schema}".intruder (x int)')
        # row-level security: this pair's role sees and changes only its own lease's row
        seen = conn.execute(f'SELECT lease_name FROM "{schema}".corda_ha_lease').fetchall()
        assert seen == [(db.lease_name,)]
        touched = conn.execute(f'UPDATE "{schema}".corda_ha_lease SET epoch = 99 '
                               "WHERE lease_name = 'other-pair'")
        assert touched.rowcount == 0
        with pytest.raises(denied, match="row-level security"):
            conn.execute(f'INSERT INTO "{schema}".corda_ha_lease (lease_name, epoch) '
                         "VALUES ('forged', 1)")


def test_status_creates_nothing(tmp_path: Path, pg_server: PgServer) -> None:
    schema = f"none_{uuid.uuid4().hex[:8]}"
    path = tmp_path / "s.conf"
    path.write_text(f"""
mutualExclusionConfiguration {{ on = true, machineName = s, updateInterval = 500,
                                waitInterval = 2000 }}
database {{ url = "{pg_server.dsn}", schema = "{schema}" }}
node {{ command = ["/bin/true"] }}
health.enabled = false
""")
    out = run_cli("status", "--config", str(path))
    assert out.returncode == 3, out
    assert "no holder" in out.stdout
    assert pg_server.execute("SELECT to_regnamespace(%s)", [schema]) == [(None,)]


def test_status_lists_members_and_handover_refuses_without_a_taker(pair: Cluster) -> None:
    a = holder_registered(pair)
    # alone: nobody could take over, so a handover would only stop the node
    out = run_cli("handover", "--config", str(a.config_path))
    assert out.returncode == 4, out
    assert "refusing to hand over" in out.stderr and "--force" in out.stderr
    assert not a.events("handover_requested")
    (node,) = a.live_nodes()

    b = pair.add("b")
    b.start()
    b.wait_event("lease_seen", 15, match=lambda e: e["holder"] == "a")

    def members() -> list[dict[str, object]]:
        data = json.loads(run_cli("status", "--json", "--config", str(a.config_path)).stdout)
        return list(data["members"])

    wait_until(lambda: len(members()) == 2 and any(m["can_take_over"] for m in members()), 15,
               message="b registered, able to take over")
    rows = {m["machine_name"]: m for m in members()}
    assert rows["a"]["holder"] is True and rows["a"]["can_take_over"] is False
    assert rows["b"]["holder"] is False and rows["b"]["state"] == "standby"
    text = run_cli("status", "--config", str(a.config_path)).stdout
    assert "members:" in text and "could take over" in text

    out = run_cli("handover", "--wait", "15", "--config", str(a.config_path))
    assert out.returncode == 0, out
    assert "could take over: b" in out.stdout and "now held by b" in out.stdout
    assert node not in a.live_nodes()


def test_a_holder_that_stopped_renewing_is_not_live(pair: Cluster) -> None:
    a = pair.add("a", wait_ms=6000)  # its row stays unexpired 6 s after the last renewal
    a.start()
    a.wait_node_up(15)
    assert run_cli("status", "--config", str(a.config_path)).returncode == 0
    a.signal(signal.SIGSTOP)  # frozen: its row stays unexpired for up to W
    try:
        def frozen_status() -> bool:
            out = run_cli("status", "--json", "--config", str(a.config_path))
            data = json.loads(out.stdout)
            return out.returncode == 3 and data["unexpired"] and not data["renewing"]

        wait_until(frozen_status, 4, message="status to call the frozen holder not renewing")
    finally:
        a.signal(signal.SIGCONT)
    assert http_get(a.health_port(), "/liveness")[0] in (200, 503)


def test_schema_for_a_missing_pause_row(tmp_path: Path, pg_server: PgServer) -> None:
    """`pause` before the pair ever ran creates the lease row, as the least-privilege
    role, under row-level security."""
    if not pg_server.can_restart:
        pytest.skip("external database (CORDA_HA_TEST_DSN): cannot create roles")
    suffix = uuid.uuid4().hex[:8]
    role, schema = f"sup_{suffix}", f"ha_{suffix}"
    pg_server.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'pw-{role}'")
    path = conf(tmp_path, pg_server.dsn_via(pg_server.host, pg_server.port).replace(
        "postgres@", ""), schema=schema, user=role, owner=f"o_{suffix}")
    with psycopg.connect(pg_server.dsn, autocommit=True) as dba:
        dba.execute(schema_script(load_config(str(path))).encode())
    out = run_cli("pause", "--config", str(path))
    assert out.returncode == 0, out
    rows = pg_server.execute(f'SELECT lease_name, paused_at IS NOT NULL FROM '
                             f'"{schema}".corda_ha_lease')
    assert rows == [("corda-node", True)]


def test_schema_defaults_the_role_name(tmp_path: Path) -> None:
    path = tmp_path / "d.conf"
    path.write_text('mutualExclusionConfiguration { on = true, machineName = d, '
                    'updateInterval = 500, waitInterval = 2000 }\n'
                    'database { url = "postgresql://db/x" }\nnode { command = ["/bin/true"] }\n')
    script = schema_script(load_config(str(path)))
    assert 'TO "corda_ha";' in script and "GRANT USAGE ON SCHEMA" not in script
    assert dataclasses.is_dataclass(DatabaseConfig)
