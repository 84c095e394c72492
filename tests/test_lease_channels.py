"""A connection is one conversation: lease statements never run inside another
operation's transaction, never wait for one, and a lease statement counts only when it
was committed (its connection idle afterwards). Real PostgreSQL, no mocks."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from datetime import datetime

import psycopg
import pytest

from supervisor.config import DatabaseConfig
from supervisor.lease import LeaseUnavailable, PostgresLeaseStore
from supervisor.lease.bounded import Conn
from supervisor.node.machine import this_process
from tests.harness.aio import run
from tests.harness.pgserver import PgServer

pytestmark = pytest.mark.timeout(60)

W = 5.0


def renewed_at(pg: PgServer, db: DatabaseConfig) -> datetime:
    ((value,),) = pg.execute(f"SELECT renewed_at FROM {db.table} WHERE lease_name = %s",
                             [db.lease_name])
    assert isinstance(value, datetime)
    return value


async def holder(db: DatabaseConfig) -> tuple[PostgresLeaseStore, int]:
    store = PostgresLeaseStore(db, this_process("node-a"), W)
    await store.ensure_schema(5.0)
    epoch = await store.acquire(None, timeout=5.0)
    assert epoch is not None
    return store, epoch


def test_a_renewal_is_committed_when_a_side_transaction_rolls_back(
        db_config: DatabaseConfig, pg_server: PgServer) -> None:
    """A side operation opens a transaction, and while it is open a renewal is made;
    then the side transaction fails and rolls back. The renewal must stand: sharing
    one connection, it ran inside that transaction and was undone although `renew`
    had returned a result."""

    async def main() -> None:
        store, epoch = await holder(db_config)
        inside, finish = asyncio.Event(), asyncio.Event()

        async def side(conn: Conn) -> None:
            async with conn.transaction():
                await conn.execute("SELECT 1")
                inside.set()
                await finish.wait()
                await conn.execute("SELECT 1/0")  # fails: the transaction rolls back

        try:
            before = renewed_at(pg_server, db_config)
            side_call = asyncio.ensure_future(store.call("side", side, 10.0))
            await asyncio.wait_for(inside.wait(), 10.0)
            result = await store.renew(epoch, 5.0)
            assert result is not None
            finish.set()
            with pytest.raises(LeaseUnavailable, match="DivisionByZero"):
                await side_call
            after = renewed_at(pg_server, db_config)
            assert after > before, "the renewal the caller was told of is gone"
            assert after == result.renewed_at
        finally:
            await store.close()

    run(main())


def test_a_renewal_beside_cordas_row_preparation_is_committed(
        db_config: DatabaseConfig, pg_server: PgServer) -> None:
    """The reproduction as found: Corda's table absent, its row's preparation (a
    transaction that fails on the missing table) and renewals started together, many
    times: every renewal that returned is in the row."""
    db = dataclasses.replace(db_config, schema=f"ch_{uuid.uuid4().hex[:10]}")
    pg_server.execute(f"CREATE SCHEMA {db.schema}")

    async def main() -> None:
        store, epoch = await holder(db)
        query = f"SELECT renewed_at FROM {db.schema}.{db.table} WHERE lease_name = %s"
        try:
            ((previous,),) = pg_server.execute(query, [db.lease_name])
            for _ in range(20):
                outcome, result = await asyncio.gather(
                    store.prepare_corda_row(epoch, 5.0), store.renew(epoch, 5.0))
                assert outcome == "absent"
                assert result is not None
                ((value,),) = pg_server.execute(query, [db.lease_name])
                assert value > previous, "an acknowledged renewal was rolled back"
                assert value == result.renewed_at
                previous = value
        finally:
            await store.close()

    run(main())


def test_a_lease_statement_never_waits_for_a_side_operation(
        db_config: DatabaseConfig) -> None:
    """A side operation busy on the server for 3 s (a slow statement inside a
    transaction) does not delay a renewal: the lease statements have their own
    connection. Shared, the renewal queued behind it and timed out."""
    db = dataclasses.replace(db_config, operation_timeout=5.0)  # the server lets it run

    async def main() -> None:
        store, epoch = await holder(db)
        busy = asyncio.Event()

        async def slow(conn: Conn) -> None:
            async with conn.transaction():
                busy.set()
                await conn.execute("SELECT pg_sleep(3)")

        try:
            side_call = asyncio.ensure_future(store.call("slow", slow, 10.0))
            await asyncio.wait_for(busy.wait(), 10.0)
            await asyncio.sleep(0.05)  # let the slow statement reach the server
            started = time.monotonic()
            result = await store.renew(epoch, 1.0)  # a bound well below the 3 s
            assert result is not None
            assert time.monotonic() - started < 1.0
            await side_call
        finally:
            await store.close()

    run(main())


def test_side_operations_do_not_share_a_connection_either(db_config: DatabaseConfig) -> None:
    """Two side operations at once: the second runs only once the first is done, so a
    statement of one never lands in the other's transaction."""

    async def main() -> None:
        store, _ = await holder(db_config)
        order: list[str] = []
        inside, finish = asyncio.Event(), asyncio.Event()

        async def first(conn: Conn) -> None:
            async with conn.transaction():
                order.append("first in")
                inside.set()
                await finish.wait()
                order.append("first out")

        async def second(conn: Conn) -> int:
            order.append("second")
            cur = await conn.execute("SELECT txid_current_if_assigned() IS NULL")
            row = await cur.fetchone()
            assert row is not None and row[0] is True
            return int(conn.info.transaction_status)

        try:
            one = asyncio.ensure_future(store.call("first", first, 10.0))
            await asyncio.wait_for(inside.wait(), 10.0)
            two = asyncio.ensure_future(store.call("second", second, 10.0))
            await asyncio.sleep(0.2)
            assert order == ["first in"], "the second ran while the first was inside"
            finish.set()
            await one
            assert await two == int(psycopg.pq.TransactionStatus.IDLE)
            assert order == ["first in", "first out", "second"]
        finally:
            await store.close()

    run(main())


