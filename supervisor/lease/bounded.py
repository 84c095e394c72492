"""Bounded database calls: a timeout owned by the supervisor, and connection settings.

libpq has no client-side read timeout, and server-side timeouts do nothing when
the request never arrives. `Bounded.run` owns the timeout: when it passes, the
caller gets `LeaseUnavailable` at once, and the abandoned call is cancelled and
its connection closed in the background (bounded too). `connect_kwargs` adds
every timeout libpq and the server offer on top (connect, statement, lock, idle
in transaction, TCP user timeout, keepalives) and `synchronous_commit = on`.
`connect_budget` is how long opening one connection may take: libpq's connect
timeout for each host of the URL in turn, not a statement's bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow

from supervisor.config import DatabaseConfig
from supervisor.core.row import LeaseUnavailable

T = TypeVar("T")
Conn = psycopg.AsyncConnection[TupleRow]

# Background clean-up of an abandoned operation: first cancel, then (psycopg may
# be trying to cancel the query server-side) a second cancel after this long,
# which makes psycopg close the connection at once.
_SECOND_CANCEL_AFTER = 0.3
_REAP_GIVE_UP_AFTER = 3.0


def scrub(text: str, password: str | None) -> str:
    """`text` with every occurrence of `password` replaced by ***."""
    if password:
        text = text.replace(password, "***")
    return text


def connect_timeout(db: DatabaseConfig) -> int:
    """libpq's connect timeout for one host, in whole seconds (at least 2, as libpq)."""
    return max(2, math.ceil(db.connect_timeout))


def connect_budget(db: DatabaseConfig) -> float:
    """How long opening one connection may take (seconds): libpq's connect timeout for
    each host the URL names (psycopg tries them one after another, a silent one for the
    whole timeout), plus `operationTimeout` for the name look-ups and the read-write
    check. A connection's budget, never a statement's: see `supervisor.lease.channel`."""
    params = conninfo_to_dict(db.conninfo)
    hosts = max(len(str(params.get(key) or "").split(",")) for key in ("host", "hostaddr"))
    return connect_timeout(db) * hosts + db.operation_timeout


def connect_kwargs(db: DatabaseConfig, application_name: str) -> dict[str, Any]:
    """libpq parameters: everything that bounds a call from the client or server side."""
    op_ms = max(1, int(db.operation_timeout * 1000))
    options = " ".join(
        [
            str(conninfo_to_dict(db.conninfo).get("options") or ""),
            f"-c statement_timeout={op_ms}",
            f"-c lock_timeout={op_ms}",
            f"-c idle_in_transaction_session_timeout={max(op_ms * 2, 1000)}",
            # a lease write is acknowledged only once it is as durable as the
            # server's replication setup makes it (docs/design.md, "What the database must give")
            "-c synchronous_commit=on",
        ]
    ).strip()
    kwargs: dict[str, Any] = {
        "autocommit": True,
        "prepare_threshold": None,  # safe behind pgbouncer in transaction mode
        "connect_timeout": connect_timeout(db),
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 2,
        "tcp_user_timeout": max(1000, op_ms),
        "options": options,
        "application_name": application_name,
    }
    if db.user is not None:
        kwargs["user"] = db.user
    if db.password is not None:
        kwargs["password"] = db.password
    return kwargs


class Bounded:
    """Runs coroutines under a timeout owned by us (see the module docstring).

    An abandoned operation is cancelled in the background (twice if needed), and
    kept referenced until it ends so it is not garbage-collected mid-flight.
    `on_abandon()` forgets the operation's connection and returns it; it is
    closed only once the operation has ended (closing a socket that a running
    task still waits on could confuse the event loop's selector).
    """

    def __init__(self) -> None:
        self.background: set[asyncio.Task[Any]] = set()

    async def run(self, coro: Awaitable[T], timeout: float, what: str,
                  on_abandon: Callable[[], Conn | None]) -> T:
        task: asyncio.Task[T] = asyncio.ensure_future(coro)
        try:
            done, _ = await asyncio.wait({task}, timeout=max(0.0, timeout))
        except asyncio.CancelledError:
            self.abandon(task, on_abandon())
            raise
        if not done:
            self.abandon(task, on_abandon())
            raise LeaseUnavailable(f"{what}: no answer from the database within {timeout:.3g} s")
        return task.result()

    def spawn(self, coro: Awaitable[Any]) -> None:
        t = asyncio.ensure_future(coro)
        self.background.add(t)
        t.add_done_callback(self._finished)

    def _finished(self, t: asyncio.Task[Any]) -> None:
        self.background.discard(t)
        if not t.cancelled():
            t.exception()  # retrieved: no "never retrieved" warning

    def abandon(self, task: asyncio.Task[Any], conn: Conn | None) -> None:
        """Stop waiting for `task`: cancel it in the background, then close `conn`."""
        self.spawn(self._reap(task, conn))

    async def _reap(self, task: asyncio.Task[Any], conn: Conn | None) -> None:
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=_SECOND_CANCEL_AFTER)
        if not done:
            # psycopg is trying to cancel server-side; a second cancellation makes
            # it close the connection instead
            task.cancel()
            await asyncio.wait({task}, timeout=_REAP_GIVE_UP_AFTER)
        if task.done():
            if not task.cancelled():
                task.exception()
            self.close_in_background(conn)

    def close_in_background(self, conn: Conn | None) -> None:
        """Close `conn` in the background, bounded. Only its one user (a channel lends a
        connection to one operation at a time) or the reaper of that user's abandoned
        operation closes it, so nothing else is running on it."""
        if conn is None or conn.closed:
            return

        async def _close() -> None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 1.0)
            if not conn.closed:
                with contextlib.suppress(Exception):
                    conn.pgconn.finish()

        self.spawn(_close())

    async def drain(self, timeout: float) -> None:
        if self.background:
            await asyncio.wait(set(self.background), timeout=timeout)
