"""The lease store under faults, against a real PostgreSQL: a blackholed database (through
a fault proxy, tests/harness/faultproxy.py) times out within the bound and recovers, a
hedged renewal recovers soon after a partition heals, a caller's cancellation is
prompt, the listener reconnects; a database restart, password authentication (and no
password in any error), a server error, and a failing call that does not break the
calls sharing its connection."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Awaitable, Callable

import pytest

from supervisor.config import DatabaseConfig
from supervisor.lease import (
    LeaseSnapshot,
    LeaseUnavailable,
    RenewResult,
)
from supervisor.lease.bounded import Conn
from tests.harness.aio import run
from tests.harness.faultproxy import FaultProxy
from tests.harness.leasedb import TO, closing, store
from tests.harness.pgserver import PgServer

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def proxy(proxies: Callable[[], FaultProxy]) -> FaultProxy:
    """One fault proxy in front of the test database (closed after the test)."""
    return proxies()


@pytest.fixture
def proxied_db(db_config: DatabaseConfig, pg_server: PgServer,
               proxy: FaultProxy) -> DatabaseConfig:
    return dataclasses.replace(db_config, conninfo=pg_server.dsn_via("127.0.0.1", proxy.port))


async def raises_within(call: Callable[[], Awaitable[object]], limit: float) -> float:
    t0 = time.monotonic()
    with pytest.raises(LeaseUnavailable):
        await call()
    elapsed = time.monotonic() - t0
    assert elapsed < limit, f"took {elapsed:.3f} s"
    return elapsed


def test_blackholed_database_times_out_then_recovers(proxied_db: DatabaseConfig,
                                                     proxy: FaultProxy) -> None:
    async def main() -> None:
        a = store(proxied_db, w=30)
        try:
            await a.ensure_schema(TO)
            epoch = await a.acquire(None, timeout=TO)
            assert epoch is not None
            proxy.set_mode("blackhole")
            # an open connection that stops answering
            await raises_within(lambda: a.observe(0.5), 0.7)
            # connecting to a database that never answers
            await raises_within(lambda: a.renew(epoch, 0.5), 0.7)
            await raises_within(lambda: a.observe(0.5), 0.7)
            proxy.set_mode("pass")
            assert (await a.observe(TO)).epoch == epoch
            assert await a.renew(epoch, 0.5) is not None
            # reset: fails fast, then recovers
            proxy.set_mode("reset")
            await raises_within(lambda: a.renew(epoch, 2.0), 1.0)
            proxy.set_mode("pass")
            assert await a.renew(epoch, 0.5) is not None
            # close is bounded even with an abandoned call in flight
            proxy.set_mode("blackhole")
            await raises_within(lambda: a.observe(0.3), 0.5)
        finally:
            t0 = time.monotonic()
            await a.close()
            assert time.monotonic() - t0 < 2.5

    run(main())


def test_hedged_renewal_recovers_soon_after_a_partition_heals(
        proxied_db: DatabaseConfig, proxy: FaultProxy) -> None:
    """A renewal stuck on a blackholed connection is raced on fresh connections, so it
    answers within about one hedge interval of the path healing, not at its timeout."""
    async def main() -> None:
        a = store(proxied_db, w=30)
        try:
            await a.ensure_schema(TO)
            epoch = await a.acquire(None, timeout=TO)
            assert epoch is not None
            proxy.set_mode("blackhole")
            call = asyncio.create_task(a.renew(epoch, 5.0, hedge_after=0.1))
            await asyncio.sleep(0.5)  # the fault lasts 0.5 s
            assert not call.done()
            proxy.set_mode("pass")
            healed = time.monotonic()
            result = await asyncio.wait_for(call, 5.0)
            recovery = time.monotonic() - healed
            assert result is not None
            assert recovery < 0.35, f"hedged renewal took {recovery:.3f}s after healing"
            # the connection that answered is kept for the next call
            assert await a.renew(epoch, 0.5) is not None
            # a refused path: fresh attempts keep coming, without a busy loop
            proxy.set_mode("reset")
            with pytest.raises(LeaseUnavailable):
                await a.renew(epoch, 0.6, hedge_after=0.1)
            proxy.set_mode("pass")
            assert await a.renew(epoch, 0.5, hedge_after=0.1) is not None
        finally:
            await a.close()

    run(main())


def test_caller_cancellation_is_prompt(proxied_db: DatabaseConfig, proxy: FaultProxy) -> None:
    async def main() -> None:
        a = store(proxied_db)
        try:
            await a.ensure_schema(TO)
            proxy.set_mode("blackhole")
            call = asyncio.create_task(a.observe(TO))
            await asyncio.sleep(0.2)
            t0 = time.monotonic()
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            assert time.monotonic() - t0 < 0.2
            proxy.set_mode("pass")
            assert (await a.observe(TO)).lease_name == proxied_db.lease_name
        finally:
            await a.close()

    run(main())


def test_listener_reconnects_after_blackhole(proxied_db: DatabaseConfig, proxy: FaultProxy,
                                             db_config: DatabaseConfig) -> None:
    async def main() -> None:
        a = store(db_config, "node-a")  # direct
        b = store(proxied_db, "node-b")  # listens through the proxy
        b.listen_health_interval = 0.2
        wakeups: asyncio.Queue[None] = asyncio.Queue()
        listener = asyncio.create_task(b.listen(lambda: wakeups.put_nowait(None)))
        try:
            await a.ensure_schema(TO)
            await asyncio.wait_for(wakeups.get(), TO)
            proxy.set_mode("blackhole")
            await asyncio.sleep(1.5)  # health check (1 s op timeout) notices
            proxy.set_mode("pass")
            await asyncio.wait_for(wakeups.get(), 5)  # reconnected
            epoch = await a.acquire(None, timeout=TO)
            assert epoch is not None and await a.release(epoch, TO)
            await asyncio.wait_for(wakeups.get(), 1)
        finally:
            listener.cancel()
            with pytest.raises(asyncio.CancelledError):
                await listener
            await closing([a, b])

    run(main())


def test_database_restart(pg_server: PgServer, db_config: DatabaseConfig) -> None:
    if not pg_server.can_restart:
        pytest.skip("external database (CORDA_HA_TEST_DSN): cannot restart it")

    async def main() -> None:
        a = store(db_config, "node-a", w=30)
        b = store(db_config, "node-b", w=30)
        wakeups: asyncio.Queue[None] = asyncio.Queue()
        listener = asyncio.create_task(b.listen(lambda: wakeups.put_nowait(None)))
        try:
            await a.ensure_schema(TO)
            await asyncio.wait_for(wakeups.get(), TO)
            epoch = await a.acquire(None, timeout=TO)
            assert epoch is not None
            server_before = (await a.observe(TO)).server
            await asyncio.to_thread(pg_server.restart, "fast")
            with pytest.raises(LeaseUnavailable):
                await a.renew(epoch, 1.0)  # the old connection is gone
            assert await a.renew(epoch, 1.0) is not None  # reconnected
            after = await a.observe(TO)
            assert after.server != server_before  # a restart is another server
            assert after.server_uptime is not None and after.server_uptime < 30
            await asyncio.wait_for(wakeups.get(), 5)  # listener reconnected
            assert await a.release(epoch, 1.0)
            await asyncio.wait_for(wakeups.get(), 1)
        finally:
            listener.cancel()
            with pytest.raises(asyncio.CancelledError):
                await listener
            await closing([a, b])

    run(main())


def test_password_auth_and_no_password_in_errors(pg_server: PgServer,
                                                 db_config: DatabaseConfig) -> None:
    if not pg_server.can_restart:
        pytest.skip("external database (CORDA_HA_TEST_DSN): no test role")
    # PostgreSQL 15+: only the owner may create in `public`; the role has its own schema
    good = dataclasses.replace(db_config, conninfo=pg_server.dsn_via("127.0.0.1", pg_server.port),
                               user=PgServer.password_user, password=PgServer.password,
                               schema=f"pw_{uuid.uuid4().hex[:12]}")
    bad = dataclasses.replace(good, password="wrong-Secret-123")

    async def main() -> None:
        a = store(good)
        z = store(bad)
        try:
            await a.ensure_schema(TO)
            assert await a.acquire(None, timeout=TO) == 1
            with pytest.raises(LeaseUnavailable) as info:
                await z.observe(TO)
            assert "wrong-Secret-123" not in str(info.value)
            assert "password authentication failed" in str(info.value)
        finally:
            await closing([a, z])

    run(main())


def test_server_error_is_lease_unavailable(db_config: DatabaseConfig) -> None:
    db = dataclasses.replace(db_config, table=f"missing_{uuid.uuid4().hex}")

    async def main() -> None:
        a = store(db)
        try:
            with pytest.raises(LeaseUnavailable) as info:
                await a.acquire(None, timeout=TO)
            assert info.value.sqlstate == "42P01"
            await a.ensure_schema(TO)  # the store is usable afterwards
            assert await a.acquire(None, timeout=TO) == 1
        finally:
            await a.close()

    run(main())


def test_a_failing_call_does_not_break_calls_queued_behind_it(
        db_config: DatabaseConfig) -> None:
    """A channel lends its connection to one operation at a time; the others queue. A
    call that fails with a server error drops the connection, and the calls queued
    behind it run on a new one: a fencing check refused for a missing privilege must
    not fail the side calls after it, nor the renewal and observation on the lease
    channel (it once did, every time: "connection socket closed")."""

    dropped: list[Conn] = []

    async def refused(conn: Conn) -> None:
        dropped.append(conn)
        await conn.execute("SELECT 1/0")

    async def answered(conn: Conn) -> int:
        # checked before any use: a connection being closed under a statement can take
        # the C library down with it (a crash, not a failing test)
        assert not any(conn is d for d in dropped), "a queued call got a dropped connection"
        cur = await conn.execute("SELECT 7")
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])

    async def main() -> None:
        a = store(db_config)
        try:
            await a.ensure_schema(TO)
            assert await a.acquire(None, timeout=TO) == 1
            for _ in range(20):
                failing, *rest = await asyncio.gather(
                    a.call("check", refused, TO),
                    *(a.call("queued", answered, TO) for _ in range(3)),
                    a.observe(TO), a.renew(1, TO),
                    return_exceptions=True)
                assert isinstance(failing, LeaseUnavailable)
                assert failing.sqlstate == "22012"
                *queued, observed, renewed = rest
                assert queued == [7, 7, 7], queued
                assert isinstance(observed, LeaseSnapshot), observed
                assert observed.epoch == 1
                assert isinstance(renewed, RenewResult), renewed
        finally:
            await a.close()

    run(main())
