"""The in-memory lease store (tests/harness/fakestore.py) keeps the lease port's contract
as the PostgreSQL store does: every scenario here runs against both, with the same
answers. Two contenders share one row; W = 0.5 s, waited out in real time."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterator

import pytest

from supervisor.config import DatabaseConfig
from supervisor.core.identity import Identity, ProcessRef
from supervisor.lease import LeaseStore, LeaseVersion, PostgresLeaseStore
from supervisor.node.machine import this_process
from tests.harness.aio import run
from tests.harness.fakestore import FakeStore, MemoryDb

pytestmark = pytest.mark.timeout(30)

W = 0.5
TO = 5.0
Make = Callable[[Identity], LeaseStore]


@pytest.fixture(params=["postgres", "memory"])
def make(request: pytest.FixtureRequest) -> Iterator[Make]:
    """A factory of stores of one lease (one row), as each identity."""
    if request.param == "postgres":
        db_config: DatabaseConfig = request.getfixturevalue("db_config")
        yield lambda identity: PostgresLeaseStore(db_config, identity, W)
    else:
        db = MemoryDb(W)
        yield lambda identity: FakeStore(identity, W, db=db)


def contenders(make: Make) -> tuple[LeaseStore, LeaseStore]:
    return make(this_process("node-a")), make(this_process("node-b"))


async def version(store: LeaseStore) -> LeaseVersion:
    return (await store.observe(TO)).version


def test_the_first_acquire_inserts_and_a_held_row_is_taken_only_once_expired(
        make: Make) -> None:
    a, b = contenders(make)

    async def main() -> None:
        try:
            await a.ensure_schema(TO)
            assert await a.acquire(None, timeout=TO) == 1
            assert await b.acquire(None, timeout=TO) is None  # a row exists: never
            held = await version(b)
            assert await b.acquire(held, timeout=TO) is None  # held, not expired
            stale = dataclasses.replace(held, renewed_at=None)
            await asyncio.sleep(W + 0.2)
            snap = await b.observe(TO)
            assert snap.expired and snap.holder == "node-a"
            assert await b.acquire(stale, timeout=TO) is None  # not the version watched
            assert await b.acquire(held, server="another server", timeout=TO) is None
            assert await b.acquire(held, server=snap.server, timeout=TO) == 2
            snap = await a.observe(TO)
            assert (snap.holder, snap.epoch, snap.expired) == ("node-b", 2, False)
            assert snap.row_server == snap.server
        finally:
            await asyncio.gather(a.close(), b.close())
    run(main())


def test_renew_and_release_act_only_for_this_instance_and_epoch(make: Make) -> None:
    a, b = contenders(make)

    async def main() -> None:
        try:
            await a.ensure_schema(TO)
            epoch = await a.acquire(None, timeout=TO)
            assert epoch == 1
            before = await version(a)
            assert await b.renew(epoch, TO) is None
            assert await a.renew(epoch + 1, TO) is None
            renewed = await a.renew(epoch, TO)
            assert renewed is not None and not renewed.handover_requested
            after = await version(a)
            assert after.renewed_at is not None and before.renewed_at is not None
            assert after.renewed_at > before.renewed_at
            assert not await b.release(epoch, TO)
            assert not await a.release(epoch + 1, TO)
            assert (await a.observe(TO)).holder == "node-a"
            assert await a.release(epoch, TO)
            snap = await b.observe(TO)
            assert snap.free and snap.epoch == epoch  # the epoch is kept
            assert await a.renew(epoch, TO) is None  # released: lost
            assert await b.acquire(snap.version, server=snap.server, timeout=TO) == epoch + 1
        finally:
            await asyncio.gather(a.close(), b.close())
    run(main())


def test_an_expired_lease_cannot_be_renewed(make: Make) -> None:
    a, _ = contenders(make)

    async def main() -> None:
        try:
            await a.ensure_schema(TO)
            epoch = await a.acquire(None, timeout=TO)
            assert epoch is not None
            await asyncio.sleep(W + 0.2)
            assert await a.renew(epoch, TO) is None
        finally:
            await a.close()
    run(main())


def test_a_dead_predecessor_of_this_machine_is_taken_over_at_once(make: Make) -> None:
    old = this_process("node-a")
    old = dataclasses.replace(old, pid=old.pid + 100000, started=12345)
    new = dataclasses.replace(this_process("node-a"), machine=old.machine)
    stranger = dataclasses.replace(this_process("node-a"), machine="another machine")
    a, b, c = make(old), make(new), make(stranger)
    dead = ProcessRef(old.pid, old.started)

    async def main() -> None:
        try:
            await a.ensure_schema(TO)
            assert await a.acquire(None, timeout=TO) == 1
            held = await version(b)
            assert await c.acquire(held, takeover=dead, timeout=TO) is None  # other machine
            assert await b.acquire(held, takeover=ProcessRef(old.pid, 1), timeout=TO) is None
            assert await b.acquire(held, takeover=dead, timeout=TO) == 2
            assert (await b.observe(TO)).instance == new.instance
        finally:
            await asyncio.gather(a.close(), b.close(), c.close())
    run(main())


def test_a_release_wakes_the_listeners(make: Make) -> None:
    a, b = contenders(make)

    async def main() -> None:
        woken = asyncio.Event()
        wakes = 0

        def on_release() -> None:
            nonlocal wakes
            wakes += 1
            woken.set()

        listener = asyncio.create_task(b.listen(on_release))
        try:
            await a.ensure_schema(TO)
            await asyncio.wait_for(woken.wait(), TO)  # once at the start: look now
            epoch = await a.acquire(None, timeout=TO)
            assert epoch is not None
            await asyncio.sleep(0.3)  # the listener has settled
            woken.clear()
            first = wakes
            assert await a.release(epoch, TO)
            await asyncio.wait_for(woken.wait(), TO)
            assert wakes > first
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
            await asyncio.gather(a.close(), b.close())
    run(main())
