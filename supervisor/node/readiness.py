"""When a node run counts as ready (`node.readiness`): a TCP connect to its port
succeeds, or one of its output lines matches a pattern (Corda logs `Node for "..."
started up and registered in N sec`). Without a readiness check a node is ready as
soon as it started.

Nothing here blocks the event loop: lines are matched as they are relayed, and the
port is probed by an asyncio task whose every connect attempt is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable

from supervisor.config import ReadinessConfig

PROBE_EVERY = 0.25  # seconds between connect attempts
PROBE_TIMEOUT = 1.0  # bound on one connect attempt


class ReadinessWatch:
    """One node run's readiness. `ready(pid)` is called at most once."""

    def __init__(self, config: ReadinessConfig | None, ready: Callable[[int], None]) -> None:
        self._config = config
        self._ready = ready
        self._pattern = re.compile(config.log_pattern) if config and config.log_pattern else None
        self._pid: int | None = None
        self._matched = False
        self._fired = False
        self._probe: asyncio.Task[None] | None = None

    def started(self, pid: int) -> None:
        """The node runs as `pid`: start probing its port (when configured)."""
        self._pid = pid
        if self._matched:
            self._fire()
        cfg = self._config
        if cfg is not None and cfg.port is not None:
            self._probe = asyncio.get_running_loop().create_task(
                self._probe_port(cfg.host, cfg.port))

    def line(self, text: str) -> None:
        """One output line of the node (called from the output relay)."""
        if self._pattern is not None and not self._matched and self._pattern.search(text):
            self._matched = True
            if self._pid is not None:
                self._fire()

    def stop(self) -> None:
        """The run ended: stop probing."""
        if self._probe is not None:
            self._probe.cancel()

    def _fire(self) -> None:
        if not self._fired and self._pid is not None:
            self._fired = True
            self._ready(self._pid)

    async def _probe_port(self, host: str, port: int) -> None:
        while not self._fired:
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port),
                                                   PROBE_TIMEOUT)
                writer.close()
                self._fire()
                return
            await asyncio.sleep(PROBE_EVERY)
