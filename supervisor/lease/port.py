"""The lease as the daemon uses it: `LeaseStore`, the one port the daemon talks to.

`PostgresLeaseStore` (`supervisor.lease.store`) is the production adapter; the test
harness has an in-memory one. The daemon never asks which it has.

The contract, in the way Patroni's `AbstractDCS` states its own (docs/design.md, "The
lease"):

- **Bounded.** Every `async` operation takes a `timeout` (seconds) and returns or
  raises within it (plus event-loop scheduling), even when the network or the server
  hangs; connecting is inside the bound. On a timeout the operation's connection is
  never used again.
- **One failure type.** Unreachable, too slow or failing: `LeaseUnavailable` (with the
  server's SQLSTATE when it answered with an error). It says nothing about who holds
  the lease. Its message never holds the password.
- **Database clock only.** Every comparison of times is made by the database.
- **Compare-and-set where it decides.** `acquire` takes the row only when it still
  equals the version the caller watched (and is free, expired, or its own provably
  dead predecessor's) on the server the caller watched; `renew` and `release` act
  only for this process and this epoch. Each is one atomic statement.
- **Committed when answered.** A lease statement's result is returned only when its
  write was committed (it runs alone, autocommitted, on a connection of its own;
  `supervisor.lease.channel`). Nothing else shares that connection.
- **Asides never block the lease.** The history and the member registry are queued
  and written by the listener; Corda's lock row and the database fence run on a
  connection of their own. None of them delays a renewal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from supervisor.core.identity import ProcessRef
from supervisor.core.row import LeaseSnapshot, LeaseVersion, RenewResult
from supervisor.lease.fence import FenceResult
from supervisor.lease.members import Member, MemberRow
from supervisor.lease.privileges import Missing
from supervisor.lease.replication import Settings as ReplicationSettings

#: What Corda's lock row means for our node, as `look_at_corda_row` says it: "absent"
#: (no table here), "no_row", "own", "takeable", "fresh" (another machine's, younger
#: than waitInterval); with the machine it names and its age in seconds.
CordaRowLook = tuple[str, str | None, float | None]


class LeaseStore(Protocol):
    """The lease `lease_name`, contended as one identity; see the module docstring."""

    @property
    def lease_name(self) -> str:
        """The lease (one row) this store contends for."""
        ...

    @property
    def statements(self) -> Mapping[str, int]:
        """Statements sent so far, per operation ("observe", "renew", ...)."""
        ...

    member_info: Callable[[], Member] | None
    """What this supervisor registers about itself (None: nothing yet)."""

    statement_timer: Callable[[str, float], None] | None
    """Called with (operation, seconds) when a lease statement (on the lease statements'
    own connection) has answered; None: not timed. Must be cheap and never raise."""

    members_seen: Callable[[list[MemberRow]], None] | None
    """Given every member row of the lease after each refresh of this member's."""

    async def ensure_schema(self, timeout: float) -> None:
        """Create what is missing (idempotent; only looks where it may not create)."""

    async def missing_privileges(self, *, fencing: bool, fencing_required: bool,
                                 timeout: float) -> list[Missing]:
        """What the connected role may not do of what the supervisor will need (the
        lease, member, history and access tables; with `fencing`, the fence's functions
        and bindings; Corda's lock row, advisory), changing nothing; [] when nothing."""
        ...

    async def replication(self, timeout: float) -> ReplicationSettings:
        """The database's replication settings as a lease session sees them
        (`supervisor.lease.replication`), changing nothing."""
        ...

    async def observe(self, timeout: float) -> LeaseSnapshot:
        """The row, the database time and which server answered, in one statement."""
        ...

    async def acquire(self, expected: LeaseVersion | None, *,
                      takeover: ProcessRef | None = None, server: str | None = None,
                      timeout: float) -> int | None:
        """Take the lease (compare-and-set on `expected`, on `server`); the new epoch or
        None when not taken. The caller has watched `expected` unchanged for W."""
        ...

    async def renew(self, epoch: int, timeout: float, *,
                    hedge_after: float | None = None) -> RenewResult | None:
        """Extend our lease of `epoch` to now + W; None: it is lost. With `hedge_after`,
        raced on fresh connections until one answers or `timeout` passes."""
        ...

    async def release(self, epoch: int, timeout: float) -> bool:
        """Give `epoch` up and wake the listeners; False: it was not ours any more."""
        ...

    async def settle_schedule(self, epoch: int, proceed: bool, to: str | None,
                              timeout: float) -> bool:
        """Take a handover set for a time that has come off the row, as the holder of
        `epoch`: with `proceed` as a handover request (to `to`), else cancelled; False
        when the row was not ours or the schedule changed (`supervisor.lease.candidates`)."""
        ...

    async def listen(self, on_release: Callable[[], None]) -> None:
        """Call `on_release` whenever the lease may have been released (and once per
        (re)connection); write the queued history and this member's row. Runs until
        cancelled; never raises."""

    def member_changed(self) -> None:
        """This member's row is out of date: refresh it soon."""

    def record_acquired(self, epoch: int, how: str, previous: str | None) -> None:
        """Queue the history row of this acquisition (never waits)."""

    def record_ended(self, epoch: int, reason: str) -> None:
        """Queue the end of `epoch` in the history (never waits)."""

    async def prepare_corda_row(self, epoch: int, timeout: float) -> str:
        """Set Corda's lock row of another machine back, so that our node may take it
        (only while we hold `epoch`); what was found or done ("absent": no table).
        The caller calls it only once this acquisition's database fence completed."""
        ...

    async def look_at_corda_row(self, timeout: float) -> CordaRowLook:
        """Corda's lock row as it is, changing nothing."""
        ...

    async def confirm_fencing(self, role: str, machine: str, timeout: float) -> str | None:
        """None when the database fence can work for `role` on `machine`, else why not.
        Raises `LeaseUnavailable` only when the database cannot be reached."""
        ...

    async def fence(self, epoch: int, role: str, machine: str, timeout: float) -> FenceResult:
        """Lock every other node role bound to the lease out and end its sessions, as the
        holder of `epoch`; raises `FenceFailed` (why, and what to do)."""
        ...

    async def close(self) -> None:
        """Close every connection; waits a bounded time for abandoned calls."""
