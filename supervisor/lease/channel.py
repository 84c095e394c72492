"""A channel: one conversation with the database, lent to one operation at a time.

A psycopg `AsyncConnection` serialises single statements (its `lock`), not
transactions: `conn.transaction()` holds that lock only for BEGIN and COMMIT, so a
statement another task sends in between runs *inside* the open transaction and is
rolled back with it. A renewal that ran there would be reported as done while the
database undid it. So the store never shares a connection between operations: a
`Channel` lends its connection to one operation for the operation's whole length
(`borrow()`), and the store keeps separate channels for separate concerns (the
lease statements on one, everything that needs a transaction on another; see
`supervisor.lease.store`).

A channel's connection is opened on demand and replaced when it breaks or when an
operation that used it is abandoned (`forget`): a connection whose operation timed
out is never lent again, whatever state it was left in. A channel made with
`idle_close` closes its connection once nobody has borrowed it for that long (the
side channel: used at start, at a node start and by the fencing check, idle
otherwise; a held idle connection would cost the database a backend per supervisor).

Connecting has a budget of its own (`connect_budget`: libpq's connect timeout for
each host of a multi-host URL in turn), not the bound of the operation that asked
for the connection: the attempts are the channel's (`supervisor.lease.connects`), an
operation waits for one only as long as its own bound allows, and an attempt its
operation gave up on goes on and is lent to the next operation. So a silent first
host costs a few failed calls, not every call; no statement is bounded more loosely.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from psycopg.pq import TransactionStatus

from supervisor.core.row import LeaseUnavailable
from supervisor.lease.bounded import Bounded, Conn
from supervisor.lease.connects import Connects


class Channel:
    """One connection at a time for `name`, opened by `open_connection`.

    `single_statements`: the channel carries only single autocommitted statements; an
    operation that leaves the connection anywhere but idle (inside a transaction, a
    failed one, or in an unknown state) has failed, and the connection is dropped.
    """

    def __init__(self, name: str, open_connection: Callable[[], Awaitable[Conn]],
                 bounded: Bounded, *, single_statements: bool, connect_budget: float,
                 idle_close: float | None = None) -> None:
        self.name = name
        self.single_statements = single_statements
        self.idle_close = idle_close  # seconds unborrowed after which it is closed
        self._used_at = 0.0  # the event loop's time of the last borrow's end
        self._idle_task: asyncio.Task[None] | None = None
        self._bounded = bounded
        self._connects = Connects(name, open_connection, bounded, connect_budget, self._wanted)
        self._conn: Conn | None = None
        self._busy: asyncio.Lock | None = None  # held by the operation using `_conn`
        self._connect_lock = asyncio.Lock()
        self.closed = False

    @asynccontextmanager
    async def borrow(self) -> AsyncIterator[Conn]:
        """The channel's connection, for this operation alone until the block ends."""
        while True:
            conn, busy = await self._current()
            await busy.acquire()
            if conn is self._conn and not (conn.closed or conn.broken):
                break
            busy.release()  # replaced while we queued: take the new one
        try:
            yield conn
        finally:
            busy.release()
            self._close_when_idle()

    def _close_when_idle(self) -> None:
        """(Re)arm the idle close after a borrow ended (no-op without `idle_close`)."""
        if self.idle_close is None or self.closed:
            return
        loop = asyncio.get_running_loop()
        self._used_at = loop.time()
        if self._idle_task is None or self._idle_task.done():
            self._idle_task = loop.create_task(self._idle_watch())

    async def _idle_watch(self) -> None:
        """Close the connection once unborrowed for `idle_close` seconds. No await
        separates the check from the drop, so no borrow can slip in between; a borrow
        that queued for the old connection finds it gone and opens a new one."""
        loop = asyncio.get_running_loop()
        while self._conn is not None and not self.closed and self.idle_close is not None:
            left = self._used_at + self.idle_close - loop.time()
            if left > 0:
                await asyncio.sleep(left)
                continue
            if self._busy is not None and self._busy.locked():
                self._used_at = loop.time()  # lent right now: look again later
                continue
            self.drop(self._conn)
            self._connects.close_made()  # nor one a given-up connect left behind

    def check_idle(self, conn: Conn, what: str) -> None:
        """On a single-statement channel: raise `LeaseUnavailable` (and drop `conn`)
        unless `conn` is idle, i.e. the statement that just ran was committed."""
        if not self.single_statements:
            return
        status = conn.info.transaction_status
        if status != TransactionStatus.IDLE:
            self.drop(conn)
            raise LeaseUnavailable(
                f"{what}: the {self.name} connection was left {status.name} after the "
                "statement (a lease statement must run alone, autocommitted): not counted")

    def adopt(self, conn: Conn) -> None:
        """Make `conn` (opened by the caller, used by nobody else) the current one; the
        previous one is closed in the background once its user is done."""
        old = self._conn
        if old is conn:
            return
        self._conn, self._busy = conn, asyncio.Lock()
        if old is not None:
            self._bounded.close_in_background(old)

    def forget(self, conn: Conn | None) -> Conn | None:
        """Stop lending `conn` (if it is still the current one); returns it."""
        if conn is not None and self._conn is conn:
            self._conn, self._busy = None, None
        return conn

    def drop(self, conn: Conn | None) -> None:
        """Forget `conn` and close it in the background."""
        self._bounded.close_in_background(self.forget(conn))

    def close(self) -> None:
        self.closed = True
        if self._idle_task is not None:
            self._idle_task.cancel()
        self.drop(self._conn)
        self._connects.close()

    async def _current(self) -> tuple[Conn, asyncio.Lock]:
        async with self._connect_lock:
            conn, busy = self._conn, self._busy
            if conn is None or busy is None or conn.closed or conn.broken:
                self._conn, self._busy = None, None
                conn = await self._connects.take()
                if self.closed:
                    self._bounded.close_in_background(conn)
                    raise LeaseUnavailable(f"{self.name}: lease store closed")
                busy = asyncio.Lock()
                self._conn, self._busy = conn, busy
            return conn, busy

    def _wanted(self) -> bool:
        """Whether a connection just made is needed: the channel is open and has none
        that works."""
        conn = self._conn
        return not self.closed and (conn is None or conn.closed or conn.broken)
