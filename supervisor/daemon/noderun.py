"""The node-start pipeline and the current node run, for the daemon.

One `StartNode` of the core becomes, in order: the shared directories probed; as the
holder, the database fence of this epoch; Corda's lock row (set back only after a
completed fence, else only looked at: docs/design.md, "Corda's lock row"); the run
through its guard (`supervisor.node.process`), watched for readiness. It posts
`NodeStartRefused` when a check refuses the start, else `NodeStarted` (when the node
spawned) and then exactly one `NodeExited`, once the run's last process is gone.
Commands for the node that arrive while it is still starting are kept and applied once
it has started.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from supervisor.config import Config
from supervisor.core.identity import Identity
from supervisor.core.messages import (
    Event,
    NodeExited,
    NodeReady,
    NodeStarted,
    NodeStartRefused,
    SharedDirsChecked,
    StartNode,
)
from supervisor.core.row import LeaseUnavailable
from supervisor.daemon.fencer import DatabaseFencer
from supervisor.lease import LeaseStore
from supervisor.node import shareddirs
from supervisor.node.launch import NodeExit
from supervisor.node.process import NodeProcess
from supervisor.node.readiness import ReadinessWatch
from supervisor.node.sweep import RunMarks

log = structlog.get_logger("supervisor.daemon")
node_log = structlog.get_logger("node")

NodeCommand = Callable[[NodeProcess], None]


@dataclass
class _Slot:
    """The current run, and commands that arrived while it was still starting."""

    process: NodeProcess | None = None
    pending: list[NodeCommand] | None = field(default=None)


class NodeRunner:
    """Starts node runs and passes commands to the current one; see the module docstring."""

    def __init__(self, config: Config, identity: Identity, store: LeaseStore | None,
                 fencer: DatabaseFencer | None, wait_interval: float,
                 post: Callable[[Event], None]) -> None:
        self.config = config
        self.identity = identity
        self.store = store
        self.fencer = fencer
        self.wait_interval = wait_interval
        self.post = post
        self.marks: RunMarks | None = None  # set before the first start (probes cgroups)
        self.slot = _Slot()
        self._readiness: ReadinessWatch | None = None
        self._corda_row_off = False  # Corda's table is absent or untouchable here

    @property
    def process(self) -> NodeProcess | None:
        """The current run's process handle (None: none, or still starting)."""
        return self.slot.process

    @property
    def starting(self) -> bool:
        """A start is under way: commands are kept until the node has started."""
        return self.slot.pending is not None

    def command(self, command: NodeCommand) -> None:
        """Apply `command` to the current run (or once it has started)."""
        if self.slot.process is not None:
            command(self.slot.process)
        elif self.slot.pending is not None:
            self.slot.pending.append(command)

    async def run(self, action: StartNode) -> None:
        """One node run, from its checks to its end (see the module docstring)."""
        self.slot = _Slot(process=None, pending=[])
        refused = await self._checks(action)
        if refused is not None:
            self.slot = _Slot()
            self.post(NodeStartRefused(refused))
            return
        watch = ReadinessWatch(self.config.node.readiness, lambda pid: self.post(NodeReady(pid)))
        self._readiness = watch
        try:
            process = await NodeProcess.start(
                self.config.node, epoch=action.epoch, machine_name=self.identity.machine_name,
                kill_deadline=action.kill_deadline, on_output=self._output, marks=self.marks)
        except Exception as e:
            log.exception("node_start_error")
            self.slot = _Slot()
            self.post(NodeStartRefused(f"start failed: {e}"))
            return
        pending = self.slot.pending or []
        self.slot = _Slot(process=process)
        for command in pending:
            command(process)
        if process.pid is not None:
            self.post(NodeStarted(process.pid))
            watch.started(process.pid)
        try:
            result: NodeExit = await process.wait()
        finally:
            watch.stop()
        if self.slot.process is process:
            self.slot = _Slot()
        if result.spawn_error:
            log.error("node_spawn_failed", error=result.spawn_error)
        self.post(NodeExited(returncode=result.returncode, signal=result.signal,
                             runtime=result.runtime, killed_by=result.killed_by))

    async def _checks(self, action: StartNode) -> str | None:
        """What must hold before the node starts; why not, or None."""
        node = self.config.node
        problem = await shareddirs.check(node.shared_directories, node.shared_probe_timeout)
        if problem is not None:
            self.post(SharedDirsChecked(problem))
            return f"shared directories: {problem}"
        if action.epoch is not None and self.fencer is not None:
            problem = await self.fencer.fence(action.epoch)
            if problem is not None:
                return f"database fencing: {problem}"
        if action.epoch is not None:
            await self._corda_row(action.epoch)
        return None

    async def probe_shared_directories(self) -> None:
        """Every PROBE_EVERY seconds: a standby whose shared directories fail does not take
        the lease (and is not ready); the result goes to the core as an event."""
        node = self.config.node
        while True:
            problem = await shareddirs.check(node.shared_directories, node.shared_probe_timeout)
            self.post(SharedDirsChecked(problem))
            await asyncio.sleep(shareddirs.PROBE_EVERY)

    async def _corda_row(self, epoch: int) -> None:
        """Set Corda's lock row back before our node starts, only when the old node
        provably cannot act: this acquisition's database fence completed. Otherwise
        leave the row alone and say how long Corda's guard will keep our node out.
        Bounded; a failure only means the node waits Corda's waitInterval out."""
        store = self.store
        if store is None or self._corda_row_off:
            return
        timeout = self.config.database.operation_timeout
        try:
            if self.fencer is None or not self.fencer.fenced(epoch):
                await self._corda_row_left_alone(store, epoch, timeout)
                return
            outcome = await store.prepare_corda_row(epoch, timeout)
        except LeaseUnavailable as e:
            if e.sqlstate == "42501":
                self._corda_row_off = True
                log.warning("corda_lock_row_untouchable", error=str(e),
                            message="cannot read or update Corda's node_mutual_exclusion "
                                    "row (no privilege): a node started after a failover or "
                                    "handover waits Corda's waitInterval out; see "
                                    "`corda-ha-supervisor schema`")
            else:
                log.warning("corda_lock_row_not_prepared", error=str(e), epoch=epoch)
            return
        if outcome == "absent":
            self._corda_row_absent()
        elif outcome == "made_takeable":
            log.info("corda_lock_row_made_takeable", epoch=epoch)
        elif outcome in ("changed", "not_holder"):
            log.warning("corda_lock_row_left_alone", outcome=outcome, epoch=epoch)
        else:  # own, takeable, no_row: Corda's guard lets our node in as it is
            log.debug("corda_lock_row_ready", outcome=outcome, epoch=epoch)

    async def _corda_row_left_alone(self, store: LeaseStore, epoch: int,
                                    timeout: float) -> None:
        """No completed database fence: Corda's row is only looked at."""
        outcome, holder, age = await store.look_at_corda_row(timeout)
        if outcome == "absent":
            self._corda_row_absent()
        elif outcome == "fresh" and age is not None:
            wait = max(0.0, self.wait_interval - age)
            log.warning("corda_lock_row_left_alone", outcome="not_fenced", epoch=epoch,
                        holder=holder, age=round(age, 3), wait=round(wait, 3),
                        message=f"Corda's lock row names {holder!r} and is {age:.1f} s old; "
                                "without a completed database fence the old node may still "
                                "run, so the row is left to Corda's own guard: our node "
                                f"cannot become master for about {wait:.1f} s more (it "
                                "exits 1 and is restarted until then)")
        else:
            log.debug("corda_lock_row_ready", outcome=outcome, epoch=epoch)

    def _corda_row_absent(self) -> None:
        self._corda_row_off = True
        log.info("corda_lock_row_absent",
                 message="no node_mutual_exclusion table next to the lease: nothing to "
                         "prepare (Corda's guard is off or lives in another database)")

    def _output(self, stream: str, line: str) -> None:
        if self._readiness is not None:
            self._readiness.line(line)
        node_log.info("node_output", stream=stream, line=line)