def test_a_lease_statement_left_inside_a_transaction_has_failed(
        db_config: DatabaseConfig) -> None:
    """The belt: whatever opened it, a lease statement that leaves its connection
    inside a transaction block is not counted (its write is not committed), and the
    connection is not used again."""

    async def main() -> None:
        store, epoch = await holder(db_config)
        try:
            async with store._lease.borrow() as conn:  # a bug elsewhere, simulated
                await conn.execute("BEGIN")
            with pytest.raises(LeaseUnavailable, match="left INTRANS"):
                await store.renew(epoch, 5.0)
            result = await store.renew(epoch, 5.0)  # a fresh connection
            assert result is not None
        finally:
            await store.close()

    run(main())


def test_the_side_connection_is_closed_when_idle_and_reopened_on_demand(
        db_config: DatabaseConfig, pg_server: PgServer) -> None:
    """The side channel (start-up checks, Corda's row, fencing) closes its connection
    once unused for `idle_close`; the lease channel keeps its own; the next side
    operation opens a new one. Counted in pg_stat_activity by the store's backends."""

    def backends() -> set[int]:
        rows = pg_server.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
            ["corda-ha-supervisor/node-a"])
        return {int(r[0]) for r in rows}

    async def wait_for(predicate: object, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():  # type: ignore[operator]
            assert time.monotonic() < deadline, "timed out"
            await asyncio.sleep(0.02)

    async def main() -> None:
        store = PostgresLeaseStore(db_config, this_process("node-a"), W)
        store._side.idle_close = 0.3  # the shipped value is SIDE_IDLE_CLOSE
        await store.ensure_schema(5.0)
        epoch = await store.acquire(None, timeout=5.0)
        assert epoch is not None
        try:
            await store.members(5.0)  # a side operation
            both = backends()
            assert len(both) == 2, both  # the lease channel's and the side channel's
            await wait_for(lambda: len(backends()) == 1, 10.0)
            assert await store.renew(epoch, 5.0) is not None  # the lease channel's stays
            (lease_backend,) = backends()
            assert lease_backend in both
            await store.members(5.0)
            assert len(backends()) == 2  # reopened on demand
        finally:
            await store.close()

    run(main())
