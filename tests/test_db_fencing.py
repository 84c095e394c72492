"""Database fencing: the new holder locks the other node roles bound to its lease out and
ends their sessions before its node starts; only the holder can fence; a locked-out role
is unlocked only by its own host's acquisition; what is missing is named. Real
PostgreSQL, set up exactly as `schema` prints it, driven by a least-privilege supervisor
role. The attacks from that role are in tests/test_db_attacks.py."""

from __future__ import annotations

import contextlib
import json
import signal
import time
from pathlib import Path
from typing import Any, cast

import psutil
import psycopg
import pytest

from supervisor.lease import fence
from supervisor.lease.fence_sql import CONFIRM_ARGS, LOCK_ARGS
from tests.harness.aio import run
from tests.harness.cli import run_cli, run_to_exit
from tests.harness.cluster import Cluster
from tests.harness.config import supervisor_config
from tests.harness.db_writer import late_writes
from tests.harness.fencedb import FenceDb
from tests.harness.fencedb import FenceHost as Host
from tests.harness.host import Host as Host_
from tests.harness.host import http_get
from tests.harness.proc import Reaper, pid_alive, wait_until

pytestmark = pytest.mark.timeout(60)


def test_the_holder_locks_the_other_role_out_and_ends_its_sessions(
        fdb: FenceDb, tmp_path: Path) -> None:
    a, b = Host(fdb.load(tmp_path, "a")), Host(fdb.load(tmp_path, "b"))
    role_a, role_b = fdb.node_role("a"), fdb.node_role("b")

    async def scenario() -> None:
        try:
            assert await a.check() is None and await b.check() is None  # both bound
            # b's old node is connected and writing
            old = await psycopg.AsyncConnection.connect(fdb.dsn(role_b), autocommit=True)
            await old.execute(f"INSERT INTO {fdb.writes} (host) VALUES ('b')")
            epoch = await a.take()
            result = await a.fence(epoch)
            assert {r.role: r.action for r in result.roles} == {
                role_b: "locked", role_a: "can log in"}
            assert result.sessions_ended == 1
            assert result.passes == 2  # the second call proves no login slipped in
            with pytest.raises(psycopg.OperationalError):
                await old.execute(f"INSERT INTO {fdb.writes} (host) VALUES ('b')")
            with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):
                await psycopg.AsyncConnection.connect(fdb.dsn(role_b))
            assert not fdb.can_log_in(role_b) and fdb.can_log_in(role_a)
            # a confirm (b's supervisor restarting) never unlocks b's role
            assert await b.check() is None
            assert not fdb.can_log_in(role_b)
            # fencing again in the same epoch (a node restart) finds nothing to do
            again = await a.fence(epoch)
            assert again.passes == 1 and again.sessions_ended == 0
            assert {r.role: r.action for r in again.roles}[role_b] == "still locked"
            # b takes over: b's role is unlocked by b's own acquisition, a's locked
            assert await a.store.release(epoch, 5)
            epoch_b = await b.take()
            result_b = await b.fence(epoch_b)
            assert {r.role: r.action for r in result_b.roles} == {
                role_a: "locked", role_b: "unlocked"}
            assert fdb.can_log_in(role_b) and not fdb.can_log_in(role_a)
            async with await psycopg.AsyncConnection.connect(fdb.dsn(role_b)) as new:
                await new.execute(f"INSERT INTO {fdb.writes} (host) VALUES ('b')")
            roles = await a.store.call("read", lambda c: fence.read_roles(
                c, a.sql, a.store.lease_name), 5)
            locked = {r.role: r.locked_by_epoch for r in roles}
            assert locked == {role_a: epoch_b, role_b: None}
        finally:
            await a.store.close()
            await b.store.close()

    run(scenario())


def test_only_the_holder_at_that_epoch_can_fence(fdb: FenceDb, tmp_path: Path) -> None:
    a, b = Host(fdb.load(tmp_path, "a")), Host(fdb.load(tmp_path, "b"))

    async def scenario() -> None:
        try:
            assert await a.check() is None and await b.check() is None
            epoch = await a.take()
            with pytest.raises(fence.FenceFailed, match="no longer the holder"):
                await b.fence(epoch)  # b's instance does not hold it
            await a.store.release(epoch, 5)
            with pytest.raises(fence.FenceFailed, match="no longer the holder"):
                await a.fence(epoch)  # released: a's epoch is over
            assert fdb.can_log_in(fdb.node_role("a")) and fdb.can_log_in(fdb.node_role("b"))
        finally:
            await a.store.close()
            await b.store.close()

    run(scenario())


