"""The lease statements behind the maintenance commands, at the store: a paused pair's
lease cannot be acquired, a lease handed over `--to` a machine only by that machine
(for 2 W after the release), and the history records acquisitions and their ends."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

from supervisor.config import DatabaseConfig
from supervisor.lease import PostgresLeaseStore
from supervisor.node.machine import this_process
from tests.harness.aio import run

pytestmark = pytest.mark.timeout(30)

W = 0.5


def stores(db: DatabaseConfig, *names: str) -> list[PostgresLeaseStore]:
    return [PostgresLeaseStore(db, this_process(n), W) for n in names]


def test_a_paused_lease_cannot_be_acquired(db_config: DatabaseConfig) -> None:
    async def main() -> None:
        (a,) = stores(db_config, "a")
        try:
            await a.ensure_schema(5)
            assert await a.set_paused(True, 5) is None  # no holder yet: the row is made
            snap = await a.observe(5)
            assert snap.paused and snap.free
            assert await a.acquire(snap.version, server=snap.server, timeout=5) is None
            await a.set_paused(False, 5)
            snap = await a.observe(5)
            assert not snap.paused
            assert await a.acquire(snap.version, server=snap.server, timeout=5) == 1
        finally:
            await a.close()

    run(main())


def test_handover_to_a_machine_reserves_the_released_lease_for_2w(
        db_config: DatabaseConfig) -> None:
    db = dataclasses.replace(db_config)

    async def main() -> None:
        a, b, c = stores(db, "a", "b", "c")
        try:
            await a.ensure_schema(5)
            snap = await a.observe(5)
            epoch = await a.acquire(None, server=snap.server, timeout=5)
            assert epoch == 1
            await b.request_handover(5, to="c")
            assert await a.release(epoch, 5)
            free = await b.observe(5)
            assert free.free and free.reserved_for == "c"
            assert await b.acquire(free.version, server=free.server, timeout=5) is None
            assert await c.acquire(free.version, server=free.server, timeout=5) == 2
            assert await c.release(2, 5)
            # a reservation lapses 2 W after the release: the target may be gone
            await a.request_handover(5, to="c")  # nobody holds it: sets nothing
            snap = await a.observe(5)
            assert snap.reserved_for is None
        finally:
            await asyncio.gather(a.close(), b.close(), c.close())

    run(main())


def test_a_reservation_lapses_after_2w(db_config: DatabaseConfig) -> None:
    async def main() -> None:
        a, b = stores(db_config, "a", "b")
        try:
            await a.ensure_schema(5)
            snap = await a.observe(5)
            await a.acquire(None, server=snap.server, timeout=5)
            await a.request_handover(5, to="nobody")
            assert await a.release(1, 5)
            free = await b.observe(5)
            assert await b.acquire(free.version, server=free.server, timeout=5) is None
            await asyncio.sleep(2 * W + 0.1)
            late = await b.observe(5)
            assert late.reserved_for is None
            t0 = time.monotonic()
            assert await b.acquire(late.version, server=late.server, timeout=5) == 2
            assert time.monotonic() - t0 < 5
        finally:
            await asyncio.gather(a.close(), b.close())

    run(main())


def test_a_release_on_a_handover_request_leaves_the_mark(db_config: DatabaseConfig) -> None:
    """A standby that did not look between the request and the release still learns from
    the free row that it was a handover; the next acquisition clears the mark."""
    async def scenario() -> None:
        a = PostgresLeaseStore(db_config, this_process("a"), 2.0)
        b = PostgresLeaseStore(db_config, this_process("b"), 2.0)
        try:
            await a.ensure_schema(5)
            epoch = await a.acquire(None, timeout=5)
            assert epoch is not None
            await b.request_handover(5)
            assert await a.release(epoch, 5)
            free = await b.observe(5)
            assert free.free and free.handover_requested_at is not None
            assert await b.acquire(free.version, timeout=5) == epoch + 1
            assert (await b.observe(5)).handover_requested_at is None
        finally:
            await a.close()
            await b.close()

    run(scenario())
