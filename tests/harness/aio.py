"""Running an async test body: `run(body(), timeout)` in a fresh event loop, bounded, so
that a body that hangs fails with a `TimeoutError` where it hung (below the test's
own pytest timeout) instead of being cut off from outside."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")

#: The default bound of one async body (seconds).
BODY_TIMEOUT = 60.0


def run(body: Awaitable[T], timeout: float = BODY_TIMEOUT) -> T:
    """Run `body` (a coroutine or any awaitable) to completion in a new event loop;
    `TimeoutError` after `timeout` seconds."""
    async def bounded() -> T:
        return await asyncio.wait_for(body, timeout)

    return asyncio.run(bounded())