def test_a_role_outside_the_node_group_is_never_fenced(fdb: FenceDb, tmp_path: Path) -> None:
    """The supervisor's role can lock out only members of the node group: a bound role
    that left the group is refused (and the fence fails, loudly, locking nothing)."""
    a, b = Host(fdb.load(tmp_path, "a")), Host(fdb.load(tmp_path, "b"))

    async def scenario() -> None:
        try:
            assert await a.check() is None and await b.check() is None
            fdb.server.execute(f"REVOKE {fdb.group} FROM {fdb.node_role('b')}")
            assert "not a member of the node group" in (await b.check() or "")
            epoch = await a.take()
            with pytest.raises(fence.FenceFailed, match="not a member of the node group"):
                await a.fence(epoch)
            assert fdb.can_log_in(fdb.node_role("b"))
        finally:
            await a.store.close()
            await b.store.close()

    run(scenario())


def test_missing_functions_or_privileges_are_named(fdb: FenceDb, tmp_path: Path) -> None:
    a = Host(fdb.load(tmp_path, "a"))
    fn = a.sql.confirm_fn.as_string(None) + CONFIRM_ARGS

    async def scenario() -> None:
        try:
            fdb.server.execute(f"REVOKE EXECUTE ON FUNCTION {fn} FROM {fdb.supervisor}")
            problem = await a.check()
            assert problem is not None and "missing privilege for fencing" in problem
            assert "corda-ha-supervisor schema" in problem
            fdb.server.execute(f"DROP FUNCTION {fn} CASCADE")
            problem = await a.check()
            assert problem is not None and "not installed" in problem
        finally:
            await a.store.close()

    run(scenario())


# ----------------------------------------------------------- real supervisors, frozen host

