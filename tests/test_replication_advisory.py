"""The supervisor tells the operator which protection the lease database gives
(supervisor/lease/replication.py): at start (`replication_protection`) and in
`check-config --online`, read from the real server's replication settings: a server
without standbys (standalone), a primary with an asynchronous streaming replica (a
warning: a failover can cost two nodes) and the same primary once the replica is named
in `synchronous_standby_names` (synchronous). The rules themselves are checked on
`assess` directly."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.lease.replication import Settings, assess
from tests.harness.cli import run_cli
from tests.harness.cluster import cluster
from tests.harness.config import lease, seconds, write_config
from tests.harness.pgbin import find_bindir
from tests.harness.pgserver import ENV_DSN, PgServer
from tests.harness.proc import wait_until

pytestmark = pytest.mark.timeout(120)


def test_assess_names_the_protection_and_warns_only_where_two_nodes_can_run() -> None:
    sync = assess(Settings("on", "ANY 1 (pg1)", 1, 1), slack=5.9)
    assert (sync.kind, sync.two_nodes) == ("synchronous", False)
    assert "W - M - U - G = 5.9 s" in sync.message
    assert "no synchronous standby is connected" not in sync.message
    waiting = assess(Settings("remote_apply", "pg1", 0, 1), slack=1)
    assert (waiting.kind, waiting.two_nodes) == ("synchronous", False)
    assert "no synchronous standby is connected now" in waiting.message
    unnamed = assess(Settings("on", "", 0, 1), slack=1)
    assert (unnamed.kind, unnamed.two_nodes) == ("asynchronous", True)
    assert "two nodes" in unnamed.message and "no standby is named" in unnamed.message
    local = assess(Settings("local", "pg1", None, 1), slack=1)
    assert (local.kind, local.two_nodes) == ("asynchronous", True)
    assert "commits at local" in local.message
    alone = assess(Settings("on", "", 0, 0), slack=1)
    assert (alone.kind, alone.two_nodes) == ("standalone", False)


@pytest.fixture
def replicated() -> Iterator[tuple[PgServer, PgServer]]:
    """Its own primary and asynchronous streaming replica; destroyed after."""
    bindir = find_bindir()
    if bindir is None or not os.access(os.path.join(bindir, "pg_basebackup"), os.X_OK):
        if os.environ.get(ENV_DSN):
            pytest.skip("needs PostgreSQL server binaries incl. pg_basebackup")
        pytest.fail("PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup) are needed")
    primary = PgServer.create(bindir, replication=True)
    try:
        replica = primary.create_replica()
        try:
            yield primary, replica
        finally:
            replica.destroy()
    finally:
        primary.destroy()


def conf(tmp_path: Path, dsn: str) -> Path:
    return write_config(tmp_path / "s.conf", lease=lease("s"),
                        database={"url": dsn, "connectTimeout": seconds(2)},
                        node={"command": ["/bin/true"], "workingDirectory": str(tmp_path)},
                        health={"enabled": False})


def test_check_config_online_says_what_a_failover_costs(
        tmp_path: Path, replicated: tuple[PgServer, PgServer]) -> None:
    primary, _ = replicated
    path = conf(tmp_path, primary.dsn)
    out = run_cli("check-config", "--online", "--config", str(path))
    print(out.stderr)
    assert out.returncode == 0, out
    assert "warning: database failover: asynchronous replication" in out.stderr
    assert "two nodes" in out.stderr

    primary.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
    primary.execute("SELECT pg_reload_conf()")
    wait_until(lambda: primary.execute(
        "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'")[0][0] == 1,
        10, message="the replica synchronous")
    out = run_cli("check-config", "--online", "--config", str(path))
    assert out.returncode == 0, out
    line = next(x for x in out.stderr.splitlines() if "database failover" in x)
    assert line.startswith("database failover: synchronous replication"), line
    assert "1 synchronous standby(s) connected" in line


def test_the_daemon_logs_the_protection_at_start(
        tmp_path: Path, lease_name: str, replicated: tuple[PgServer, PgServer],
        pg_server: PgServer) -> None:
    primary, _ = replicated
    with cluster(tmp_path, primary.dsn, lease_name) as c:
        on_replicated = c.add("a")
        alone = c.add("b", dsn=pg_server.dsn)
        c.audit_dsns = None  # two databases: no pair here, nothing to audit
        on_replicated.start()
        alone.start()
        e = on_replicated.wait_event("replication_protection", 20)
        assert (e["protection"], e["level"], e["two_nodes"]) == ("asynchronous", "warning",
                                                                 True), e
        assert e["synchronous_commit"] == "on"  # what every lease session commits at
        e = alone.wait_event("replication_protection", 20)
        assert (e["protection"], e["level"], e["two_nodes"]) == ("standalone", "info",
                                                                 False), e
