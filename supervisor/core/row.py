"""The lease row and what the store says about it, as plain values: the row as read
(`LeaseSnapshot`), the version an acquisition compares (`LeaseVersion`), a renewal's
result, the store's one failure type. No I/O; imports nothing but the stdlib."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


class LeaseUnavailable(Exception):
    """The database was unreachable, too slow or failing; the connection was dropped.

    Says nothing about who holds the lease. The message never contains the password.
    `sqlstate` is the server's error code when the server answered with an error.
    """

    def __init__(self, message: str, *, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@dataclass(frozen=True)
class LeaseVersion:
    """What `acquire(expected=...)` compares: the row must still be exactly this."""

    epoch: int
    instance: str | None
    renewed_at: datetime | None


@dataclass(frozen=True)
class LeaseSnapshot:
    """The lease row as read at `db_now` (database clock). `exists` False: no row yet.

    `server` names the database server that answered (address, port and
    postmaster start time): it changes on a restart and on a failover to a
    replica. `server_uptime` is that server's age by its own clock, in seconds.
    `row_server` is the `server` that wrote the row last.
    """

    lease_name: str
    exists: bool
    holder: str | None
    holder_host: str | None
    holder_pid: int | None
    instance: str | None
    epoch: int  # 0 when the row does not exist
    acquired_at: datetime | None
    renewed_at: datetime | None
    expires_at: datetime | None
    handover_requested_at: datetime | None
    db_now: datetime
    # holder set AND db_now > expires_at AND db_now > renewed_at + W (W of the reading store).
    # Only half of the takeover rule: the contender must also have seen `version`
    # unchanged for W on its own clock.
    expired: bool
    holder_machine: str | None = None  # the holder's machine identity (supervisor.node.machine)
    holder_started: int | None = None  # the holder process's start time
    server: str = ""
    server_uptime: float | None = None
    row_server: str | None = None  # the server that wrote the row last (None: unknown)
    paused: bool = False  # `pause`: the holder leaves its node alone, standbys take nothing
    reserved_for: str | None = None  # released by `handover --to`: only that machine may take it

    @property
    def free(self) -> bool:
        """No row, or released (holder NULL)."""
        return not self.exists or self.holder is None

    @property
    def live(self) -> bool:
        """Held and not yet past `expires_at` by the database clock."""
        return (not self.free and self.expires_at is not None
                and self.expires_at > self.db_now)

    @property
    def version(self) -> LeaseVersion:
        return LeaseVersion(self.epoch, self.instance, self.renewed_at)


@dataclass(frozen=True)
class RenewResult:
    """A committed renewal: what the row says, and the `renewed_at` it now carries (the
    database's time of the write; names this write, e.g. in an audit)."""

    handover_requested: bool
    paused: bool = False
    renewed_at: datetime | None = None
    handover_in: float | None = None  # a handover set (`--at`) this many seconds from now
    handover_at_to: str | None = None  # ... to this member (None: the best candidate)
