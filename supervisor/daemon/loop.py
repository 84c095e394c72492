"""The daemon loop: feeds events to the pure core and carries out its actions.

Contract: the loop never awaits a database call or a process operation itself.
Every lease action runs as its own task that posts exactly one result event
within the action's timeout (plus a small grace), and every node action is a
non-blocking write to the guard. So a hung database or a slow node can never
delay a fencing deadline; and if this process hangs anyway, the guard kills the
node at the deadline it was last given.

Signal handlers only enqueue events (SIGTERM/SIGINT -> ShutdownRequested).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from supervisor import __version__, core
from supervisor.clock import now as clock_now
from supervisor.config import EX_CONFIG, Config
from supervisor.core import CoreState, NodePhase, Timing
from supervisor.core.identity import Identity, ProcessRef
from supervisor.core.messages import (
    AcquireLease,
    Action,
    Begin,
    Event,
    Exit,
    KillNode,
    LeaseAcquired,
    LeaseCallFailed,
    LeaseLost,
    LeaseNotAcquired,
    LeaseOpKind,
    LeaseReleased,
    LeaseRenewed,
    Log,
    NodeExited,
    NodeReady,
    NodeStarted,
    ObserveLease,
    PeerReleased,
    ReleaseLease,
    RenewLease,
    SetNodeDeadline,
    SharedDirsChecked,
    ShutdownRequested,
    StartNode,
    StopNode,
    Tick,
)
from supervisor.core.observation import observation
from supervisor.lease import (
    LeaseSnapshot,
    LeaseUnavailable,
    LeaseVersion,
    Member,
    PostgresLeaseStore,
    RenewResult,
)
from supervisor.lease.fencer import DatabaseFencer
from supervisor.lease.startup import database_config_problem
from supervisor.node import shareddirs
from supervisor.node.hooks import run_hook
from supervisor.node.machine import process_alive, this_process
from supervisor.node.process import NodeExit, NodeProcess
from supervisor.node.readiness import ReadinessWatch
from supervisor.node.sweep import NodeFence, sweep_at_startup
from supervisor.observe.http import HealthServer, StatusView
from supervisor.observe.metrics import Metrics
from supervisor.observe.sdnotify import SystemdNotifier

LOOP_TURN = 0.5  # the loop turns at least this often (liveness, watchdog)
CALL_GRACE = 1.0  # extra time a lease task gets beyond its own timeout before we give up on it

log = structlog.get_logger("supervisor.daemon")

_OP_KIND: dict[type[Action], LeaseOpKind] = {
    ObserveLease: "observe", AcquireLease: "acquire", RenewLease: "renew",
    ReleaseLease: "release",
}


class LeaseStore(Protocol):
    """What the daemon needs of a lease store (PostgresLeaseStore in production)."""

    async def ensure_schema(self, timeout: float) -> None: ...
    async def observe(self, timeout: float) -> LeaseSnapshot: ...
    async def acquire(self, expected: LeaseVersion | None, *,
                      takeover: ProcessRef | None = None, server: str | None = None,
                      timeout: float) -> int | None: ...
    async def renew(self, epoch: int, timeout: float, *,
                    hedge_after: float | None = None) -> RenewResult | None: ...
    async def release(self, epoch: int, timeout: float) -> bool: ...
    async def listen(self, on_release: Callable[[], None]) -> None: ...
    async def close(self) -> None: ...


@dataclass
class _NodeSlot:
    """The current node run, and commands that arrived while it was still starting."""

    process: NodeProcess | None = None
    pending: list[Callable[[NodeProcess], None]] | None = None


class Daemon:
    """One supervisor. `run()` returns the process exit status."""

    def __init__(self, config: Config, *, store: LeaseStore | None = None,
                 identity: Identity | None = None, clock: Callable[[], float] = clock_now,
                 notifier: SystemdNotifier | None = None) -> None:
        self.config = config
        self.timing = Timing.from_config(config)
        self.identity = identity or this_process(config.lease.machine_name)
        self.clock = clock
        self.metrics = Metrics()
        self.store: LeaseStore | None = store
        if self.store is None and config.lease.enabled:
            postgres = PostgresLeaseStore(config.database, self.identity,
                                          config.lease.wait_interval)
            postgres.member_info = self.member_info
            self.store = postgres
            self.metrics.count_statements(lambda: postgres.statements)
        self.db_fence: DatabaseFencer | None = None
        if config.fencing.enabled and isinstance(self.store, PostgresLeaseStore):
            self.db_fence = DatabaseFencer(config.fencing, self.store, self.identity,
                                           config.database.operation_timeout,
                                           lambda event: self.events.put_nowait(event))
        self.notifier = notifier or SystemdNotifier()
        self.state: CoreState = core.initial_state(config.lease.enabled)
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.node = _NodeSlot()
        self.health: HealthServer | None = None
        self.schema_ready = False
        self.exit_code: int | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self.last_watchdog = 0.0
        self.node_log = structlog.get_logger("node")
        self.fence: NodeFence | None = None  # set in run(): probes cgroups, logs once
        self._member_key: tuple[object, ...] = ()
        self._readiness: ReadinessWatch | None = None
        self._corda_guard_off = False  # Corda's table is absent or untouchable here
        self._last_role: str | None = None
        self._hook_queue: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        self._hook_runner: asyncio.Future[None] | None = None

    # ------------------------------------------------------------ main loop

    async def run(self) -> int:
        """Run until shut down; the exit status. 78 (EX_CONFIG) before anything is
        contended when the health port cannot be bound or the database refuses the
        configured login or privileges; an unreachable database is waited out."""
        t = self.timing
        log.info("supervisor_started", machine_name=self.identity.machine_name,
                 host=self.identity.host, pid=self.identity.pid,
                 machine_identity=self.identity.machine,
                 instance=self.identity.instance, lease=self.config.lease.enabled,
                 update_interval=t.update_interval, wait_interval=t.wait_interval,
                 margin=t.margin, stop_timeout=t.stop_timeout, loss_grace=t.loss_grace)
        if self.config.lease.enabled:
            log.info("stop_graces", planned_stop_grace=t.stop_timeout,
                     lease_loss_grace=round(t.loss_grace, 3),
                     message=(f"a planned stop (shutdown, handover) gives the node "
                              f"stopTimeout = {t.stop_timeout:g} s; a node whose lease is "
                              f"being lost gets {t.loss_grace:.3g} s of SIGTERM before SIGKILL"))
        for warning in self.config.warnings:
            log.warning("config_warning", message=warning)
        if not self._start_health():
            return EX_CONFIG
        problem = await self._database_problem_at_start()
        if problem is not None:
            log.error("database_config_error", message=problem)
            if self.health is not None:
                self.health.stop()
            if self.store is not None:
                await self.store.close()
            return EX_CONFIG
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.events.put_nowait, ShutdownRequested(sig.name))
        loop.add_signal_handler(signal.SIGHUP, lambda: log.info("sighup_ignored"))
        listener: asyncio.Task[None] | None = None
        if self.store is not None:
            listener = asyncio.create_task(
                self.store.listen(lambda: self.events.put_nowait(PeerReleased())))
        if self.config.node.shared_directories:
            self._spawn(self._probe_shared_directories())
        self.fence = NodeFence.for_node(self.config.node,
                                        lease_name=self.config.database.lease_name,
                                        machine_name=self.identity.machine_name)
        await sweep_at_startup(self.fence)  # bounded; leftovers of an earlier run die first
        self.notifier.ready(self._status_line())
        try:
            if self.db_fence is not None:
                self._feed(self.db_fence.initial_event())
                self._spawn(self.db_fence.watch())
            self._feed(Begin())
            getter: asyncio.Task[Event] | None = None
            while self.exit_code is None:
                wake = core.next_wakeup(self.state, self.timing)
                timeout = LOOP_TURN
                if wake is not None:
                    timeout = min(LOOP_TURN, max(0.0, wake - self.clock()))
                dog = self.notifier.watchdog_interval()
                if dog is not None:
                    timeout = min(timeout, max(0.0, self.last_watchdog + dog - self.clock()))
                # One long-lived getter: a timeout never cancels a get that already
                # took an event off the queue, so no event is ever lost.
                if getter is None:
                    getter = asyncio.create_task(self.events.get())
                done, _ = await asyncio.wait({getter}, timeout=timeout)
                event: Event = Tick()
                if done:
                    event = getter.result()
                    getter = None
                self._feed(event)
            if getter is not None:
                getter.cancel()
            return self.exit_code
        finally:
            await self._shutdown(listener)

    def _feed(self, event: Event) -> None:
        old = self.state
        before = old.state
        now = self.clock()
        self.state, actions = core.step(self.state, event, now, self.timing)
        for action in actions:
            self._carry_out(action)
        self._record_history(old, event)
        self._note_role()
        if self.state.state != before:
            self.notifier.status(self._status_line())
        self._after_turn(now)

    def _role(self) -> str:
        s = self.state
        if s.epoch is not None:
            return "active"
        return "standby" if s.state is core.State.STANDBY else "stopped"

    def _note_role(self) -> None:
        """Queue the onRoleChange hook when this host's role changed (run in order)."""
        role = self._role()
        if role == self._last_role:
            return
        self._last_role = role
        if self.config.hooks.on_role_change:
            epoch = self.state.epoch
            self._hook_queue.put_nowait({"CORDA_HA_ROLE": role,
                                         "CORDA_HA_EPOCH": "" if epoch is None else str(epoch),
                                         "CORDA_HA_MACHINE_NAME": self.identity.machine_name})
            if self._hook_runner is None:
                self._hook_runner = asyncio.ensure_future(self._run_role_hooks())
                self.tasks.add(self._hook_runner)

    async def _run_role_hooks(self) -> None:
        hooks = self.config.hooks
        while True:
            env = await self._hook_queue.get()
            await run_hook("onRoleChange", hooks.on_role_change, env, hooks.timeout,
                           cwd=self.config.node.working_directory)

    async def _pre_stop_then_stop(self, grace: float) -> None:
        """A planned stop: the preStop hook first, within half the grace, then SIGTERM
        with what is left. The guard's kill deadline does not wait for any of this."""
        hooks = self.config.hooks
        started = self.clock()
        epoch = self.state.epoch
        await run_hook("preStop", hooks.pre_stop,
                       {"CORDA_HA_ROLE": "active", "CORDA_HA_MACHINE_NAME":
                        self.identity.machine_name,
                        "CORDA_HA_EPOCH": "" if epoch is None else str(epoch)},
                       min(hooks.timeout, grace / 2), cwd=self.config.node.working_directory)
        left = max(0.0, grace - (self.clock() - started))
        self._with_node(lambda p: p.stop(left))

    def _record_history(self, old: CoreState, event: Event) -> None:
        """Queue the lease history's rows (written off the lease's own connection)."""
        store, new = self.store, self.state
        if not isinstance(store, PostgresLeaseStore):
            return
        if isinstance(event, LeaseAcquired) and new.epoch == event.epoch:
            store.record_acquired(event.epoch, new.acquire_how or "unknown", new.acquire_from)
        elif isinstance(event, LeaseReleased) and event.released and old.release_epoch:
            store.record_ended(old.release_epoch, "released")
        elif isinstance(event, LeaseLost) and old.epoch is not None:
            store.record_ended(old.epoch, "lost")

    def _after_turn(self, now: float) -> None:
        interval = self.notifier.watchdog_interval()
        if interval is not None and now - self.last_watchdog >= interval:
            self.notifier.watchdog()
            self.last_watchdog = now
        self._publish_status(now)

    # ------------------------------------------------------------ actions

    def _carry_out(self, action: Action) -> None:
        match action:
            case Log(event=name, level=level, fields=fields):
                getattr(log, level)(name, **dict(fields))
            case ObserveLease() | AcquireLease() | RenewLease() | ReleaseLease():
                self._spawn(self._lease_call(action))
            case StartNode():
                self._spawn(self._run_node(action))
            case SetNodeDeadline(kill_deadline=deadline):
                self._with_node(lambda p: p.set_deadline(deadline))
            case StopNode(grace=grace, planned=planned):
                if planned and self.config.hooks.pre_stop:
                    self._spawn(self._pre_stop_then_stop(grace))
                else:
                    self._with_node(lambda p: p.stop(grace))
            case KillNode():
                self._with_node(lambda p: p.kill())
            case Exit(code=code):
                self.exit_code = code

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _with_node(self, command: Callable[[NodeProcess], None]) -> None:
        if self.node.process is not None:
            command(self.node.process)
        elif self.node.pending is not None:
            self.node.pending.append(command)

    # ------------------------------------------------------------ lease calls

    async def _lease_call(self, action: ObserveLease | AcquireLease | RenewLease | ReleaseLease
                          ) -> None:
        """Posts exactly one result event, within the action's timeout plus CALL_GRACE."""
        kind = _OP_KIND[type(action)]
        sent_at = self.clock()
        task = asyncio.create_task(self._lease_request(action, sent_at))
        done, _ = await asyncio.wait({task}, timeout=action.timeout + CALL_GRACE)
        if not done:
            task.cancel()
            self.events.put_nowait(LeaseCallFailed(kind, "timeout (store overran its bound)"))
            return
        try:
            event = task.result()
        except LeaseUnavailable as e:
            event = LeaseCallFailed(kind, str(e))
        except Exception as e:
            log.exception("lease_call_error", op=kind)
            event = LeaseCallFailed(kind, f"{type(e).__name__}: {e}")
        self._count(kind, event)
        self.events.put_nowait(event)

    async def _lease_request(self, action: ObserveLease | AcquireLease | RenewLease
                             | ReleaseLease, sent_at: float) -> Event:
        store = self.store
        assert store is not None
        if not self.schema_ready:
            await store.ensure_schema(action.timeout)
            self.schema_ready = True
        match action:
            case ObserveLease(timeout=timeout):
                snap = await store.observe(timeout)
                return observation(snap, self.identity, process_alive)
            case AcquireLease(expected=expected, takeover=takeover, server=server,
                              timeout=timeout):
                version = None if expected is None else LeaseVersion(
                    expected.epoch, expected.instance, expected.renewed_at)  # type: ignore[arg-type]
                epoch = await store.acquire(version, takeover=takeover, server=server,
                                            timeout=timeout)
                if epoch is None:
                    return LeaseNotAcquired()
                return LeaseAcquired(epoch=epoch, sent_at=sent_at)
            case RenewLease(epoch=epoch, timeout=timeout, hedge_after=hedge):
                result = await store.renew(epoch, timeout, hedge_after=hedge)
                if result is None:
                    return LeaseLost()
                return LeaseRenewed(sent_at=sent_at, handover_requested=result.handover_requested,
                                    paused=result.paused, renewed_at=result.renewed_at)
            case ReleaseLease(epoch=epoch, timeout=timeout):
                return LeaseReleased(await store.release(epoch, timeout))
        raise AssertionError(action)

    def _count(self, kind: str, event: Event) -> None:
        m = self.metrics
        if kind == "renew":
            if isinstance(event, LeaseRenewed):
                m.lease_renewals_total.inc()
            else:
                m.lease_renewal_failures_total.inc()
        elif kind == "acquire" and isinstance(event, LeaseAcquired):
            m.lease_acquisitions_total.inc()

    # ------------------------------------------------------------ the node

    async def _run_node(self, action: StartNode) -> None:
        """Start one node run through a guard; posts NodeStarted (unless it failed to
        spawn) and then exactly one NodeExited."""
        self.node = _NodeSlot(process=None, pending=[])
        started_at = self.clock()
        node = self.config.node
        problem = await shareddirs.check(node.shared_directories, node.shared_probe_timeout)
        if problem is not None:
            self.node = _NodeSlot()
            self.events.put_nowait(SharedDirsChecked(problem))
            self.events.put_nowait(NodeExited(returncode=127, signal=None, runtime=0.0,
                                              killed_by=f"not started: shared directories: "
                                                        f"{problem}"))
            return
        if action.epoch is not None and self.db_fence is not None:
            problem = await self.db_fence.fence(action.epoch)
            if problem is not None:
                self.node = _NodeSlot()
                self.events.put_nowait(NodeExited(
                    returncode=127, signal=None, runtime=0.0,
                    killed_by=f"not started: database fencing: {problem}"))
                return
        if action.epoch is not None:
            await self._prepare_corda_guard(action.epoch)
        watch = ReadinessWatch(self.config.node.readiness,
                               lambda pid: self.events.put_nowait(NodeReady(pid)))
        self._readiness = watch
        try:
            process = await NodeProcess.start(
                self.config.node, epoch=action.epoch, machine_name=self.identity.machine_name,
                kill_deadline=action.kill_deadline, on_output=self._node_output,
                fence=self.fence)
        except Exception as e:
            log.exception("node_start_error")
            self.node = _NodeSlot()
            self.events.put_nowait(NodeExited(returncode=127, signal=None,
                                              runtime=self.clock() - started_at,
                                              killed_by=f"start failed: {e}"))
            return
        pending = self.node.pending or []
        self.node = _NodeSlot(process=process)
        for command in pending:
            command(process)
        if process.pid is not None:
            self.events.put_nowait(NodeStarted(process.pid))
            watch.started(process.pid)
        try:
            result: NodeExit = await process.wait()
        finally:
            watch.stop()
        if self.node.process is process:
            self.node = _NodeSlot()
        if result.spawn_error:
            log.error("node_spawn_failed", error=result.spawn_error)
        self.events.put_nowait(NodeExited(returncode=result.returncode, signal=result.signal,
                                          runtime=result.runtime, killed_by=result.killed_by))

    async def _probe_shared_directories(self) -> None:
        """Every PROBE_EVERY seconds: a standby whose shared directories fail does not take
        the lease (and is not ready); the result goes to the core as an event."""
        node = self.config.node
        while True:
            problem = await shareddirs.check(node.shared_directories, node.shared_probe_timeout)
            self.events.put_nowait(SharedDirsChecked(problem))
            await asyncio.sleep(shareddirs.PROBE_EVERY)

    async def _prepare_corda_guard(self, epoch: int) -> None:
        """Make Corda's own guard row takeable before our node starts, only when the old
        node provably cannot act: the database fence of this acquisition completed.
        Otherwise leave the row alone and say how long Corda's guard will make our node
        wait (`cordaguard`). Bounded; a failure only means the node waits Corda's
        waitInterval out itself."""
        store = self.store
        if not isinstance(store, PostgresLeaseStore) or self._corda_guard_off:
            return
        timeout = self.config.database.operation_timeout
        try:
            if self.db_fence is None or not self.db_fence.fenced(epoch):
                await self._corda_row_left_alone(store, epoch, timeout)
                return
            outcome = await store.prepare_corda_guard(epoch, timeout)
        except LeaseUnavailable as e:
            if e.sqlstate == "42501":
                self._corda_guard_off = True
                log.warning("corda_guard_untouchable", error=str(e),
                            message="cannot read or update Corda's node_mutual_exclusion "
                                    "row (no privilege): a node started after a failover or "
                                    "handover waits Corda's waitInterval out; see "
                                    "`corda-ha-supervisor schema`")
            else:
                log.warning("corda_guard_not_prepared", error=str(e), epoch=epoch)
            return
        if outcome == "absent":
            self._corda_guard_absent()
        elif outcome == "made_takeable":
            log.info("corda_guard_made_takeable", epoch=epoch)
        elif outcome in ("changed", "not_holder"):
            log.warning("corda_guard_left_alone", outcome=outcome, epoch=epoch)
        else:  # own, takeable, no_row: Corda's guard lets our node in as it is
            log.debug("corda_guard_ready", outcome=outcome, epoch=epoch)

    async def _corda_row_left_alone(self, store: PostgresLeaseStore, epoch: int,
                                    timeout: float) -> None:
        """No completed database fence: Corda's row is only looked at."""
        outcome, holder, age = await store.look_at_corda_row(timeout)
        if outcome == "absent":
            self._corda_guard_absent()
        elif outcome == "fresh" and age is not None:
            wait = max(0.0, self.timing.wait_interval - age)
            log.warning("corda_guard_left_alone", outcome="not_fenced", epoch=epoch,
                        holder=holder, age=round(age, 3), wait=round(wait, 3),
                        message=f"Corda's lock row names {holder!r} and is {age:.1f} s old; "
                                "without a completed database fence the old node may still "
                                "run, so the row is left to Corda's own guard: our node "
                                f"cannot become master for about {wait:.1f} s more (it "
                                "exits 1 and is restarted until then)")
        else:
            log.debug("corda_guard_ready", outcome=outcome, epoch=epoch)

    def _corda_guard_absent(self) -> None:
        self._corda_guard_off = True
        log.info("corda_guard_absent",
                 message="no node_mutual_exclusion table next to the lease: nothing to "
                         "prepare (Corda's guard is off or lives in another database)")

    def _node_output(self, stream: str, line: str) -> None:
        if self._readiness is not None:
            self._readiness.line(line)
        self.node_log.info("node_output", stream=stream, line=line)

    # ------------------------------------------------------------ status

    def _status_line(self) -> str:
        s = self.state
        parts = [f"state={s.state}"]
        if s.epoch is not None:
            parts.append(f"epoch={s.epoch}")
        if s.node_pid is not None:
            parts.append(f"node_pid={s.node_pid}")
        return " ".join(parts)

    def status_view(self, now: float) -> StatusView:
        s = self.state
        held = s.epoch is not None
        extra: dict[str, object] = {"restarts": s.restarts, "instance": self.identity.instance,
                                    "host": self.identity.host}
        if s.renewed_sent_at is not None:
            extra["last_renewal_age"] = round(now - s.renewed_sent_at, 3)
        kill_at = core.kill_deadline(s, self.timing)
        if kill_at is not None:
            extra["kill_deadline_in"] = round(kill_at - now, 3)
        if s.lease_enabled:
            can, why = core.takeover_readiness(s, now)
            extra["can_take_over"] = can
            extra["can_take_over_reason"] = why
            extra["database"] = {
                "reachable": s.db_ok_at is not None and s.call_failures == 0,
                "last_error": s.db_error,
                "failing_for": (None if s.db_error_since is None
                                else round(now - s.db_error_since, 3)),
                "failures_in_a_row": s.call_failures,
                "last_answer_age": None if s.db_ok_at is None else round(now - s.db_ok_at, 3),
                "server": s.server,
            }
            extra["machine_identity"] = self.identity.machine
            extra["machine_name_conflict"] = s.name_conflict
            extra["paused"] = s.paused
            extra["fencing"] = None if self.db_fence is None else self.db_fence.status()
        return StatusView(
            state=str(s.state), machine_name=self.identity.machine_name,
            holder=self.identity.machine_name if held else s.holder, epoch=s.epoch,
            node_pid=s.node_pid, lease_held=held, node_running=s.node is NodePhase.RUNNING,
            node_ready=s.node_ready,
            lease_enabled=s.lease_enabled, last_loop_turn=now, extra=extra)

    def member_info(self) -> Member:
        """What this supervisor registers about itself for `status` and `handover`."""
        can, why = core.takeover_readiness(self.state, self.clock())
        return Member(instance=self.identity.instance,
                      machine_name=self.identity.machine_name,
                      machine_identity=self.identity.machine, host=self.identity.host,
                      pid=self.identity.pid, state=str(self.state.state), can_take_over=can,
                      reason=why, version=__version__)

    def _publish_status(self, now: float) -> None:
        view = self.status_view(now)
        member_key = (view.state, view.extra.get("can_take_over"))
        if member_key != self._member_key:
            self._member_key = member_key
            if isinstance(self.store, PostgresLeaseStore):
                self.store.member_changed()
        if self.health is not None:
            self.health.update(view)
        self.metrics.update(view)

    def _start_health(self) -> bool:
        """Bind the HTTP endpoint; False (logged, naming health.port) when it cannot."""
        h = self.config.health
        if not h.enabled:
            return True
        internal = None if h.internal_port is None else (h.internal_host, h.internal_port)
        self.health = HealthServer(h.host, h.port, liveness_timeout=max(5.0, 4 * LOOP_TURN),
                                   registry=self.metrics.registry, token=h.token,
                                   internal=internal)
        try:
            self.health.start()
        except OSError as e:
            self.health = None
            where = f"{h.host}:{h.port}" + ("" if internal is None else
                                            f" or {h.internal_host}:{h.internal_port}")
            log.error("health_port_unavailable", host=h.host, port=h.port,
                      internal_host=h.internal_host if internal else None,
                      internal_port=h.internal_port, error=e.strerror or str(e),
                      message=f"cannot listen on {where} ({e.strerror or e}): "
                              f"choose another health.port / health.host (or "
                              f"health.internalPort / internalHost) in {self.config.source}")
            return False
        log.info("health_listening", host=h.host, port=self.health.port,
                 internal_host=h.internal_host if internal else None,
                 internal_port=self.health.internal_port,
                 token=h.token_file is not None)
        return True

    async def _database_problem_at_start(self) -> str | None:
        """One bounded look at the database before contending: a refused login or a
        missing privilege is a configuration problem (its message); anything else
        (unreachable, slow) is None and is waited out by the loop, loudly."""
        if self.store is None:
            return None
        db = self.config.database
        try:
            await self.store.ensure_schema(db.connect_timeout + db.operation_timeout)
        except LeaseUnavailable as e:
            return database_config_problem(e, self.config)
        self.schema_ready = True
        return None

    # ------------------------------------------------------------ leaving

    async def _shutdown(self, listener: asyncio.Task[None] | None) -> None:
        """Bounded cleanup. If we leave with a node still running (a bug or an
        exception), kill it: it must never run unguarded."""
        self.notifier.stopping()
        if self.node.process is not None and self.node.process.running:
            log.error("node_killed_on_exit", pid=self.node.process.pid)
            self.node.process.kill()
            try:
                await asyncio.wait_for(self.node.process.wait(), 5.0)
            except TimeoutError:
                log.error("node_kill_wait_timeout")
        if listener is not None:
            listener.cancel()
        for task in list(self.tasks):
            task.cancel()
        if self.store is not None:
            try:
                await asyncio.wait_for(self.store.close(), 3.0)
            except (TimeoutError, Exception):
                log.warning("store_close_timeout")
        if self.health is not None:
            self.health.stop()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
