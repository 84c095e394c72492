"""An in-memory lease store: the complete lease port (`supervisor.lease.port.LeaseStore`)
over one lease row, with the contract's semantics, for the daemon in a test's own event
loop (tests/harness/inproc.py).

- `observe` reads the row as `PostgresLeaseStore` does: `expired` when held and past
  both `expires_at` and `renewed_at + W` by this store's clock (the database clock);
  `row_server` names the server that wrote the row last; `reserved_for` the machine a
  `handover --to` released it to, for 2 W after the release.
- `acquire` is a compare-and-set: nothing unless the caller's `server` is the one that
  answers; a missing row is inserted at epoch 1; otherwise the row must still be exactly
  `expected` (epoch, instance, `renewed_at`; None: never taken), not paused nor
  reserved for another machine, and free, expired, or held under this machine name
  and machine identity by the dead process `takeover`. A take bumps the epoch.
- `renew` and `release` act only for this instance and this epoch; `renew` only while
  the row has not expired (`expires_at` > now). A release keeps the epoch and wakes
  the listeners.
- `listen` calls `on_release` once at its start (a (re)connection) and after every
  release; the history and the member registry are kept in memory (`history`,
  `member_info`). There is no Corda table ("absent") and no database fence here.

Every operation first records its call (`calls[op]`: monotonic time, arguments) and
awaits its hook, if any (`hooks[op]`, given the call's number, 1-based): a hook may
sleep (a slow answer), `hang` (never answer, ignoring cancellation, like a call stuck
in libpq), raise (an unexpected exception or `LeaseUnavailable`) or block the whole
event loop (a frozen supervisor). `release_hangs` ends every `hang`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from supervisor.core.identity import Identity, ProcessRef
from supervisor.lease import LeaseSnapshot, LeaseVersion, Member, RenewResult
from supervisor.lease.fence import FenceFailed, FenceResult
from supervisor.lease.privileges import Missing
from supervisor.lease.replication import Settings as ReplicationSettings

Hook = Callable[[int], Awaitable[None]]
OPERATIONS = ("observe", "acquire", "renew", "release")


async def hang(release: asyncio.Event) -> None:
    """Never answer (until `release` is set), ignoring cancellation like a stuck C call."""
    while not release.is_set():
        try:
            await release.wait()
        except asyncio.CancelledError:
            continue


@dataclass(frozen=True)
class Row:
    """The lease row as a database holds it."""

    epoch: int
    holder: str | None = None
    holder_host: str | None = None
    holder_pid: int | None = None
    holder_machine: str | None = None
    holder_started: int | None = None
    instance: str | None = None
    acquired_at: datetime | None = None
    renewed_at: datetime | None = None
    expires_at: datetime | None = None
    server: str | None = None  # the server that wrote it last
    paused: bool = False
    handover_to: str | None = None


class MemoryDb:
    """The database of `FakeStore`s: one lease row, the server that answers (change it
    to play a failover), the database clock (default: the wall clock), W (the stores'
    `wait_interval`) and the listeners to wake on a release."""

    def __init__(self, wait_interval: float = 2.0, server: str = "srv-1",
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.w = timedelta(seconds=wait_interval)
        self.server = server
        self.clock = clock
        self.row: Row | None = None
        self.listeners: list[asyncio.Event] = []

    def released(self) -> None:
        for event in self.listeners:
            event.set()


class FakeStore:
    """The lease `lease_name` in `db` (default: a database of its own), contended as
    `identity`; see the module docstring."""

    def __init__(self, identity: Identity, wait_interval: float = 2.0, server: str = "srv-1",
                 *, lease_name: str = "l", db: MemoryDb | None = None) -> None:
        self.identity = identity
        self.db = db if db is not None else MemoryDb(wait_interval, server)
        self.renewed = 0  # successful renewals
        self.calls: dict[str, list[tuple[float, dict[str, Any]]]] = {
            op: [] for op in OPERATIONS}
        self.hooks: dict[str, Hook] = {}
        self.release_hangs = asyncio.Event()
        self.history: list[dict[str, Any]] = []
        self.member_info: Callable[[], Member] | None = None
        self.statement_timer: Callable[[str, float], None] | None = None
        self.members_seen: Callable[[list[Any]], None] | None = None
        self.member_changes = 0
        self.closed = False
        self.missing: list[Missing] = []  # what `missing_privileges` answers
        # what `replication` answers: a database with one synchronous standby
        self.replication_settings = ReplicationSettings("on", "ANY 1 (standby)", 1, 1)
        self._lease_name = lease_name

    @property
    def server(self) -> str:
        """The server that answers."""
        return self.db.server

    @server.setter
    def server(self, server: str) -> None:
        self.db.server = server

    @property
    def row(self) -> Row | None:
        return self.db.row

    @row.setter
    def row(self, row: Row | None) -> None:
        self.db.row = row

    def clock(self) -> datetime:
        return self.db.clock()

    # ------------------------------------------------------------------ the port

    @property
    def lease_name(self) -> str:
        return self._lease_name

    @property
    def statements(self) -> Mapping[str, int]:
        return {op: len(calls) for op, calls in self.calls.items() if calls}

    @property
    def holder(self) -> str | None:
        """Who holds the lease now (None: free or no row)."""
        return None if self.row is None else self.row.holder

    @property
    def epoch(self) -> int:
        return 0 if self.row is None else self.row.epoch

    async def ensure_schema(self, timeout: float) -> None:
        pass

    async def missing_privileges(self, *, fencing: bool, fencing_required: bool,
                                 timeout: float) -> list[Missing]:
        return list(self.missing)

    async def replication(self, timeout: float) -> ReplicationSettings:
        return self.replication_settings

    async def observe(self, timeout: float) -> LeaseSnapshot:
        await self._enter("observe", timeout=timeout)
        now, r, w = self.clock(), self.row, self.db.w
        if r is None:
            return LeaseSnapshot(
                lease_name=self.lease_name, exists=False, holder=None, holder_host=None,
                holder_pid=None, instance=None, epoch=0, acquired_at=None, renewed_at=None,
                expires_at=None, handover_requested_at=None, db_now=now, expired=False,
                server=self.server, server_uptime=3600.0, row_server=None)
        return LeaseSnapshot(
            lease_name=self.lease_name, exists=True, holder=r.holder,
            holder_host=r.holder_host, holder_pid=r.holder_pid, instance=r.instance,
            epoch=r.epoch, acquired_at=r.acquired_at, renewed_at=r.renewed_at,
            expires_at=r.expires_at, handover_requested_at=None, db_now=now,
            expired=self._expired(r, now), holder_machine=r.holder_machine,
            holder_started=r.holder_started, server=self.server, server_uptime=3600.0,
            row_server=r.server, paused=r.paused,
            reserved_for=(r.handover_to if r.holder is None and r.expires_at is not None
                          and now < r.expires_at + 2 * w else None))

    async def acquire(self, expected: LeaseVersion | None, *,
                      takeover: ProcessRef | None = None, server: str | None = None,
                      timeout: float) -> int | None:
        await self._enter("acquire", expected=expected, takeover=takeover, server=server,
                          timeout=timeout)
        if server is not None and server != self.server:
            return None
        now, r = self.clock(), self.row
        if r is None:
            return self._take(1, now)
        if expected is None or not self._takeable(r, expected, takeover, now):
            return None
        return self._take(r.epoch + 1, now)

    async def renew(self, epoch: int, timeout: float, *,
                    hedge_after: float | None = None) -> RenewResult | None:
        await self._enter("renew", epoch=epoch, timeout=timeout, hedge_after=hedge_after)
        now, r = self.clock(), self.row
        if (r is None or not self._ours(r, epoch) or r.expires_at is None
                or not r.expires_at > now):
            return None
        self.row = dataclasses.replace(r, renewed_at=now, expires_at=now + self.db.w,
                                       server=self.server)
        self.renewed += 1
        return RenewResult(handover_requested=False, paused=r.paused, renewed_at=now)

    async def settle_schedule(self, epoch: int, proceed: bool, to: str | None,
                              timeout: float) -> bool:
        """No schedule is ever set in memory: nothing to take off."""
        return False

    async def release(self, epoch: int, timeout: float) -> bool:
        await self._enter("release", epoch=epoch, timeout=timeout)
        r = self.row
        if r is None or not self._ours(r, epoch):
            return False
        self.row = dataclasses.replace(
            r, holder=None, holder_host=None, holder_pid=None, holder_machine=None,
            holder_started=None, instance=None, expires_at=self.clock(), server=self.server)
        self.db.released()
        return True

    async def listen(self, on_release: Callable[[], None]) -> None:
        released = asyncio.Event()
        self.db.listeners.append(released)
        try:
            on_release()  # connected: look now
            while True:
                await released.wait()
                released.clear()
                on_release()
        finally:
            self.db.listeners.remove(released)

    def member_changed(self) -> None:
        self.member_changes += 1

    def record_acquired(self, epoch: int, how: str, previous: str | None) -> None:
        self.history.append({"epoch": epoch, "holder": self.identity.machine_name,
                             "how": how, "previous_holder": previous, "end_reason": None})

    def record_ended(self, epoch: int, reason: str) -> None:
        for entry in self.history:
            if entry["epoch"] == epoch and entry["end_reason"] in (None, "taken over"):
                entry["end_reason"] = reason

    async def prepare_corda_row(self, epoch: int, timeout: float) -> str:
        return "absent"  # no Corda table in this database

    async def look_at_corda_row(self, timeout: float) -> tuple[str, str | None, float | None]:
        return "absent", None, None

    async def confirm_fencing(self, role: str, machine: str, timeout: float) -> str | None:
        return "no database fence in this in-memory store"

    async def fence(self, epoch: int, role: str, machine: str, timeout: float) -> FenceResult:
        raise FenceFailed("no database fence in this in-memory store")

    async def close(self) -> None:
        self.closed = True

    # ------------------------------------------------------------------ the rules

    def _expired(self, r: Row, now: datetime) -> bool:
        return (r.holder is not None and r.expires_at is not None and r.renewed_at is not None
                and now > r.expires_at and now > r.renewed_at + self.db.w)

    def _ours(self, r: Row, epoch: int) -> bool:
        return r.instance == self.identity.instance and r.epoch == epoch

    def _takeable(self, r: Row, expected: LeaseVersion, takeover: ProcessRef | None,
                  now: datetime) -> bool:
        me = self.identity
        if r.paused:
            return False
        if (r.handover_to is not None and r.handover_to != me.machine_name
                and r.holder is None and r.expires_at is not None
                and now < r.expires_at + 2 * self.db.w):
            return False  # reserved for another machine
        if (r.epoch, r.instance, r.renewed_at) != (expected.epoch, expected.instance,
                                                   expected.renewed_at):
            return False  # not the version the caller watched
        own_dead_predecessor = (
            takeover is not None and r.holder == me.machine_name
            and r.holder_machine == me.machine and r.holder_pid == takeover.pid
            and r.holder_started == takeover.started)
        return r.holder is None or self._expired(r, now) or own_dead_predecessor

    def _take(self, epoch: int, now: datetime) -> int:
        me = self.identity
        self.row = Row(epoch=epoch, holder=me.machine_name, holder_host=me.host,
                       holder_pid=me.pid, holder_machine=me.machine,
                       holder_started=me.started, instance=me.instance, acquired_at=now,
                       renewed_at=now, expires_at=now + self.db.w, server=self.server)
        return epoch

    async def _enter(self, op: str, **args: Any) -> None:
        self.calls[op].append((time.monotonic(), args))
        hook = self.hooks.get(op)
        if hook is not None:
            await hook(len(self.calls[op]))