def write_log(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def begun_after(path: Path, t: float) -> list[str]:
    """The write attempts of `path` that began at monotonic `t` or later (a write that was
    frozen after its INSERT returned logs its line only once continued)."""
    return [line for line in write_log(path) if float(line.split()[3]) >= t]


def add_writer(pair: Cluster, fdb: FenceDb, name: str, tmp_path: Path, *,
               fencing: bool, required: bool = True) -> tuple[Host_, Path]:
    """A supervisor of `name` (least-privilege role) whose node writes as its own role."""
    log = tmp_path / f"{name}.writes"
    conf = supervisor_config(
        database={"table": fdb.table, "ownerRole": fdb.owner},
        fencing={"nodeRole": fdb.node_role(name), "nodeGroup": fdb.group,
                 "fencerRole": fdb.fencer, "required": required} if fencing else None)
    host = pair.add(name, ["--write", fdb.dsn(fdb.node_role(name)), "--write-table",
                           fdb.writes, "--write-log", str(log)],
                    dsn=fdb.dsn(fdb.supervisor), extra_conf=conf)
    return host, log


@pytest.mark.timeout(90)
@pytest.mark.parametrize("fencing", [True, False], ids=["fenced", "unfenced"])
def test_a_frozen_host_writes_nothing_after_the_new_node(
        pair: Cluster, fdb: FenceDb, tmp_path: Path, fencing: bool) -> None:
    """The worst order: host a (supervisor, guard, node) frozen past W; b takes over and
    its node writes; then a's node alone continues first, retrying like a connection
    pool. Fenced: none of its writes lands after b's first. Unfenced: they do (measured,
    so the difference shows)."""
    a, log_a = add_writer(pair, fdb, "a", tmp_path, fencing=fencing)
    b, log_b = add_writer(pair, fdb, "b", tmp_path, fencing=fencing)
    a.start()
    node_a = a.wait_node_up(15)
    wait_until(lambda: "ok" in " ".join(write_log(log_a)), 10, message="a's node writes")
    b.start()
    b.wait_event("lease_seen", 15, match=lambda e: e["holder"] == "a")
    if fencing:
        b.wait_event("fencing_ready", 15)
    frozen = a.tree()
    for p in frozen:
        p.suspend()
    try:
        mark = b.mark()
        b.wait_node_up(15, since=mark)
        if fencing:
            fenced = b.wait_event("database_fenced", 1, since=mark)
            assert fenced["roles"][fdb.node_role("a")] == "locked"
        wait_until(lambda: any(line.startswith("ok") for line in write_log(log_b)), 10,
                   message="b's node writes")
        resumed = time.monotonic()
        psutil.Process(node_a).resume()  # the old node first: its guard stays frozen
        wait_until(lambda: len(begun_after(log_a, resumed)) >= 20, 15,
                   message="20 write attempts of a's continued node")
        late, b_writes = late_writes(fdb.server.dsn, fdb.writes, "b", "a")
        attempts = begun_after(log_a, resumed)
    finally:
        for p in frozen:
            with contextlib.suppress(psutil.Error):
                p.resume()
    print(f"fencing={'on' if fencing else 'off'}: {late} writes of the old node landed "
          f"after the new node's first (of {len(attempts)} attempts; b wrote {b_writes})")
    assert b_writes > 0
    if fencing:
        assert late == 0, attempts[:5]
        assert all(line.startswith("err") for line in attempts), attempts[:5]
        assert any("not permitted to log in" in line for line in attempts), attempts[:5]
    else:
        assert late > 0  # the hole fencing closes
    # a's guard (deadline long past) or supervisor kills its node once continued
    wait_until(lambda: not pid_alive(node_a), 10, message="a's old node killed")


def test_a_missing_fence_privilege_at_start_exits_78_naming_the_grant(
        pair: Cluster, fdb: FenceDb, tmp_path: Path, reaper: Reaper) -> None:
    """fencing.required and no EXECUTE on a fence function: the supervisor does not
    contend (exit 78), naming the function and the GRANT that fixes it."""
    fn = fence.FenceSql(None, fdb.table).confirm_fn.as_string(None) + CONFIRM_ARGS
    fdb.server.execute(f"REVOKE EXECUTE ON FUNCTION {fn} FROM {fdb.supervisor}")
    b, _ = add_writer(pair, fdb, "b", tmp_path, fencing=True)
    b.write_config()
    code, out = run_to_exit(reaper, b.config_path)
    assert code == 78, out
    assert "privilege_missing" in out and "lacks EXECUTE on function" in out
    assert f"GRANT EXECUTE ON FUNCTION {fn} TO".replace('"', '\\"') in out, out
    assert "node_started" not in out and "lease_acquired" not in out


def test_a_standby_that_cannot_fence_takes_nothing_until_fixed(
        pair: Cluster, fdb: FenceDb, tmp_path: Path) -> None:
    """fencing.required, every privilege granted, but the confirm check fails (this host's
    node role left the node group) -> the standby says why (log, /status) and takes no
    lease, even a free one; once a DBA fixes it, it takes over."""
    fdb.server.execute(f"REVOKE {fdb.group} FROM {fdb.node_role('b')}")
    b, _ = add_writer(pair, fdb, "b", tmp_path, fencing=True)
    b.start()
    failed = b.wait_event("fencing_unavailable", 15)
    assert "not a member of the node group" in failed["problem"]
    def status() -> dict[str, Any]:
        # a load balancer retries a probe; so does this read (once seen under heavy load:
        # a connection reset)
        for attempt in range(3):
            try:
                return cast(dict[str, Any], json.loads(http_get(b.health_port(), "/status")[1]))
            except ConnectionError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    wait_until(lambda: str(status().get("can_take_over_reason")).startswith(
        "database fencing: ") and "node group" in str(status().get("can_take_over_reason")),
        10, message="/status names the fence problem")
    assert status()["can_take_over"] is False
    assert status()["fencing"]["problem"] == failed["problem"]
    # the lease is free all along (no row yet): b takes nothing for 2 W (an absence:
    # waited for, bounded)
    b.no_event("lease_acquired", 2 * b.wait_ms / 1000)
    assert not b.node_records()
    fdb.server.execute(f"GRANT {fdb.group} TO {fdb.node_role('b')}")
    b.wait_event("fencing_ready", 10)
    b.wait_node_up(10)
    assert b.events("database_fenced")


@pytest.mark.parametrize("required", [True, False], ids=["required", "not-required"])
def test_a_holder_whose_fence_fails_does_not_start_its_node(
        pair: Cluster, fdb: FenceDb, tmp_path: Path, required: bool) -> None:
    """The fence itself fails at acquisition (the lock function's privilege is lost while
    the supervisor runs, after its start-up probe; the confirm check still works):
    required -> the node is not started (a failed start); fencing.required = false -> it
    starts unfenced, with an error logged. The pair is paused until the privilege is
    gone, so the standby takes nothing before."""
    fn = fence.FenceSql(None, fdb.table).lock_fn.as_string(None) + LOCK_ARGS
    a, _ = add_writer(pair, fdb, "a", tmp_path, fencing=True, required=required)
    a.write_config()
    paused = run_cli("pause", "--config", str(a.config_path))
    assert paused.returncode == 0, paused
    a.start()
    a.wait_event("privileges_checked", 15)
    fdb.server.execute(f"REVOKE EXECUTE ON FUNCTION {fn} FROM {fdb.supervisor}")
    resumed = run_cli("resume", "--config", str(a.config_path))
    assert resumed.returncode == 0, resumed
    failed = a.wait_event("database_fence_failed", 15)
    assert "missing privilege for fencing" in failed["error"]
    if required:
        refused = a.wait_event("node_start_refused", 5)
        assert refused["reason"].startswith("database fencing: ")
        assert not a.node_records()  # no node process was ever started
    else:
        a.wait_node_up(5)


def test_the_least_privilege_role_runs_the_whole_path(
        pair: Cluster, fdb: FenceDb, tmp_path: Path) -> None:
    """Both supervisors log in as a role with exactly the grants `schema` prints (no
    superuser, no CREATE anywhere): start, fence, renew, members, LISTEN, `check-config`,
    `status`, `handover` (b fences a out), `history`, kill -9 and failover."""
    rows = fdb.server.execute(
        "SELECT rolsuper, rolcreaterole, has_schema_privilege(%s, 'public', 'CREATE'), "
        "has_database_privilege(%s, 'postgres', 'CREATE') FROM pg_roles WHERE rolname = %s",
        (fdb.supervisor, fdb.supervisor, fdb.supervisor))
    assert rows == [(False, False, False, False)]
    a, _ = add_writer(pair, fdb, "a", tmp_path, fencing=True)
    b, log_b = add_writer(pair, fdb, "b", tmp_path, fencing=True)
    a.start()
    a.wait_node_up(15)
    b.start()
    b.wait_event("fencing_ready", 15)
    pair.wait_member_ready("b", table=fdb.table)
    check = run_cli("check-config", "--config", str(b.config_path))
    assert check.returncode == 0, check.stderr
    assert f"fencing: ready (node role {fdb.node_role('b')}" in check.stderr
    out = run_cli("status", "--config", str(a.config_path))
    assert out.returncode == 0, out
    # a's fence locked b's role out (b is bound to the lease by the DBA)
    assert f"fencing: this host's node role {fdb.node_role('a')}: ready" in out.stdout, out.stdout
    assert f"{fdb.node_role('b')}" in out.stdout and "LOCKED OUT by epoch 1" in out.stdout
    mark = b.mark()
    handover = run_cli("handover", "--config", str(a.config_path), "--wait", "20")
    assert handover.returncode == 0, handover
    b.wait_node_up(20, since=mark)
    fenced = b.wait_event("database_fenced", 1, since=mark)
    assert fenced["roles"] == {fdb.node_role("a"): "locked", fdb.node_role("b"): "unlocked"}
    wait_until(lambda: any(line.startswith("ok") for line in write_log(log_b)), 10,
               message="b's node writes")
    status = json.loads(run_cli("status", "--json", "--config", str(a.config_path)).stdout)
    roles = {r["node_role"]: r["can_log_in"] for r in status["fencing"]["roles"]}
    assert roles == {fdb.node_role("a"): False, fdb.node_role("b"): True}
    history = run_cli("history", "--config", str(a.config_path))
    assert history.returncode == 0 and "handed over" in history.stdout, history
    # a standby again (a came back as standby after its planned stop); kill -9 b
    a.wait_event("fencing_ready", 15)
    mark = a.mark()
    b.signal(signal.SIGKILL)
    a.wait_node_up(20, since=mark)
    again = a.wait_event("database_fenced", 1, since=mark)["roles"]
    assert again == {fdb.node_role("a"): "unlocked", fdb.node_role("b"): "locked"}


def test_check_config_fails_when_fencing_cannot_work(fdb: FenceDb, tmp_path: Path) -> None:
    path = tmp_path / "a.conf"
    path.write_text(fdb.conf("a") + supervisor_config(node={"command": ["/bin/true"]}))
    fdb.server.execute(f"REVOKE {fdb.group} FROM {fdb.node_role('a')}")
    out = run_cli("check-config", "--config", str(path))
    assert out.returncode == 78, out
    assert "fencing" in out.stderr and "not a member of the node group" in out.stderr
