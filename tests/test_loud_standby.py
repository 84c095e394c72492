"""A standby that cannot take over says so: in its log, its /status,
its /metrics and the `status` command. Real supervisors, real PostgreSQL."""

from __future__ import annotations

import json
import re

import pytest

from tests.harness.cli import run_cli
from tests.harness.cluster import Cluster
from tests.harness.config import supervisor_config
from tests.harness.host import Host, http_get
from tests.harness.pgserver import PgServer, free_port
from tests.harness.proc import wait_until

pytestmark = pytest.mark.timeout(90)

WRONG = "not-the-password-7x"


def test_standby_whose_database_login_breaks_is_loud(pair: Cluster, pg_server: PgServer) -> None:
    """The password of a running standby's role is changed and its connections are
    dropped (a rotation gone wrong): it keeps running, and says it cannot take over.
    (At start, a refused login is exit 78: tests/test_startup_errors.py.)"""
    if not pg_server.can_restart:
        pytest.skip("external database (CORDA_HA_TEST_DSN): cannot create roles")
    # fixed health ports: the `status` command finds this host's supervisor through them
    a = pair.add("a")
    healthy = pair.add("healthy", extra_conf=supervisor_config(health={"port": free_port()}))
    a.start()
    a.wait_node_up(15)
    healthy.start()
    healthy.wait_event("lease_seen", 15, match=lambda e: e["holder"] == "a")
    role = pg_server.password_user  # the role pg_hba.conf checks passwords for
    pg_server.execute(f"GRANT SELECT, INSERT, UPDATE ON corda_ha_lease TO {role}")
    pg_server.execute(f"GRANT SELECT, INSERT, UPDATE ON corda_ha_lease_history TO {role}")
    pg_server.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON corda_ha_lease_member TO {role}")
    dsn = (f"postgresql://{role}:{pg_server.password}@{pg_server.host}:{pg_server.port}/"
           "postgres")
    broken = pair.add("broken", dsn=dsn, extra_conf=supervisor_config(health={"port": free_port()}))
    broken.start()
    broken.wait_event("lease_seen", 15, match=lambda e: e["holder"] == "a")
    try:
        pg_server.execute(f"ALTER ROLE {role} PASSWORD '{WRONG}'")
        pg_server.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE usename = %s", [role])
        loud(pair, a, healthy, broken)
    finally:
        pg_server.execute(f"ALTER ROLE {role} PASSWORD '{pg_server.password}'")


def loud(pair: Cluster, a: Host, healthy: Host, broken: Host) -> None:
    first = broken.wait_event("lease_call_failed", 15)
    assert first["level"] == "warning"  # the first failure of a run is loud
    broken.wait_event("lease_call_failed", 15,
                      match=lambda e: "password authentication failed" in e["reason"])

    def status_of(host_port: int) -> dict[str, object]:
        code, body = http_get(host_port, "/status")
        assert code == 200
        return dict(json.loads(body))

    port = broken.health_port()
    wait_until(lambda: status_of(port)["database"]["failures_in_a_row"] >= 2,  # type: ignore[index]
               10, message="a second failure")
    st = status_of(port)
    db = st["database"]
    assert isinstance(db, dict)
    assert st["can_take_over"] is False
    assert db["reachable"] is False and db["failing_for"] > 0
    assert "password authentication failed" in str(db["last_error"])
    assert "database unreachable" in str(st["can_take_over_reason"])

    code, metrics = http_get(port, "/metrics")
    assert code == 200
    assert re.search(rb"^corda_ha_can_take_over 0\.0$", metrics, re.M)
    assert re.search(rb"^corda_ha_database_reachable 0\.0$", metrics, re.M)

    # the healthy standby could take over; the holder is not a candidate
    hs = status_of(healthy.health_port())
    assert hs["can_take_over"] is True and hs["database"]["reachable"] is True  # type: ignore[index]
    assert status_of(a.health_port())["can_take_over"] is False
    code, metrics = http_get(healthy.health_port(), "/metrics")
    assert re.search(rb"^corda_ha_can_take_over 1\.0$", metrics, re.M)

    # /readiness: the holder and the healthy standby could run the node, the broken one not
    assert http_get(a.health_port(), "/readiness")[0] == 200
    assert http_get(healthy.health_port(), "/readiness")[0] == 200
    code, body = http_get(port, "/readiness")
    assert code == 503 and b"database unreachable" in body

    # the operator's command shows the same, and never the password
    out = run_cli("status", "--config", str(broken.config_path))
    assert out.returncode == 78, out  # credentials: the operator's to fix, not a wait
    assert "could take over now: NO" in out.stdout
    assert "UNREACHABLE" in out.stdout and "password authentication failed" in out.stdout
    assert PgServer.password not in out.stdout + out.stderr
    out = run_cli("status", "--config", str(healthy.config_path))
    assert out.returncode == 0, out
    assert "could take over now: yes" in out.stdout
    out = run_cli("status", "--json", "--config", str(healthy.config_path))
    data = json.loads(out.stdout)
    assert data["holder"] == "a" and data["this_host"]["can_take_over"] is True

    assert PgServer.password not in broken.output()


def holders_metrics(pair: Cluster) -> bytes:
    """/metrics of host a, once it runs its node and has renewed the lease."""
    a = pair.add("a")
    a.start()
    a.wait_node_up(15)
    a.wait_event("lease_renewed", 10)
    code, body = http_get(a.health_port(), "/metrics")
    assert code == 200
    return body


def test_statements_are_counted_per_operation(pair: Cluster) -> None:
    body = holders_metrics(pair)
    counts = dict(re.findall(rb'^corda_ha_db_statements_total\{op="([a-z_]+)"\} ([0-9.]+)$',
                             body, re.M))
    assert float(counts[b"renew"]) >= 1 and float(counts[b"acquire"]) >= 1, counts


def test_lease_statements_are_timed_per_operation(pair: Cluster) -> None:
    """`corda_ha_lease_statement_seconds{op}`: one observation per lease statement that
    answered (renewals and the acquisition), none for the side connection's work."""
    body = holders_metrics(pair)
    timed = {op.decode(): float(n) for op, n in re.findall(
        rb'^corda_ha_lease_statement_seconds_count\{op="([a-z_]+)"\} ([0-9.]+)$', body, re.M)}
    sent = {op.decode(): float(n) for op, n in re.findall(
        rb'^corda_ha_db_statements_total\{op="([a-z_]+)"\} ([0-9.]+)$', body, re.M)}
    assert timed.get("renew", 0) >= 1 and timed.get("acquire", 0) >= 1, timed
    assert all(timed[op] <= sent[op] for op in timed), (timed, sent)
    assert "members" not in timed and "ensure_schema" not in timed, timed
    (total,) = re.findall(rb'^corda_ha_lease_statement_seconds_sum\{op="renew"\} ([0-9.e-]+)$',
                          body, re.M)
    assert 0 < float(total) < timed["renew"] * 5.0  # seconds, each under the top bucket
