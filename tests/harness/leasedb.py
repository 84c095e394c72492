"""Lease stores on the test PostgreSQL (the `db_config` fixture, tests/conftest.py):
`store(...)` contends as a machine whose identity a test may shape (another host, pid,
machine or process start time: a predecessor, a clone), `closing(...)` closes several
at once. `TO` is the per-call bound where timing is not the point."""

from __future__ import annotations

import asyncio
import dataclasses

from supervisor.config import DatabaseConfig
from supervisor.lease import PostgresLeaseStore
from supervisor.node.machine import this_process

TO = 5.0  # generous per-call timeout where timing is not the point


def store(db: DatabaseConfig, machine: str = "node-a", w: float = 5.0, *,
          host: str | None = None, pid: int | None = None, identity: str | None = None,
          started: int | None = None) -> PostgresLeaseStore:
    """A store of `db`'s lease as this process under machineName `machine`, W = `w`;
    `host`, `pid`, `identity` (the machine identity) and `started` replace this process's."""
    ident = this_process(machine)
    ident = dataclasses.replace(ident, host=host or ident.host, pid=pid or ident.pid,
                                machine=identity or ident.machine,
                                started=started or ident.started)
    return PostgresLeaseStore(db, ident, w)


async def closing(stores: list[PostgresLeaseStore]) -> None:
    """Close every store, concurrently."""
    await asyncio.gather(*(s.close() for s in stores))
