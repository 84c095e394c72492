"""The daemon's side of the database fence (`supervisor.lease.fence`, through the port).

`DatabaseFencer.watch` confirms this host's binding (its node role bound to this lease
on this machine by a DBA) and that fencing can work, at start and every `CHECK_EVERY`
seconds, and tells the core (`FencingChecked`): with `fencing.required`, a standby
that could not fence the other node takes no lease. `DatabaseFencer.fence` runs
before every node start of the holder; its answer decides whether the node may start.
`DatabaseFencer.fenced(epoch)` says whether a fence for that epoch completed here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog

from supervisor.config import FencingConfig
from supervisor.core.identity import Identity
from supervisor.core.messages import Event, FencingChecked
from supervisor.lease import LeaseStore, LeaseUnavailable
from supervisor.lease.fence import FenceFailed

log = structlog.get_logger("supervisor.daemon.fencer")

#: How often the binding and the fencing functions are checked again.
CHECK_EVERY = 30.0
#: ... while fencing does not work (a DBA's fix is seen within this) or the database
#: cannot be reached.
RETRY_EVERY = 2.0
#: Until the first check answers, a required fence counts as not working.
NOT_CHECKED = "not checked yet (waiting for the database)"
#: How many fenced epochs `fenced` remembers.
FENCED_KEPT = 16


class DatabaseFencer:
    """Fences the other hosts' node roles for this host; see the module docstring."""

    def __init__(self, config: FencingConfig, store: LeaseStore, identity: Identity,
                 operation_timeout: float, post: Callable[[Event], None]) -> None:
        assert config.node_role is not None
        self.config = config
        self.role: str = config.node_role
        self.store = store
        self.identity = identity
        self.timeout = operation_timeout
        self.post = post
        self.problem: str | None = NOT_CHECKED
        self.last_fence: dict[str, Any] | None = None
        self._fenced: list[int] = []  # epochs whose fence completed, newest last

    def initial_event(self) -> FencingChecked:
        """What the core knows before the first check."""
        return FencingChecked(NOT_CHECKED if self.config.required else None, pending=True)

    async def watch(self) -> None:
        """Check now and every CHECK_EVERY s (RETRY_EVERY s while unreachable or not
        working); runs until cancelled."""
        while True:
            try:
                problem = await self.store.confirm_fencing(
                    self.role, self.identity.machine_name, self.timeout)
            except LeaseUnavailable:
                await asyncio.sleep(RETRY_EVERY)
                continue
            if problem != self.problem and not self.config.required:
                if problem is None:
                    log.info("fencing_ready", node_role=self.role)
                else:
                    log.warning("fencing_unavailable", node_role=self.role, problem=problem,
                                message="fencing.required = false: the node starts unfenced")
            self.problem = problem
            self.post(FencingChecked(problem if self.config.required else None))
            await asyncio.sleep(CHECK_EVERY if problem is None else RETRY_EVERY)

    async def fence(self, epoch: int) -> str | None:
        """Fence for `epoch` before the node starts: None when the node may start (fenced,
        or fencing not required), else why not. Logs the outcome."""
        try:
            result = await self.store.fence(epoch, self.role, self.identity.machine_name,
                                            self.timeout)
        except FenceFailed as e:
            self.last_fence = {"epoch": epoch, "ok": False, "error": str(e)}
            if self.config.required:
                log.error("database_fence_failed", epoch=epoch, error=str(e),
                          message="the node is not started (fencing.required = true)")
                return str(e)
            log.error("database_fence_failed", epoch=epoch, error=str(e),
                      message="starting the node unfenced (fencing.required = false)")
            return None
        roles = {r.role: r.action for r in result.roles}
        self._fenced = [*self._fenced[-(FENCED_KEPT - 1):], epoch]
        self.last_fence = {"epoch": epoch, "ok": True, "roles": roles,
                           "sessions_ended": result.sessions_ended}
        log.info("database_fenced", epoch=epoch, roles=roles,
                 sessions_ended=result.sessions_ended, calls=result.passes,
                 seconds=round(result.seconds, 3))
        return None

    def fenced(self, epoch: int) -> bool:
        """True once a fence for `epoch` completed in this process: every other role
        bound to the lease locked out, no session of theirs left. False when fencing
        failed, even if the node was started anyway (`fencing.required = false`)."""
        return epoch in self._fenced

    def status(self) -> dict[str, Any]:
        """For /status: the node role, whether fencing works, the last fence."""
        return {"node_role": self.role, "required": self.config.required,
                "problem": self.problem, "last_fence": self.last_fence}
