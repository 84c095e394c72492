"""A hedged lease statement: one statement raced on fresh connections (the renewal's
`hedge_after`, see `PostgresLeaseStore.renew`).

Owns `Race`: a first attempt on the lease channel's connection, then one more on a
fresh connection every `every` seconds, until one answers or the timeout passes. The
first answer wins and its connection becomes the channel's; the other attempts are
abandoned in the background (`Bounded.abandon`). Bounded and with one failure type
(`LeaseUnavailable`), as every operation of the store (see `supervisor.lease.store`).

May import: the stdlib, psycopg, `supervisor.core.row` and the lease's `bounded` and
`channel`; never `store` (the store hands it what it needs).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import psycopg

from supervisor.core.row import LeaseUnavailable
from supervisor.lease.bounded import Bounded, Conn
from supervisor.lease.channel import Channel

T = TypeVar("T")


class Race(Generic[T]):
    """One hedged statement named `what` on `channel`: the attempts in flight (each with
    the connection it uses, once it has one) and the last failure seen.

    `attempt(conn)` runs the statement on `conn` (the store's `_attempt`: counted, the
    idle check, a psycopg error dropped and turned into `LeaseUnavailable`); `open_conn`
    opens a fresh connection; `unavailable(what, error)` turns a psycopg or socket
    error into `LeaseUnavailable`.
    """

    def __init__(self, what: str, channel: Channel, bounded: Bounded,
                 open_conn: Callable[[], Awaitable[Conn]],
                 attempt: Callable[[Conn], Awaitable[T]],
                 unavailable: Callable[[str, Exception], LeaseUnavailable]) -> None:
        self._what = what
        self._channel = channel
        self._bounded = bounded
        self._open = open_conn
        self._attempt = attempt
        self._unavailable = unavailable
        self._running: dict[asyncio.Task[T], list[Conn]] = {}
        self._last_error: LeaseUnavailable | None = None

    async def run(self, timeout: float, every: float) -> T:
        """The first answer; `LeaseUnavailable` (the last failure, else "no answer")
        once `timeout` passes without one."""
        what = self._what
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        self._launch(fresh=False)
        next_launch = loop.time() + every
        try:
            while True:
                now = loop.time()
                if now >= deadline:
                    self._abandon_all()
                    if self._last_error is not None:
                        raise self._last_error
                    raise LeaseUnavailable(
                        f"{what}: no answer from the database within {timeout:.3g} s")
                if now >= next_launch:
                    self._launch(fresh=True)
                    next_launch = now + every
                pause = max(0.0, min(next_launch, deadline) - now)
                if not self._running:  # every attempt failed fast (e.g. refused): wait a beat
                    await asyncio.sleep(pause)
                    continue
                done, _ = await asyncio.wait(set(self._running), timeout=pause,
                                             return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if self._answered(task):
                        return task.result()
        except asyncio.CancelledError:
            self._abandon_all()
            raise

    def _launch(self, fresh: bool) -> None:
        """Start one attempt: on the channel's connection, or (`fresh`) on a new one."""
        channel = self._channel
        used: list[Conn] = []

        async def attempt() -> T:
            if fresh:  # a connection of its own: nobody else can use it
                conn = await self._open()
                used.append(conn)
                return await self._attempt(conn)
            async with channel.borrow() as conn:
                used.append(conn)
                return await self._attempt(conn)

        self._running[asyncio.ensure_future(attempt())] = used

    def _abandon_all(self) -> None:
        """Abandon every attempt still in flight, its connection forgotten by the channel."""
        for task, used in self._running.items():
            conn = self._channel.forget(used[0]) if used else None
            self._bounded.abandon(task, conn)
        self._running.clear()

    def _answered(self, task: asyncio.Task[T]) -> bool:
        """A finished attempt. True: it answered (its connection adopted, the rest
        abandoned). False: it failed (its connection dropped, the failure kept). An
        error of any other kind abandons the rest and is raised."""
        channel = self._channel
        used = self._running.pop(task)
        error = task.exception()
        if error is None:
            if used:
                # Adopt the connection that answered. The previous one is
                # either gone already or in a losing attempt, which
                # _abandon_all() reaps and closes.
                channel.adopt(used[0])
            self._abandon_all()
            return True
        if used:
            channel.drop(used[0])
        if isinstance(error, psycopg.Error | OSError):
            self._last_error = self._unavailable(self._what, error)
        elif isinstance(error, LeaseUnavailable):
            self._last_error = error
        else:
            self._abandon_all()
            raise error
        return False
