"""The lease row after every write (real PostgreSQL): `expires_at` is exactly
`renewed_at + W` after the acquisition and after every renewal, plain or hedged, and
both move forward on every renewal."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from supervisor.config import DatabaseConfig
from tests.harness.aio import run
from tests.harness.leasedb import TO, closing, store

pytestmark = pytest.mark.timeout(30)


def test_expires_at_follows_every_renewal(db_config: DatabaseConfig) -> None:
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
