"""The lease's listener: LISTEN for releases, and the asides that must never slow a
renewal (the history, this supervisor's member row), on a connection of their own.

`Listener.run(on_release)` calls `on_release()` for every release of the lease, and
once each time LISTEN is (re)established (a release may have been missed while not
listening: "look at the lease now"). Every `health_interval` s, and within
`MEMBER_POLL` s of `member_changed()` or a queued history row, it checks its
connection by writing what is queued: the history rows, then this member's row (or
`SELECT 1` without one). A failure reopens the connection with backoff (0.1 s
doubling to 2 s). Never raises except CancelledError; exceptions from `on_release`
are logged. A missing table or privilege for the history or the members is logged
once and then left alone: they are aids to operators.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from psycopg import sql

from supervisor.config import DatabaseConfig
from supervisor.core.row import LeaseUnavailable
from supervisor.lease import members as member_rows
from supervisor.lease.bounded import Bounded, Conn, connect_budget, scrub
from supervisor.lease.members import MEMBER_INTERVAL, Member, MemberRow, MemberSql

log = logging.getLogger(__name__)

MEMBER_POLL = 0.2  # how often the LISTEN loop looks for a member change to publish
HISTORY_QUEUE_MAX = 100  # history writes kept while the LISTEN connection is down
BACKOFF_INITIAL = 0.1
BACKOFF_MAX = 2.0


class Listener:
    """See the module docstring. `count(what)` counts a statement for the metrics."""

    def __init__(self, db: DatabaseConfig, lease_name: str, channel: str,
                 open_connection: Callable[[], Awaitable[Conn]], bounded: Bounded,
                 count: Callable[[str], None], members: MemberSql) -> None:
        self._db = db
        self.lease_name = lease_name
        self.channel = channel
        self._open = open_connection
        self._bounded = bounded
        self._count = count
        self._members = members
        self.health_interval = MEMBER_INTERVAL
        # what this supervisor says about itself; refreshed with each health check
        self.member_info: Callable[[], Member] | None = None
        # given every member row after each refresh of ours (the daemon's peers)
        self.members_seen: Callable[[list[MemberRow]], None] | None = None
        self._members_broken = False
        self._dirty = True
        self._history: list[tuple[sql.Composed, dict[str, Any]]] = []

    def member_changed(self) -> None:
        """This supervisor's member row is out of date: refresh it within MEMBER_POLL."""
        self._dirty = True

    def queue(self, statement: sql.Composed, params: dict[str, Any]) -> None:
        """Queue one history write (the oldest are dropped past HISTORY_QUEUE_MAX)."""
        self._history.append((statement, params))
        del self._history[:-HISTORY_QUEUE_MAX]
        self._dirty = True  # wake the loop within MEMBER_POLL

    async def run(self, on_release: Callable[[], None]) -> None:
        backoff = BACKOFF_INITIAL
        while True:
            connected: list[bool] = []
            try:
                await self._once(on_release, connected)
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, OSError, LeaseUnavailable) as e:
                log.debug("lease listener: %s; reconnecting in %.1f s",
                          scrub(str(e), self._db.password), backoff)
            except Exception:  # never let the listener die
                log.exception("lease listener failed; reconnecting in %.1f s", backoff)
            if connected:
                backoff = BACKOFF_INITIAL  # it had worked: retry soon
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _once(self, on_release: Callable[[], None], connected: list[bool]) -> None:
        """One LISTEN connection, until it fails (raises). Always closes it."""
        op_timeout = self._db.operation_timeout
        holder: list[Conn] = []

        def forget() -> Conn | None:
            return holder.pop() if holder else None

        async def setup() -> Conn:
            conn = await self._open()
            holder.append(conn)
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            return conn

        try:
            conn = await self._bounded.run(
                setup(), connect_budget(self._db) + op_timeout, "listen", forget)
            connected.append(True)
            _call(on_release)
            loop = asyncio.get_running_loop()
            checked = -math.inf
            while True:
                now = loop.time()
                if self._dirty or now - checked >= self.health_interval:
                    self._dirty = False
                    checked = now
                    await self._bounded.run(self._health_check(conn), op_timeout,
                                            "listen health check", forget)
                # notifies() waits on an idle connection, so cancelling it returns at
                # once; notifications that arrive during the health check are kept by
                # psycopg for the next round.
                async for n in conn.notifies(timeout=MEMBER_POLL):
                    if n.payload == self.lease_name:
                        _call(on_release)
        finally:
            # after an abandoned call `holder` is empty: the reaper closes it
            self._bounded.close_in_background(forget())

    async def _health_check(self, conn: Conn) -> None:
        """The queued history, then this member's row (or `SELECT 1` without one)."""
        self._count("listen_health_check")
        while self._history:
            statement, params = self._history[0]
            try:
                await conn.execute(statement, params)
            except (psycopg.errors.UndefinedTable, psycopg.errors.InsufficientPrivilege):
                log.warning("history not written (no table or privilege): see "
                            "`corda-ha-supervisor schema`")
            self._history.pop(0)
        info = self.member_info
        if info is None or self._members_broken:
            await conn.execute("SELECT 1")
            return
        try:
            await member_rows.refresh(conn, self._members, self.lease_name, info())
            seen = self.members_seen
            if seen is not None:
                rows = await member_rows.read(conn, self._members, self.lease_name)
                _call(lambda: seen(rows))
        except (psycopg.errors.UndefinedTable, psycopg.errors.InsufficientPrivilege,
                psycopg.errors.InvalidSchemaName, psycopg.errors.UndefinedColumn) as e:
            self._members_broken = True
            log.warning("member registry unavailable (%s); `status` will not list this "
                        "supervisor; see `corda-ha-supervisor schema`",
                        scrub(str(e).strip(), self._db.password))


def _call(cb: Callable[[], None]) -> None:
    try:
        cb()
    except Exception:
        log.exception("lease listener callback failed")
