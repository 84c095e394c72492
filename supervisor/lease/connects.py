"""Connecting for a channel: attempts with a budget of their own, which outlive the
operation that started them.

An operation is bounded by its caller (a lease statement by `operationTimeout`, a
renewal by its deadline), and that bound is usually shorter than libpq's connect
timeout, which a multi-host URL spends on each silent host before it tries the next.
Were a connect cancelled with its operation, a silent first host would keep every
operation from the writable second one. So an operation that needs a connection
starts one attempt and waits, within its own bound, for the first attempt in flight to
succeed: its own or one an earlier operation gave up on. An attempt ends by itself
within `connect_budget` (`supervisor.lease.bounded`); a fresh attempt per operation
keeps a connect a partition swallowed from delaying the recovery once it heals. A
connection nobody needs any more (the channel has one, or is closed) is closed.

May import: the stdlib, psycopg and `supervisor.lease.bounded`, `supervisor.core.row`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from supervisor.core.row import LeaseUnavailable
from supervisor.lease.bounded import Bounded, Conn


class Connects:
    """The connect attempts of the channel `name`, each bounded by `budget` seconds.

    `wanted()` says whether the channel still needs a connection (it has none that
    works, and is open); an attempt that succeeds when it does not is closed.
    """

    def __init__(self, name: str, open_connection: Callable[[], Awaitable[Conn]],
                 bounded: Bounded, budget: float, wanted: Callable[[], bool]) -> None:
        self.name = name
        self._open = open_connection
        self._bounded = bounded
        self.budget = budget
        self._wanted = wanted
        self._attempts: list[asyncio.Task[Conn]] = []  # oldest first

    async def take(self) -> Conn:
        """A new connection, for the caller alone: starts an attempt and returns the first
        that succeeds (a finished one first). Raises the last failure when every attempt
        in flight has failed. Cancelling the caller cancels the waiting only."""
        self._attempts.append(self._start())
        failure: BaseException | None = None
        while True:
            for task in [t for t in self._attempts if t.done()]:
                self._attempts.remove(task)
                if task.cancelled():
                    continue
                failure = task.exception()
                if failure is None and _usable(task.result()):
                    self.close_made()
                    return task.result()
            if not self._attempts:
                raise failure or LeaseUnavailable(f"{self.name}: connecting was cancelled")
            await asyncio.wait(list(self._attempts), return_when=asyncio.FIRST_COMPLETED)

    def close(self) -> None:
        """Cancel every attempt in flight; a connection already made is closed."""
        attempts, self._attempts = self._attempts, []
        for task in attempts:
            task.cancel()
            task.add_done_callback(self._close_result)

    def in_flight(self) -> int:
        return sum(1 for t in self._attempts if not t.done())

    def _start(self) -> asyncio.Task[Conn]:
        task = asyncio.ensure_future(self._connect())
        task.add_done_callback(self._finished)
        return task

    async def _connect(self) -> Conn:
        try:
            return await asyncio.wait_for(self._open(), self.budget)
        except TimeoutError:
            raise LeaseUnavailable(
                f"{self.name}: no connection within {self.budget:.3g} s (connectTimeout for "
                "each host of database.url, and operationTimeout)") from None

    def _finished(self, task: asyncio.Task[Conn]) -> None:
        """An attempt ended: its failure is retrieved (kept for `take`); a connection
        the channel no longer needs is closed and forgotten."""
        if task.cancelled() or task.exception() is not None:
            return
        if not self._wanted() and task in self._attempts:
            self._attempts.remove(task)
            self._close_result(task)

    def close_made(self) -> None:
        """Close the connections already made and not taken (after one was taken, or
        when the channel closes its connection for idleness)."""
        for task in [t for t in self._attempts if t.done()]:
            self._attempts.remove(task)
            self._close_result(task)

    def _close_result(self, task: asyncio.Task[Conn]) -> None:
        if not task.cancelled() and task.exception() is None:
            self._bounded.close_in_background(task.result())


def _usable(conn: Conn) -> bool:
    return not (conn.closed or conn.broken)
