"""The lease store: one row per lease name in a PostgreSQL table (docs/design.md, "The lease").

Contract, for every `PostgresLeaseStore` operation:

- **Bounded.** Each call takes a `timeout` (seconds) that this module owns: the
  call returns or raises within `timeout` (plus event-loop scheduling) even when
  the network or the server hangs and even when psycopg's own cancellation would
  block. Waiting for a connection is inside that bound; the connect itself has a
  budget of its own and outlives a call that gave up on it, for the next call
  (`supervisor.lease.channel`: a multi-host URL's silent first host). A call that
  runs out of time drops its connection (the next call opens a fresh one) and
  raises `LeaseUnavailable`.
- **One failure type.** Database unreachable, timed out or failing: the
  connection is dropped and `LeaseUnavailable` is raised. Its message never
  contains the password.
- **Database clock only.** Every time comparison happens inside the SQL
  statement with `clock_timestamp()`; host clocks are never compared.
- **Atomic.** `acquire`, `renew` and `release` are single statements each; the
  row cannot change between their check and their write.
- **One conversation per concern** (`supervisor.lease.channel`). The lease
  statements (`observe`, `acquire`, `renew`, `release`, `request_handover`,
  `set_paused`) run on a connection of their own, autocommitted, one statement at a
  time, never inside a transaction block; a lease statement whose connection is not
  idle afterwards has failed (`LeaseUnavailable`), so a renewal the caller acts on
  is a committed one. Everything else (`ensure_schema`, `history`, `members`,
  `prepare_corda_row`, `call`: transactions included) runs on a second
  connection, one operation at a time. LISTEN, the member registry and the history
  writes use a third (`listen`).

Rows are never deleted. `epoch` grows by one on every acquisition (new rows
start at 1) and is the fencing token.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from supervisor.config import DatabaseConfig
from supervisor.core.identity import Identity, ProcessRef
from supervisor.core.row import (
    LeaseSnapshot,
    LeaseUnavailable,
    LeaseVersion,
    RenewResult,
)
from supervisor.lease import fence as database_fence
from supervisor.lease import members as member_rows
from supervisor.lease.bounded import Bounded, Conn, connect_budget, connect_kwargs, scrub
from supervisor.lease.candidates import ScheduleSql, schedule_of, settle_op
from supervisor.lease.channel import Channel
from supervisor.lease.cordarow import CORDA_TABLE, look, make_takeable
from supervisor.lease.hedge import Race
from supervisor.lease.listener import Listener
from supervisor.lease.members import Member, MemberRow, MemberSql
from supervisor.lease.privileges import Missing, ProbeTarget
from supervisor.lease.privileges import probe as probe_privileges
from supervisor.lease.replication import Settings as ReplicationSettings
from supervisor.lease.replication import read as read_replication
from supervisor.lease.schema import create_missing
from supervisor.lease.sql import LeaseSql, snapshot_from_row

log = logging.getLogger(__name__)

T = TypeVar("T")

NOTIFY_CHANNEL_DEFAULT = "corda_ha_lease"
#: Seconds the side connection may stay unused before it is closed (reopened on demand:
#: at a node start, by the fencing check every 30 s, by the history of `status`).
SIDE_IDLE_CLOSE = 10.0



class PostgresLeaseStore:
    """The lease `db.lease_name` in table `db.schema.db.table`, contended as `identity`.

    `wait_interval` is W in seconds: a holder that stops renewing loses the lease
    W after its last renewal (by the database clock). A connection for the lease
    statements and one for everything else (each reopened on demand), one more while
    `listen` runs. See the module docstring for the contract shared by all operations.
    """

    def __init__(self, db: DatabaseConfig, identity: Identity, wait_interval: float) -> None:
        if wait_interval <= 0:
            raise ValueError("wait_interval must be positive")
        self._db = db
        self.identity = identity
        self.wait_interval = wait_interval
        self._w = timedelta(seconds=wait_interval)
        self._sql = LeaseSql(db.schema, db.table)
        self._schedule_sql = ScheduleSql(db.schema, db.table)
        self._fence_sql = database_fence.FenceSql(db.schema, db.table)
        self.notify_channel = db.table
        self._kwargs = connect_kwargs(db, f"corda-ha-supervisor/{identity.machine_name}")
        self._bounded = Bounded()
        # One conversation per concern (see `supervisor.lease.channel`): the lease
        # statements alone, autocommitted; everything else (transactions included)
        # on the side. LISTEN has a connection of its own (`listen`).
        budget = connect_budget(db)
        self._lease = Channel("lease", self._open, self._bounded, single_statements=True,
                              connect_budget=budget)
        self._side = Channel("side", self._open, self._bounded, single_statements=False,
                             connect_budget=budget, idle_close=SIDE_IDLE_CLOSE)
        self._closed = False
        self._members = MemberSql(db.schema, db.table)
        self._listener = Listener(db, self.lease_name, self.notify_channel, self._open,
                                  self._bounded, self._count, self._members)
        # statements sent per operation ("observe", "renew", ...), for metrics
        self.statements: dict[str, int] = {}
        self.statement_timer: Callable[[str, float], None] | None = None

    @property
    def lease_name(self) -> str:
        return self._db.lease_name

    @property
    def database(self) -> DatabaseConfig:
        return self._db

    # -- operations -----------------------------------------------------------------------

    async def ensure_schema(self, timeout: float) -> None:
        """Create the schema and table if missing (idempotent).

        Serialised by a transaction-scoped advisory lock, so supervisors starting
        together never fail on each other's CREATE. Existing objects are only
        looked up, so a role without CREATE privilege works once a DBA created them.
        Columns added by later versions are added when missing (needs ownership
        of the table only then).
        """

        async def op(conn: Conn) -> None:
            await create_missing(conn, self._sql, self._members, self._db.schema)

        await self._run("ensure_schema", op, timeout, self._side)

    async def missing_privileges(self, *, fencing: bool, fencing_required: bool,
                                 timeout: float) -> list[Missing]:
        target = ProbeTarget(schema=self._db.schema, table=self._db.table,
                             lease_name=self._db.lease_name, fencing=fencing,
                             fencing_required=fencing_required)

        async def op(conn: Conn) -> list[Missing]:
            return await probe_privileges(conn, target)

        return await self._run("privileges", op, timeout, self._side)

    async def replication(self, timeout: float) -> ReplicationSettings:
        """The replication settings as the lease session sees them (`replication.py`)."""
        return await self._run("replication", read_replication, timeout, self._side)

    async def observe(self, timeout: float) -> LeaseSnapshot:
        """Read the row, the database time and which server answered, in one statement."""

        async def op(conn: Conn) -> LeaseSnapshot:
            cur = await conn.execute(self._sql.observe, {"w": self._w, "name": self.lease_name})
            row = await cur.fetchone()
            assert row is not None
            return snapshot_from_row(self.lease_name, row)

        return await self._run("observe", op, timeout, self._lease)

    async def acquire(self, expected: LeaseVersion | None, *,
                      takeover: ProcessRef | None = None, server: str | None = None,
                      timeout: float) -> int | None:
        """Take the lease in one atomic statement; the new epoch, or None if not taken.

        Nothing happens unless `server` (a `LeaseSnapshot.server` the caller
        watched; None: any) is the server that answers. Inserts the row (epoch 1)
        when it does not exist. Otherwise takes it only when the row still equals
        `expected` (None: never) and it is free, or expired by the database clock
        (past `expires_at` and `renewed_at + W`), or held under this machine name
        and machine identity by the process `takeover` (the caller has checked
        that process is dead). The caller is responsible for the other half of
        the expiry rule: pass `expected` only after seeing that version unchanged
        for W on its own clock. On success the epoch is bumped,
        `renewed_at` is now and `expires_at` is now + W.
        """
        me = self.identity
        params: dict[str, Any] = {
            "name": self.lease_name, "holder": me.machine_name, "host": me.host,
            "pid": me.pid, "machine": me.machine, "started": me.started,
            "instance": me.instance, "w": self._w, "server": server,
            "has_expected": expected is not None,
            "e_epoch": expected.epoch if expected is not None else 0,
            "e_instance": expected.instance if expected is not None else None,
            "e_renewed": expected.renewed_at if expected is not None else None,
            "dead_pid": takeover.pid if takeover is not None else None,
            "dead_started": takeover.started if takeover is not None else None,
        }

        async def op(conn: Conn) -> int | None:
            cur = await conn.execute(self._sql.acquire, params)
            row = await cur.fetchone()
            return None if row is None else int(row[0])

        return await self._run("acquire", op, timeout, self._lease)

    async def renew(self, epoch: int, timeout: float, *,
                    hedge_after: float | None = None) -> RenewResult | None:
        """Extend our lease to now + W (database clock). None: the lease is lost.

        Succeeds only while this process (instance) holds `epoch` and the lease
        has not expired (`expires_at` > now). Reports a pending handover request.

        With `hedge_after`, a renewal that has no answer after that long is tried
        again on a fresh connection, and again every `hedge_after`, the attempts
        racing until one answers or `timeout` passes (then `LeaseUnavailable`).
        A connection stuck in a partition therefore never costs more than
        `hedge_after` once the database is reachable again. Two attempts may both
        commit: a renewal is idempotent.
        """
        params = {"name": self.lease_name, "instance": self.identity.instance,
                  "epoch": epoch, "w": self._w}

        async def op(conn: Conn) -> RenewResult | None:
            cur = await conn.execute(self._sql.renew, params)
            row = await cur.fetchone()
            return None if row is None else RenewResult(handover_requested=bool(row[0]),
                                                        paused=bool(row[1]), renewed_at=row[2],
                                                        **schedule_of(row))

        if hedge_after is None or hedge_after >= timeout:
            return await self._run("renew", op, timeout, self._lease)
        return await self._hedged("renew", op, timeout, hedge_after)

    async def release(self, epoch: int, timeout: float) -> bool:
        """Give the lease up (holder cleared, epoch kept) and NOTIFY listeners, atomically.

        False when this process no longer held `epoch` (nothing changed).
        """
        params = {"name": self.lease_name, "instance": self.identity.instance,
                  "epoch": epoch, "channel": self.notify_channel}

        async def op(conn: Conn) -> bool:
            cur = await conn.execute(self._sql.release, params)
            return await cur.fetchone() is not None

        return await self._run("release", op, timeout, self._lease)

    async def settle_schedule(self, epoch: int, proceed: bool, to: str | None,
                              timeout: float) -> bool:
        """Take a handover set for a time that has come off the row, as holder of `epoch`
        (`supervisor.lease.candidates`)."""
        return await self._run("settle_schedule", settle_op(
            self.lease_name, self.identity.instance, epoch, proceed, to, self._schedule_sql),
            timeout, self._lease)

    async def request_handover(self, timeout: float, to: str | None = None) -> LeaseSnapshot:
        """Ask the current holder to step down (sets `handover_requested_at` if held).

        The holder sees it on its next renewal. Returns the row after the update.
        An earlier, still pending request keeps its time. With `to`, only that
        machineName may take the released lease (for 2 W after the release; then
        anyone may, so a target that died does not leave the pair without a node).
        """

        async def op(conn: Conn) -> LeaseSnapshot:
            await conn.execute(self._sql.request_handover, {"name": self.lease_name, "to": to})
            cur = await conn.execute(self._sql.observe, {"w": self._w, "name": self.lease_name})
            row = await cur.fetchone()
            assert row is not None
            return snapshot_from_row(self.lease_name, row)

        return await self._run("request_handover", op, timeout, self._lease)

    async def listen(self, on_release: Callable[[], None]) -> None:
        """Call `on_release()` for every release of this lease, until cancelled; write the
        queued history and this member's row meanwhile (see `supervisor.lease.listener`:
        a connection of its own). Never raises except CancelledError."""
        await self._listener.run(on_release)

    def member_changed(self) -> None:
        """This supervisor's member row is out of date: refresh it soon."""
        self._listener.member_changed()

    @property
    def member_info(self) -> Callable[[], Member] | None:
        """What this supervisor registers about itself (None: nothing yet)."""
        return self._listener.member_info

    @member_info.setter
    def member_info(self, info: Callable[[], Member] | None) -> None:
        self._listener.member_info = info

    @property
    def members_seen(self) -> Callable[[list[MemberRow]], None] | None:
        """Given every member row after each refresh of this member's (None: nobody)."""
        return self._listener.members_seen

    @members_seen.setter
    def members_seen(self, seen: Callable[[list[MemberRow]], None] | None) -> None:
        self._listener.members_seen = seen

    @property
    def listen_health_interval(self) -> float:
        """How often the LISTEN connection is checked (and this member refreshed)."""
        return self._listener.health_interval

    @listen_health_interval.setter
    def listen_health_interval(self, seconds: float) -> None:
        self._listener.health_interval = seconds

    def _count(self, what: str) -> None:
        self.statements[what] = self.statements.get(what, 0) + 1

    async def set_paused(self, paused: bool, timeout: float) -> str | None:
        """Pause (the holder leaves its node alone, standbys take nothing) or resume the
        pair, through the lease row (created when missing). The holder, if any."""

        async def op(conn: Conn) -> str | None:
            cur = await conn.execute(self._sql.set_paused,
                                     {"name": self.lease_name, "paused": paused})
            row = await cur.fetchone()
            return None if row is None else row[0]

        return await self._run("set_paused", op, timeout, self._lease)

    def record_acquired(self, epoch: int, how: str, previous: str | None) -> None:
        """Queue this acquisition for the history (it also ends the previous one). The
        history is written on the LISTEN connection, never on the lease's own: an
        aid to operators must not slow a renewal."""
        me = self.identity
        self._listener.queue(self._sql.record_acquired, {
            "name": self.lease_name, "epoch": epoch, "holder": me.machine_name,
            "host": me.host, "how": how, "previous": previous})

    def record_ended(self, epoch: int, reason: str) -> None:
        """Queue: this lease's epoch ended (released, lost)."""
        self._listener.queue(self._sql.record_ended,
                             {"name": self.lease_name, "epoch": epoch, "reason": reason})

    async def history(self, limit: int, timeout: float) -> list[dict[str, Any]]:
        """The last `limit` acquisitions, newest first (an empty list without the table)."""

        async def op(conn: Conn) -> list[dict[str, Any]]:
            try:
                cur = await conn.execute(self._sql.read_history,
                                         {"name": self.lease_name, "limit": limit})
            except psycopg.errors.UndefinedTable:
                return []
            rows = await cur.fetchall()
            keys = ("epoch", "holder", "host", "how", "previous_holder", "acquired_at",
                    "ended_at", "end_reason", "held_seconds")
            return [dict(zip(keys, r, strict=True)) for r in rows]

        return await self._run("history", op, timeout, self._side)

    async def prepare_corda_row(self, epoch: int, timeout: float) -> str:
        """Make Corda's own guard row takeable for our node (see `cordaguard`: only once
        the database fence of `epoch` completed); what was found or done, "absent" when
        Corda's table does not exist here. Bounded by `timeout`; raises
        `LeaseUnavailable` (sqlstate 42501: no privilege)."""
        table = self._corda_table()

        async def op(conn: Conn) -> str:
            try:
                return await make_takeable(
                    conn, self._sql.table, table, lease_name=self.lease_name,
                    instance=self.identity.instance, epoch=epoch,
                    machine_name=self.identity.machine_name, wait_interval=self.wait_interval)
            except psycopg.errors.UndefinedTable:
                return "absent"

        return await self._run("corda_lock_row", op, timeout, self._side)

    async def look_at_corda_row(self, timeout: float) -> tuple[str, str | None, float | None]:
        """Corda's own guard row, changing nothing (see `cordaguard.look`): ("absent",
        None, None) when Corda's table does not exist here. Raises `LeaseUnavailable`."""

        async def op(conn: Conn) -> tuple[str, str | None, float | None]:
            try:
                return await look(conn, self._corda_table(), machine_name=self.identity
                                  .machine_name, wait_interval=self.wait_interval)
            except psycopg.errors.UndefinedTable:
                return "absent", None, None

        return await self._run("corda_lock_row", op, timeout, self._side)

    def _corda_table(self) -> sql.Identifier:
        return (sql.Identifier(self._db.schema, CORDA_TABLE) if self._db.schema
                else sql.Identifier(CORDA_TABLE))

    async def confirm_fencing(self, role: str, machine: str, timeout: float) -> str | None:
        """None when the database fence can work for node role `role` on `machine` (its
        binding confirmed, nothing the fence reads alterable by us), else why not (see
        `supervisor.lease.fence.check`). Raises `LeaseUnavailable` only when the database
        cannot be reached."""
        return await database_fence.check(self.call, self._fence_sql, lease=self.lease_name,
                                          role=role, machine=machine, timeout=timeout)

    async def fence(self, epoch: int, role: str, machine: str,
                    timeout: float) -> database_fence.FenceResult:
        """The database fence of `epoch` (see `supervisor.lease.fence.fence_database`);
        each call bounded by `timeout`. Raises `FenceFailed`."""
        return await database_fence.fence_database(
            self.call, self._fence_sql, lease=self.lease_name, epoch=epoch,
            instance=self.identity.instance, role=role, machine=machine, timeout=timeout)

    async def call(self, what: str, op: Callable[[Conn], Awaitable[T]], timeout: float) -> T:
        """Run `op` on the side connection (never on the lease statements' own), bounded
        by `timeout` (see the module docstring); raises `LeaseUnavailable` (with the
        SQLSTATE, if any). `op` may open a transaction: no other operation shares the
        connection while it runs."""
        return await self._run(what, op, timeout, self._side)

    async def members(self, timeout: float) -> list[MemberRow]:
        """Every registered member of this lease (an empty list without the table)."""

        async def op(conn: Conn) -> list[MemberRow]:
            try:
                return await member_rows.read(conn, self._members, self.lease_name)
            except psycopg.errors.UndefinedTable:
                return []

        return await self._run("members", op, timeout, self._side)

    async def close(self) -> None:
        """Close connections and wait (at most ~2 s) for abandoned calls. Never hangs."""
        self._closed = True
        self._lease.close()
        self._side.close()
        await self._bounded.drain(2.0)

    # -- internals -------------------------------------------------------------------------

    async def _open(self) -> Conn:
        return await psycopg.AsyncConnection.connect(self._db.conninfo, **self._kwargs)

    async def _attempt(self, what: str, op: Callable[[Conn], Awaitable[T]], conn: Conn,
                       channel: Channel) -> T:
        """`op` on `conn` (lent to this operation alone), then the channel's idle check;
        a psycopg or socket error drops the connection and becomes `LeaseUnavailable`."""
        self._count(what)
        started = asyncio.get_running_loop().time()
        try:
            result = await op(conn)
        except (psycopg.Error, OSError) as e:
            channel.drop(conn)
            raise self._unavailable(what, e) from None
        timer = self.statement_timer
        if timer is not None and channel is self._lease:
            timer(what, asyncio.get_running_loop().time() - started)
        channel.check_idle(conn, what)
        return result

    async def _run(self, what: str, op: Callable[[Conn], Awaitable[T]], timeout: float,
                   channel: Channel) -> T:
        if self._closed:
            raise LeaseUnavailable(f"{what}: lease store closed")
        used: list[Conn] = []

        async def attempt() -> T:
            async with channel.borrow() as conn:
                used.append(conn)
                return await self._attempt(what, op, conn, channel)

        def abandon() -> Conn | None:
            # forget the connection the operation was using, so the next call
            # starts afresh (a connect in flight is the channel's: it goes on)
            return channel.forget(used[0]) if used else None

        try:
            return await self._bounded.run(attempt(), timeout, what, abandon)
        except (psycopg.Error, OSError) as e:  # from connecting
            raise self._unavailable(f"{what}: cannot connect", e) from None

    async def _hedged(self, what: str, op: Callable[[Conn], Awaitable[T]], timeout: float,
                      every: float) -> T:
        """Like `_run` on the lease channel, but racing a new attempt on a fresh
        connection every `every` seconds until one answers. The first answer wins; its
        connection becomes the channel's; the other attempts are abandoned in the
        background (`supervisor.lease.hedge`)."""
        if self._closed:
            raise LeaseUnavailable(f"{what}: lease store closed")
        channel = self._lease

        async def attempt(conn: Conn) -> T:
            return await self._attempt(what, op, conn, channel)

        race = Race(what, channel, self._bounded, self._open, attempt, self._unavailable)
        return await race.run(timeout, every)

    def _unavailable(self, what: str, e: Exception) -> LeaseUnavailable:
        sqlstate = e.sqlstate if isinstance(e, psycopg.Error) else None
        text = scrub(str(e), self._db.password).strip()
        return LeaseUnavailable(f"{what}: {type(e).__name__}: {text}", sqlstate=sqlstate)
