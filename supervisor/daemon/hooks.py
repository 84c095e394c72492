"""The operator hooks the daemon runs (`hooks { onRoleChange, preStop }`, see
`supervisor.node.hooks` for how one hook runs): onRoleChange after every change of
this host's role, one after another in order; preStop before the SIGTERM of a planned
stop, within half its grace. Neither ever delays a safety deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from supervisor.config import Config
from supervisor.node.hooks import run_hook
from supervisor.node.process import NodeProcess


class Hooks:
    """The hooks of one daemon; `note_role` after every turn, `pre_stop_then_stop` for a
    planned stop. `tasks` holds the hook runner (the daemon cancels it on exit)."""

    def __init__(self, config: Config, machine_name: str, clock: Callable[[], float],
                 tasks: set[asyncio.Task[None]]) -> None:
        self.config = config
        self.machine_name = machine_name
        self.clock = clock
        self.tasks = tasks
        self._last_role: str | None = None
        self._queue: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        self._runner: asyncio.Task[None] | None = None

    def note_role(self, role: str, epoch: int | None) -> None:
        """Queue the onRoleChange hook when this host's role changed (run in order)."""
        if role == self._last_role:
            return
        self._last_role = role
        if not self.config.hooks.on_role_change:
            return
        self._queue.put_nowait({"CORDA_HA_ROLE": role,
                                "CORDA_HA_EPOCH": "" if epoch is None else str(epoch),
                                "CORDA_HA_MACHINE_NAME": self.machine_name})
        if self._runner is None:
            self._runner = asyncio.create_task(self._run_role_hooks())
            self.tasks.add(self._runner)

    async def _run_role_hooks(self) -> None:
        hooks = self.config.hooks
        while True:
            env = await self._queue.get()
            await run_hook("onRoleChange", hooks.on_role_change, env, hooks.timeout,
                           cwd=self.config.node.working_directory)

    async def pre_stop_then_stop(self, grace: float, epoch: int | None,
                                 stop: Callable[[Callable[[NodeProcess], None]], None]) -> None:
        """A planned stop: the preStop hook first, within half the grace, then SIGTERM
        with what is left (through `stop`). The guard's kill deadline does not wait."""
        hooks = self.config.hooks
        started = self.clock()
        await run_hook("preStop", hooks.pre_stop,
                       {"CORDA_HA_ROLE": "active", "CORDA_HA_MACHINE_NAME": self.machine_name,
                        "CORDA_HA_EPOCH": "" if epoch is None else str(epoch)},
                       min(hooks.timeout, grace / 2), cwd=self.config.node.working_directory)
        left = max(0.0, grace - (self.clock() - started))
        stop(lambda p: p.stop(left))
