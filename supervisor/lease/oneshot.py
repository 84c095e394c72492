"""One-shot reads for the operator's commands (`status`, `handover`): a store that
writes nothing, used once and closed. Creates nothing; raises `LeaseUnavailable`."""

from __future__ import annotations

import os
import uuid

from supervisor.config import DatabaseConfig
from supervisor.core.identity import Identity
from supervisor.core.row import LeaseSnapshot, LeaseUnavailable
from supervisor.lease.members import MemberRow
from supervisor.lease.store import PostgresLeaseStore


def reader() -> Identity:
    """The identity of a one-shot reader (`status`, `handover`): it writes nothing."""
    return Identity("status", "", os.getpid(), uuid.uuid4().hex)


async def read_state(db: DatabaseConfig, wait_interval: float,
                     timeout: float) -> tuple[LeaseSnapshot | None, list[MemberRow]]:
    """One-shot read for `status` and `handover`: the lease row (None when there is no
    table or row) and the members. Creates nothing. Raises `LeaseUnavailable`."""
    store = PostgresLeaseStore(db, reader(), wait_interval)
    try:
        try:
            snap: LeaseSnapshot | None = await store.observe(timeout)
        except LeaseUnavailable as e:
            if e.sqlstate in ("42P01", "3F000"):  # undefined table / schema
                return None, []
            raise
        assert snap is not None
        return (snap if snap.exists else None), await store.members(timeout)
    finally:
        await store.close()


async def read_snapshot(db: DatabaseConfig, wait_interval: float,
                        timeout: float) -> LeaseSnapshot | None:
    """One-shot read for `status`: the lease row, or None when there is no table or row.

    Raises `LeaseUnavailable` when the database cannot be read within `timeout`.
    """
    store = PostgresLeaseStore(db, reader(), wait_interval)
    try:
        try:
            snap = await store.observe(timeout)
        except LeaseUnavailable as e:
            if e.sqlstate in ("42P01", "3F000"):  # undefined table / schema
                return None
            raise
        return snap if snap.exists else None
    finally:
        await store.close()
