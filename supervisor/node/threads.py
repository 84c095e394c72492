"""Blocking work off the event loop, bounded in time.

`in_thread(fn, timeout, name)` runs `fn()` in a new daemon thread (not the default
executor, whose hung worker would block interpreter exit) and returns its result, or
raises `TimeoutError` after `timeout` seconds. A thread that was given up on (timed
out, or its caller cancelled) is remembered by `name`: the next call of that name
raises `StillHung` at once while it is still running, so a stuck mount never piles up
threads; and its `abandoned` event (if given) is set, so work it does later can see
that nobody waits for it any more.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

_hung: dict[str, threading.Thread] = {}


class StillHung(TimeoutError):
    """An earlier call of the same name was given up on and is still running."""


async def in_thread(fn: Callable[[], T], timeout: float, name: str, *,
                    abandoned: threading.Event | None = None) -> T:
    """`fn()`'s result; TimeoutError when it takes longer than `timeout`, StillHung while
    an earlier call of `name` is still hung; `fn`'s own exception otherwise."""
    earlier = _hung.get(name)
    if earlier is not None:
        if earlier.is_alive():
            raise StillHung(f"{name}: an earlier call is still hung")
        del _hung[name]
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if done.done():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        result: T | None = None
        error: BaseException | None = None
        try:
            result = fn()
        except Exception as exc:
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop has closed meanwhile
            loop.call_soon_threadsafe(settle, result, error)

    thread = threading.Thread(target=work, name=f"corda-ha-{name}", daemon=True)
    thread.start()
    try:
        return await asyncio.wait_for(asyncio.shield(done), timeout)
    except TimeoutError:
        raise TimeoutError(f"{name}: no answer within {timeout:g} s") from None
    finally:
        if not done.done():  # given up on: timed out, or the caller was cancelled
            _hung[name] = thread
            if abandoned is not None:
                abandoned.set()
            done.add_done_callback(_collect)  # a late error is nobody's to see


def _collect(future: asyncio.Future[T]) -> None:
    """Retrieve a given-up call's late outcome (else asyncio reports it at collection)."""
    if not future.cancelled():
        future.exception()
