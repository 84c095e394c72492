"""The daemon loop: feeds events to the pure core and carries out its actions.

Contract: the loop never awaits a database call or a process operation itself.
Every lease action runs as its own task that posts exactly one result event within
the action's bound plus a small grace (`leasecalls`), every node start is a task of
its own (`noderun`), and every other node action is a non-blocking write to the
guard. So a hung database or a slow node can never delay a deadline; and if this
process hangs anyway, the guard kills the node at the deadline it was last given.

Signal handlers only enqueue events (SIGTERM/SIGINT -> ShutdownRequested).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import Any

import structlog

from supervisor import core
from supervisor.clock import now as clock_now
from supervisor.config import EX_CONFIG, Config
from supervisor.core import CoreState, Timing
from supervisor.core.identity import Identity
from supervisor.core.messages import (
    AcquireLease,
    Action,
    Begin,
    Event,
    Exit,
    KillNode,
    Log,
    ObserveLease,
    PeerReleased,
    ReleaseLease,
    RenewLease,
    SetNodeDeadline,
    SettleSchedule,
    ShutdownRequested,
    StartNode,
    StopNode,
    Tick,
)
from supervisor.daemon import status
from supervisor.daemon.fencer import DatabaseFencer
from supervisor.daemon.hooks import Hooks
from supervisor.daemon.leasecalls import CALL_GRACE, LeaseCalls, record_history
from supervisor.daemon.noderun import NodeRunner
from supervisor.daemon.peers import peers_event
from supervisor.lease import LeaseStore, LeaseUnavailable, PostgresLeaseStore, replication
from supervisor.lease.bounded import connect_budget
from supervisor.lease.startup import database_config_problem
from supervisor.node.machine import this_process
from supervisor.node.sweep import RunMarks, sweep_at_startup
from supervisor.observe.http import HealthServer
from supervisor.observe.metrics import Metrics
from supervisor.observe.sdnotify import SystemdNotifier

LOOP_TURN = 0.5  # the loop turns at least this often (liveness, watchdog)

__all__ = ["CALL_GRACE", "LOOP_TURN", "Daemon"]

log = structlog.get_logger("supervisor.daemon")


class Daemon:
    """One supervisor. `run()` returns the process exit status. `store` (the lease
    port; default PostgreSQL), `identity`, `clock` and `notifier` may be given (tests)."""

    def __init__(self, config: Config, *, store: LeaseStore | None = None,
                 identity: Identity | None = None, clock: Callable[[], float] = clock_now,
                 notifier: SystemdNotifier | None = None) -> None:
        self.config = config
        self.timing = Timing.from_config(config)
        self.identity = identity or this_process(config.lease.machine_name)
        self.clock = clock
        self.metrics = Metrics(machine_name=config.lease.machine_name,
                               lease=config.database.lease_name)
        if store is None and config.lease.enabled:
            store = PostgresLeaseStore(config.database, self.identity,
                                       config.lease.wait_interval)
        self.store = store
        self.fencer: DatabaseFencer | None = None
        if store is not None:
            store.member_info = lambda: status.member(self.state, self.identity, self.clock(),
                                                      self.timing)
            store.members_seen = lambda rows: self.post(peers_event(rows, self.identity))
            self.metrics.count_statements(lambda: store.statements)
            store.statement_timer = self.metrics.time_lease_statement
            if config.fencing.enabled:
                self.fencer = DatabaseFencer(config.fencing, store, self.identity,
                                             config.database.operation_timeout, self.post)
        self.notifier = notifier or SystemdNotifier()
        self.state: CoreState = core.initial_state(
            config.lease.enabled, nofailover=config.candidate.nofailover,
            priority=config.candidate.priority)
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.node = NodeRunner(config, self.identity, store, self.fencer,
                               config.lease.wait_interval, self.post)
        self.leasecalls = None if store is None else LeaseCalls(
            store, self.identity, self.clock, self.post, self.metrics)
        self.health: HealthServer | None = None
        self.exit_code: int | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self.hooks = Hooks(config, self.identity.machine_name, self.clock, self.tasks)
        self.last_watchdog = 0.0
        self._member_key: tuple[object, ...] = ()

    def post(self, event: Event) -> None:
        """Queue an event for the core (from tasks, callbacks and signal handlers)."""
        self.events.put_nowait(event)

    # ------------------------------------------------------------ main loop

    async def run(self) -> int:
        """Run until shut down; the exit status. 78 (EX_CONFIG) before anything is
        contended when the health port cannot be bound or the database refuses the
        configured login or privileges; an unreachable database is waited out."""
        self._log_start()
        self.health = status.start_health(self.config, self.metrics, LOOP_TURN)
        if self.config.health.enabled and self.health is None:
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
            loop.add_signal_handler(sig, self.post, ShutdownRequested(sig.name))
        loop.add_signal_handler(signal.SIGHUP, lambda: log.info("sighup_ignored"))
        listener: asyncio.Task[None] | None = None
        if self.store is not None:
            listener = asyncio.create_task(self.store.listen(lambda: self.post(PeerReleased())))
        if self.config.node.shared_directories:
            self._spawn(self.node.probe_shared_directories())
        self.node.marks = RunMarks.for_node(self.config.node,
                                            lease_name=self.config.database.lease_name,
                                            machine_name=self.identity.machine_name)
        await sweep_at_startup(self.node.marks)  # bounded: an earlier run's leftovers die
        self.notifier.ready(status.status_line(self.state))
        try:
            if self.fencer is not None:
                self._feed(self.fencer.initial_event())
                self._spawn(self.fencer.watch())
            self._feed(Begin())
            await self._turn_until_exit()
            assert self.exit_code is not None
            return self.exit_code
        finally:
            await self._shutdown(listener)

    async def _turn_until_exit(self) -> None:
        getter: asyncio.Task[Event] | None = None
        while self.exit_code is None:
            wake = core.next_wakeup(self.state, self.timing)
            timeout = LOOP_TURN
            if wake is not None:
                timeout = min(LOOP_TURN, max(0.0, wake - self.clock()))
            dog = self.notifier.watchdog_interval()
            if dog is not None:
                timeout = min(timeout, max(0.0, self.last_watchdog + dog - self.clock()))
            # One long-lived getter: a timeout never cancels a get that already took an
            # event off the queue, so no event is ever lost.
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

    def _feed(self, event: Event) -> None:
        old = self.state
        now = self.clock()
        self.state, actions = core.step(self.state, event, now, self.timing)
        for action in actions:
            self._carry_out(action)
        if self.store is not None:
            record_history(self.store, old, self.state, event)
        self.hooks.note_role(status.role(self.state), self.state.lease.epoch)
        if self.state.state != old.state:
            self.notifier.status(status.status_line(self.state))
        self._after_turn(now)

    def _after_turn(self, now: float) -> None:
        interval = self.notifier.watchdog_interval()
        if interval is not None and now - self.last_watchdog >= interval:
            self.notifier.watchdog()
            self.last_watchdog = now
        view = status.status_view(self.state, self.timing, self.identity, now,
                                  None if self.fencer is None else self.fencer.status())
        member_key = (view.state, view.extra.get("can_take_over"))
        if member_key != self._member_key:
            self._member_key = member_key
            if self.store is not None:
                self.store.member_changed()
        if self.health is not None:
            self.health.update(view)
        self.metrics.update(view)

    # ------------------------------------------------------------ actions

    def _carry_out(self, action: Action) -> None:
        match action:
            case Log(event=name, level=level, fields=fields):
                getattr(log, level)(name, **dict(fields))
            case (ObserveLease() | AcquireLease() | RenewLease() | ReleaseLease()
                  | SettleSchedule()):
                assert self.leasecalls is not None
                self._spawn(self.leasecalls.run(action))
            case StartNode():
                self._spawn(self.node.run(action))
            case SetNodeDeadline(kill_deadline=deadline):
                self.node.command(lambda p: p.set_deadline(deadline))
            case StopNode(grace=grace, planned=planned):
                if planned and self.config.hooks.pre_stop:
                    self._spawn(self.hooks.pre_stop_then_stop(grace, self.state.lease.epoch,
                                                              self.node.command))
                else:
                    self.node.command(lambda p: p.stop(grace))
            case KillNode():
                self.node.command(lambda p: p.kill())
            case Exit(code=code):
                self.exit_code = code

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # ------------------------------------------------------------ start and leaving

    def _log_start(self) -> None:
        t = self.timing
        log.info("supervisor_started", machine_name=self.identity.machine_name,
                 host=self.identity.host, pid=self.identity.pid,
                 machine_identity=self.identity.machine,
                 instance=self.identity.instance, lease=self.config.lease.enabled,
                 update_interval=t.update_interval, wait_interval=t.wait_interval,
                 margin=t.margin, stop_timeout=t.stop_timeout,
                 loss_grace=round(t.loss_grace, 3))
        if self.config.lease.enabled:
            log.info("stop_graces", planned_stop_grace=t.stop_timeout,
                     lease_loss_grace=round(t.loss_grace, 3),
                     message=(f"a planned stop (shutdown, handover) gives the node "
                              f"stopTimeout = {t.stop_timeout:g} s; a node whose lease is "
                              f"being lost gets {t.loss_grace:.3g} s of SIGTERM before SIGKILL"))
        for warning in self.config.warnings:
            log.warning("config_warning", message=warning)

    async def _database_problem_at_start(self) -> str | None:
        """One bounded look at the database before contending: a refused login or a
        missing privilege (the probe of `supervisor.lease.privileges`) is a configuration
        problem (its message); anything else (unreachable, slow) is None and is waited
        out by the loop, loudly."""
        if self.store is None or self.leasecalls is None:
            return None
        db = self.config.database
        bound = connect_budget(db) + db.operation_timeout
        try:
            await self.store.ensure_schema(bound)
            missing = await self.store.missing_privileges(
                fencing=self.config.fencing.enabled,
                fencing_required=self.config.fencing.required, timeout=bound)
        except LeaseUnavailable as e:
            return database_config_problem(e, self.config)
        self.leasecalls.schema_ready = True
        for m in missing:
            log.log(logging.ERROR if m.blocking else logging.WARNING, "privilege_missing",
                    role=m.role, object=m.object, privilege=m.privilege,
                    needed_for=m.needed_for, fix=m.fix, message=str(m))
        blocking = [str(m) for m in missing if m.blocking]
        if blocking:
            return "; ".join(blocking)
        log.info("privileges_checked", missing=len(missing),
                 message="the database lets this role do all it needs for the lease"
                         + (" (see privilege_missing: advisory)" if missing else ""))
        await self._log_replication(bound)
        return None

    async def _log_replication(self, bound: float) -> None:
        """Advisory, never blocking: what a failover of the lease database can cost
        (`supervisor.lease.replication`); a warning where it could cost two nodes."""
        assert self.store is not None
        try:
            settings = await self.store.replication(bound)
        except LeaseUnavailable as e:
            log.warning("replication_unknown", error=str(e),
                        message="could not read the lease database's replication settings; "
                                "run check-config --online to see what a failover can cost")
            return
        p = replication.assess(settings, replication.holder_slack(self.timing))
        log.log(logging.WARNING if p.two_nodes else logging.INFO, "replication_protection",
                protection=p.kind, two_nodes=p.two_nodes,
                synchronous_commit=settings.synchronous_commit,
                synchronous_standby_names=settings.synchronous_standby_names,
                sync_standbys=settings.sync_standbys, message=p.message)

    async def _shutdown(self, listener: asyncio.Task[None] | None) -> None:
        """Bounded cleanup. If we leave with a node still running (a bug or an
        exception), kill it: it must never run unguarded."""
        self.notifier.stopping()
        process = self.node.process
        if process is not None and process.running:
            log.error("node_killed_on_exit", pid=process.pid)
            process.kill()
            try:
                await asyncio.wait_for(process.wait(), 5.0)
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
