"""The renewal-durability invariant's own checks (tests/harness/renewal_audit.py): a write that
was committed is found, one that was rolled back or never made is reported, and a lease
table created later, by any role, is audited from its first write."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import psycopg
import pytest

from supervisor.config import DatabaseConfig
from supervisor.lease.sql import LeaseSql
from tests.harness.pgserver import PgServer
from tests.harness.renewal_audit import acquire_and_renew, violations

pytestmark = pytest.mark.timeout(60)


def logged(epoch: int, renewed_at: object) -> dict[str, Any]:
    return {"event": "lease_renewed", "epoch": epoch, "renewed_at": str(renewed_at)}


def test_committed_writes_pass_and_rolled_back_ones_are_reported(
        db_config: DatabaseConfig, pg_server: PgServer) -> None:
    """A supervisor's real acquisition and renewal pass; a renewal made and rolled back
    (as a shared connection did to a renewal inside another operation's transaction)
    is reported, and so is one the database never saw."""
    db = dataclasses.replace(db_config, schema=f"au_{uuid.uuid4().hex[:10]}")
    pg_server.execute(f"CREATE SCHEMA {db.schema}")
    table = LeaseSql(db.schema, db.table)

    instance, epoch, renewed = acquire_and_renew(db)
    good = [{"event": "supervisor_started", "instance": instance},
            {"event": "lease_acquired", "epoch": epoch}, logged(epoch, renewed)]
    assert violations([pg_server.dsn], db.lease_name, {"a": good}) == []

    with psycopg.connect(pg_server.dsn) as conn:  # a renewal that is then rolled back
        row = conn.execute(
            psycopg.sql.SQL("UPDATE {} SET renewed_at = clock_timestamp() WHERE lease_name = "
                            "%s RETURNING renewed_at").format(table.table),
            (db.lease_name,)).fetchone()
        assert row is not None
        conn.rollback()
    lost = violations([pg_server.dsn], db.lease_name, {"a": [*good, logged(epoch, row[0])]})
    assert len(lost) == 1 and "never committed" in lost[0], lost
    never = violations([pg_server.dsn], db.lease_name,
                       {"a": [*good, {"event": "lease_acquired", "epoch": epoch + 1}]})
    assert len(never) == 1 and f"epoch {epoch + 1}" in never[0], never


def test_a_lease_table_a_least_privilege_role_creates_is_audited(
        db_config: DatabaseConfig, pg_server: PgServer) -> None:
    if not pg_server.can_restart:
        pytest.skip("external database (CORDA_HA_TEST_DSN): no test role")
    db = dataclasses.replace(
        db_config, conninfo=pg_server.dsn_via("127.0.0.1", pg_server.port),
        user=PgServer.password_user, password=PgServer.password,
        schema=f"pw_{uuid.uuid4().hex[:12]}")

    instance, epoch, _ = acquire_and_renew(db)
    assert violations([pg_server.dsn], db.lease_name,
                      {"a": [{"event": "supervisor_started", "instance": instance},
                             {"event": "lease_acquired", "epoch": epoch}]}) == []
    other = violations([pg_server.dsn], db.lease_name,  # another process's epoch
                       {"a": [{"event": "supervisor_started", "instance": "someone-else"},
                              {"event": "lease_acquired", "epoch": epoch}]})
    assert len(other) == 1, other


def test_an_unaudited_lease_is_a_violation_not_a_pass(pg_server: PgServer) -> None:
    """Renewals logged for a lease the audit never saw: the check fails loudly (a lease
    table without the trigger must not make the invariant pass silently)."""
    lost = violations([pg_server.dsn], f"nowhere-{uuid.uuid4().hex}",
                      {"a": [logged(1, "2026-01-01 00:00:00+00:00")]})
    assert lost and "no audit trigger" in lost[0]
