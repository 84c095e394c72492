"""The lease store's statements against a real PostgreSQL (tests/harness/pgserver.py;
stores from tests/harness/leasedb.py); no mocks. The schema, the snapshot, acquire (one
winner, compare-and-set on the version watched, the takeover of a dead predecessor, the
server watched), renew (and `expires_at` after every write), handover and release.
The store under faults: tests/test_lease_faults.py."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import timedelta

import psycopg
import pytest

from supervisor.config import DatabaseConfig
from supervisor.core.identity import ProcessRef
from supervisor.lease import (
    LeaseSnapshot,
    LeaseVersion,
    read_snapshot,
)
from tests.harness.aio import run
from tests.harness.leasedb import TO, closing, store
from tests.harness.pgserver import PgServer

pytestmark = pytest.mark.timeout(30)


# ------------------------------------------------------------------ schema


def test_ensure_schema_concurrent_and_idempotent(db_config: DatabaseConfig) -> None:
    suffix = uuid.uuid4().hex[:12]
    db = dataclasses.replace(db_config, schema=f"S-{suffix}", table=f"Lease {suffix}")

    async def main() -> LeaseSnapshot:
        stores = [store(db, f"m{i}") for i in range(8)]
        try:
            await asyncio.gather(*(s.ensure_schema(TO) for s in stores))
            await asyncio.gather(*(s.ensure_schema(TO) for s in stores))
            return await stores[0].observe(TO)
        finally:
            await closing(stores)

    snap = run(main())
    assert not snap.exists and snap.free and snap.epoch == 0 and not snap.expired


def test_read_snapshot(db_config: DatabaseConfig) -> None:
    missing = dataclasses.replace(db_config, table=f"missing_{uuid.uuid4().hex}")

    async def main() -> None:
        assert await read_snapshot(missing, 5.0, TO) is None
        s = store(db_config)
        try:
            await s.ensure_schema(TO)
            assert await read_snapshot(db_config, 5.0, TO) is None
            assert await s.acquire(None, timeout=TO) == 1
        finally:
            await s.close()
        snap = await read_snapshot(db_config, 5.0, TO)
        assert snap is not None and snap.holder == "node-a" and snap.epoch == 1

    run(main())


# ------------------------------------------------------------------ acquire


def test_many_contenders_exactly_one_wins_and_epoch_grows(db_config: DatabaseConfig) -> None:
    async def main() -> None:
        stores = [store(db_config, f"machine-{i}") for i in range(20)]
        try:
            await stores[0].ensure_schema(TO)
            # connect everyone first so that the acquisitions really race
            await asyncio.gather(*(s.observe(TO) for s in stores))
            results = await asyncio.gather(*(s.acquire(None, timeout=TO) for s in stores))
            assert sorted(results, key=lambda r: r or 0) == [None] * 19 + [1]
            for expected_epoch in range(2, 6):
                winner = stores[[r is not None for r in results].index(True)]
                snap = await winner.observe(TO)
                assert snap.holder == winner.identity.machine_name
                assert snap.instance == winner.identity.instance
                assert await winner.release(snap.epoch, TO)
                free = await stores[0].observe(TO)
                assert free.free and free.epoch == expected_epoch - 1
                results = await asyncio.gather(
                    *(s.acquire(free.version, timeout=TO) for s in stores)
                )
                assert sorted(results, key=lambda r: r or 0) == [None] * 19 + [expected_epoch]
        finally:
            await closing(stores)

    run(main())


def test_acquire_requires_expected_and_free_or_expired(db_config: DatabaseConfig) -> None:
    async def main() -> None:
        a = store(db_config, "node-a", w=0.3)
        b = store(db_config, "node-b", w=0.3)
        try:
            await a.ensure_schema(TO)
            assert await a.acquire(None, timeout=TO) == 1
            seen = await b.observe(TO)
            assert not seen.free and not seen.expired and seen.holder_pid == a.identity.pid
            # live lease: not taken, whatever expected says
            assert await b.acquire(seen.version, timeout=TO) is None
            assert await b.acquire(None, timeout=TO) is None
            # a renews: the version b saw is stale now
            assert await a.renew(1, TO) is not None
            await asyncio.sleep(0.45)
            now = await b.observe(TO)
            assert now.expired and now.version != seen.version
            assert await b.acquire(seen.version, timeout=TO) is None
            assert await b.acquire(LeaseVersion(1, a.identity.instance, None),
                                   timeout=TO) is None
            assert await b.acquire(now.version, timeout=TO) == 2
            after = await a.observe(TO)
            assert after.holder == "node-b" and after.epoch == 2 and not after.expired
            assert after.handover_requested_at is None
            assert after.acquired_at == after.renewed_at
            assert after.expires_at is not None and after.renewed_at is not None
            assert (after.expires_at - after.renewed_at).total_seconds() == pytest.approx(0.3)
            # the loser's renewals fail from now on
            assert await a.renew(1, TO) is None
        finally:
            await closing([a, b])

    run(main())


def test_takeover_only_for_same_name_machine_identity_and_process(
        db_config: DatabaseConfig) -> None:
    """The dead-predecessor shortcut needs machineName, machine identity (boot id + PID
    namespace), pid and start time to match; a host name proves nothing."""

    async def main() -> None:
        old = store(db_config, "node-a", host="h", pid=4242, identity="boot:1 pidns:1",
                    started=100)
        same = store(db_config, "node-a", host="h", pid=4343, identity="boot:1 pidns:1",
                     started=200)
        cloned = store(db_config, "node-a", host="h", pid=4343, identity="boot:2 pidns:1",
                       started=200)
        other_ns = store(db_config, "node-a", host="h", pid=4343, identity="boot:1 pidns:9",
                         started=200)
        other_name = store(db_config, "node-b", host="h", pid=4343, identity="boot:1 pidns:1",
                           started=200)
        stores = [old, same, cloned, other_ns, other_name]
        dead = ProcessRef(4242, 100)
        try:
            await old.ensure_schema(TO)
            assert await old.acquire(None, timeout=TO) == 1
            snap = await same.observe(TO)
            assert (snap.holder_machine, snap.holder_started) == ("boot:1 pidns:1", 100)
            v = snap.version
            assert await same.acquire(v, timeout=TO) is None
            assert await same.acquire(v, takeover=ProcessRef(4243, 100), timeout=TO) is None
            assert await same.acquire(v, takeover=ProcessRef(4242, 101), timeout=TO) is None
            assert await cloned.acquire(v, takeover=dead, timeout=TO) is None
            assert await other_ns.acquire(v, takeover=dead, timeout=TO) is None
            assert await other_name.acquire(v, takeover=dead, timeout=TO) is None
            assert await same.acquire(None, takeover=dead, timeout=TO) is None
            assert await same.acquire(v, takeover=dead, timeout=TO) == 2
            snap = await same.observe(TO)
            assert (snap.holder_pid, snap.instance) == (4343, same.identity.instance)
            assert (snap.holder_machine, snap.holder_started) == ("boot:1 pidns:1", 200)
        finally:
            await closing(stores)

    run(main())


def test_observe_names_the_server_and_acquire_needs_that_server(
        db_config: DatabaseConfig, pg_server: PgServer) -> None:
    async def main() -> None:
        a = store(db_config, "node-a")
        try:
            await a.ensure_schema(TO)
            snap = await a.observe(TO)
            assert snap.server.startswith("127.0.0.1:") and " up since " in snap.server
            assert snap.server_uptime is not None and snap.server_uptime > 0
            assert await a.acquire(None, server="10.9.9.9:5432 up since 1", timeout=TO) is None
            assert not (await a.observe(TO)).exists
            assert await a.acquire(None, server=snap.server, timeout=TO) == 1
            held = await a.observe(TO)
            assert held.row_server == snap.server == held.server  # every write records it
            assert " timeline 00000001" in held.server
            await asyncio.to_thread(  # as an older version wrote it: no record
                pg_server.execute, "UPDATE corda_ha_lease SET server_id = NULL "
                "WHERE lease_name = %s", [db_config.lease_name])
            assert (await a.observe(TO)).row_server is None
            assert await a.renew(1, TO) is not None
            assert (await a.observe(TO)).row_server == snap.server
            assert await a.release(1, TO)
            released = await a.observe(TO)
            assert released.free and released.row_server == snap.server
            v = released.version
            assert await a.acquire(v, server="another", timeout=TO) is None
            assert await a.acquire(v, server=snap.server, timeout=TO) == 2
        finally:
            await closing([a])

    run(main())


def test_old_table_gets_the_new_columns(pg_server: PgServer, db_config: DatabaseConfig) -> None:
    table = f"old_{uuid.uuid4().hex[:10]}"
    pg_server.execute(f"""CREATE TABLE {table} (lease_name text PRIMARY KEY, holder text,
        holder_host text, holder_pid integer, instance text, epoch bigint NOT NULL DEFAULT 0,
        acquired_at timestamptz, renewed_at timestamptz, expires_at timestamptz,
        handover_requested_at timestamptz)""")
    db = dataclasses.replace(db_config, table=table)

    async def main() -> None:
        a = store(db, "node-a")
        try:
            await a.ensure_schema(TO)
            await a.ensure_schema(TO)
            assert await a.acquire(None, timeout=TO) == 1
            snap = await a.observe(TO)
            assert snap.holder_machine == a.identity.machine
        finally:
            await closing([a])

    run(main())


def test_lease_sessions_use_synchronous_commit(db_config: DatabaseConfig) -> None:
    from supervisor.lease.bounded import connect_kwargs

    db = dataclasses.replace(db_config, conninfo=db_config.conninfo)
    with psycopg.connect(db.conninfo, **connect_kwargs(db, "t")) as conn:
        row = conn.execute("SHOW synchronous_commit").fetchone()
    assert row == ("on",)  # the test server's default is off


# ------------------------------------------------------------------ renew / handover / release


def test_renew(db_config: DatabaseConfig) -> None:
    async def main() -> None:
        a = store(db_config, "node-a", w=0.3)
        b = store(db_config, "node-b", w=0.3)
        try:
            await a.ensure_schema(TO)
            assert await a.renew(1, TO) is None  # no row yet
            epoch = await a.acquire(None, timeout=TO)
            assert epoch == 1
            before = await a.observe(TO)
            r = await a.renew(epoch, TO)
            assert r is not None and not r.handover_requested
            after = await a.observe(TO)
            assert before.renewed_at is not None and after.renewed_at is not None
            assert after.renewed_at > before.renewed_at and after.epoch == 1
            # the renewal moves expires_at to renewed_at + W (database clock)
            assert before.expires_at is not None and after.expires_at is not None
            assert after.expires_at > before.expires_at
            assert (after.expires_at - after.renewed_at).total_seconds() == pytest.approx(0.3)
            assert await a.renew(epoch + 1, TO) is None  # wrong epoch
            assert await b.renew(epoch, TO) is None  # wrong instance
            # a handover request shows up in the next renewal
            snap = await b.request_handover(TO)
            assert snap.handover_requested_at is not None and snap.holder == "node-a"
            r = await a.renew(epoch, TO)
            assert r is not None and r.handover_requested
            # after expiry the lease is lost even if nobody took it
            await asyncio.sleep(0.4)
            assert await a.renew(epoch, TO) is None
        finally:
            await closing([a, b])

    run(main())


def test_expires_at_follows_every_renewal(db_config: DatabaseConfig) -> None:
    """`expires_at` is exactly `renewed_at + W` after the acquisition and after every
    renewal, plain or hedged, and both move forward on every renewal."""
    w = 5.0

    async def main() -> None:
        a = store(db_config, "node-a", w=w)
        try:
            await a.ensure_schema(TO)
            epoch = await a.acquire(None, timeout=TO)
            assert epoch == 1
            snap = await a.observe(TO)
            assert snap.renewed_at is not None and snap.expires_at is not None
            assert snap.expires_at - snap.renewed_at == timedelta(seconds=w)
            previous = snap
            for i in range(8):
                hedge = 0.5 if i % 2 else None  # the hedged path writes the same row
                assert await a.renew(epoch, TO, hedge_after=hedge) is not None
                snap = await a.observe(TO)
                assert snap.renewed_at is not None and snap.expires_at is not None
                assert previous.renewed_at is not None and previous.expires_at is not None
                assert snap.expires_at - snap.renewed_at == timedelta(seconds=w), i
                assert snap.renewed_at > previous.renewed_at, i
                assert snap.expires_at > previous.expires_at, i
                assert snap.expires_at > snap.db_now and not snap.expired
                assert snap.epoch == epoch
                previous = snap
                await asyncio.sleep(0.01)
        finally:
            await closing([a])

    run(main())


def test_request_handover_on_free_lease_sets_nothing(db_config: DatabaseConfig) -> None:
    async def main() -> None:
        a = store(db_config)
        try:
            await a.ensure_schema(TO)
            snap = await a.request_handover(TO)
            assert not snap.exists and snap.handover_requested_at is None
            epoch = await a.acquire(None, timeout=TO)
            assert epoch is not None and await a.release(epoch, TO)
            snap = await a.request_handover(TO)
            assert snap.free and snap.handover_requested_at is None
        finally:
            await a.close()

    run(main())


def test_release_wakes_listener_and_frees_row(db_config: DatabaseConfig) -> None:
    async def main() -> None:
        a = store(db_config, "node-a", w=30)
        b = store(db_config, "node-b", w=30)
        other = store(dataclasses.replace(db_config, lease_name=db_config.lease_name + "-x"))
        loop = asyncio.get_running_loop()
        wakeups: asyncio.Queue[float] = asyncio.Queue()
        listener = asyncio.create_task(b.listen(lambda: wakeups.put_nowait(loop.time())))
        try:
            await a.ensure_schema(TO)
            await asyncio.wait_for(wakeups.get(), TO)  # (re)connected: "look now"
            epoch = await a.acquire(None, timeout=TO)
            assert epoch == 1
            o_epoch = await other.acquire(None, timeout=TO)
            assert o_epoch is not None and await other.release(o_epoch, TO)  # not our lease
            assert await b.release(epoch, TO) is False  # not b's to release
            await asyncio.sleep(0.3)
            assert wakeups.empty()
            t0 = loop.time()
            assert await a.release(epoch, TO) is True
            woke = await asyncio.wait_for(wakeups.get(), TO)
            assert woke - t0 < 0.5
            snap = await b.observe(TO)
            assert snap.free and snap.holder is None and snap.instance is None
            assert snap.epoch == 1 and snap.exists
            assert await a.release(epoch, TO) is False
            assert await a.renew(epoch, TO) is None
            assert await b.acquire(snap.version, timeout=TO) == 2
        finally:
            listener.cancel()
            with pytest.raises(asyncio.CancelledError):
                await listener
            await closing([a, b, other])

    run(main())
