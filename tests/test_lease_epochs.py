"""The epoch is the token of every write by the holder: a late renewal or release of an
epoch the same process no longer holds changes nothing. Real PostgreSQL."""

from __future__ import annotations

import pytest

from supervisor.config import DatabaseConfig
from supervisor.lease import PostgresLeaseStore
from supervisor.node.machine import this_process
from tests.harness.aio import run

pytestmark = pytest.mark.timeout(30)


def test_a_late_release_of_an_old_epoch_frees_nothing(db_config: DatabaseConfig) -> None:
    """One process releases epoch 1 (a release that, say, timed out and committed late),
    takes the lease again as epoch 2, then the old release arrives once more: the lease
    must stay held. Without the epoch in the release, it freed epoch 2 and a standby
    took the free row at once while this process's node ran."""

    async def main() -> None:
        me = PostgresLeaseStore(db_config, this_process("a"), 30.0)
        try:
            await me.ensure_schema(5.0)
            first = await me.acquire(None, timeout=5.0)
            assert first == 1
            assert await me.release(first, 5.0) is True
            snap = await me.observe(5.0)
            second = await me.acquire(snap.version, timeout=5.0)
            assert second == 2
            assert await me.release(first, 5.0) is False, "an old epoch's release freed it"
            snap = await me.observe(5.0)
            assert snap.holder == "a" and snap.epoch == 2 and snap.live
            assert await me.renew(first, 5.0) is None, "an old epoch's renewal counted"
            assert await me.renew(second, 5.0) is not None
        finally:
            await me.close()

    run(main())
