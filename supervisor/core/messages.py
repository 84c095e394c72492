"""Messages between the daemon and the pure core: events in, actions out.

Plain frozen dataclasses, no behaviour. The daemon promises that every lease
action yields exactly one result event within the action's `timeout`, and that
every `StartNode` is followed by `NodeStarted` and/or `NodeExited`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from supervisor.core.identity import ProcessRef

LeaseOpKind = Literal["observe", "acquire", "renew", "release", "schedule"]


@dataclass(frozen=True)
class SeenVersion:
    """What identifies one write of the lease row (the caller's opaque token)."""

    epoch: int
    instance: str | None
    renewed_at: object  # a database timestamp; compared for equality only


# ---------------------------------------------------------------- events


@dataclass(frozen=True)
class Begin:
    """The daemon has started (first event)."""


@dataclass(frozen=True)
class Tick:
    """A timer fired; nothing else happened."""


@dataclass(frozen=True)
class LeaseObserved:
    version: SeenVersion
    free: bool  # no row, or released
    expired: bool  # by the database clock
    holder: str | None
    mine: bool  # the row names this very process (instance) as holder
    # our own dead predecessor holds it: same machineName AND machine identity, and
    # that process (pid + start time) is gone
    reclaimable: ProcessRef | None = None
    # another live supervisor holds it under our machineName (a configuration error)
    name_conflict: str | None = None
    exists: bool = True
    server: str = ""  # which database server answered (changes on restart / failover)
    server_uptime: float | None = None  # that server's age by its own clock, seconds
    row_server: str | None = None  # the server that wrote the row last (None: unknown)
    handover_requested: bool = False  # held: asked to step down; free: released on a handover
    paused: bool = False  # `pause`: standbys take nothing
    reserved_for_other: str | None = None  # released by `handover --to` another machine


@dataclass(frozen=True)
class LeaseAcquired:
    epoch: int
    sent_at: float


@dataclass(frozen=True)
class LeaseNotAcquired:
    """The conditional acquire matched no row: someone else moved first."""


@dataclass(frozen=True)
class LeaseRenewed:
    sent_at: float
    handover_requested: bool
    paused: bool = False
    renewed_at: object = None  # the row's new renewed_at (database time): names the write
    handover_in: float | None = None  # a handover set for this many seconds from now (`--at`)
    handover_at_to: str | None = None  # ... to this member (None: the best candidate)


@dataclass(frozen=True)
class LeaseLost:
    """A renewal updated zero rows: the lease is no longer ours."""


@dataclass(frozen=True)
class LeaseReleased:
    released: bool  # False: the row was no longer ours


@dataclass(frozen=True)
class LeaseCallFailed:
    op: LeaseOpKind
    reason: str
    missing_privilege: bool = False  # the database answered: this role may not do it


@dataclass(frozen=True)
class PeerReleased:
    """A NOTIFY said the lease was released."""


@dataclass(frozen=True)
class NodeStarted:
    pid: int


@dataclass(frozen=True)
class NodeStartRefused:
    """The node was not started: a check before its start failed (its shared
    directories, the database fence, a sweep that was not clean, the guard). `reason`
    says which and why. Counts as a failed start (a crash of no runtime)."""

    reason: str


@dataclass(frozen=True)
class FencingChecked:
    """Database fencing was checked (see `supervisor.lease.fence`): None, or why this
    host could not fence the other node now (it then takes no lease). `pending`: not
    checked yet (the same gate, logged quietly)."""

    problem: str | None
    pending: bool = False


@dataclass(frozen=True)
class SharedDirsChecked:
    """The node's shared directories were probed: None, or what failed and how."""

    problem: str | None


@dataclass(frozen=True)
class NodeReady:
    """The node passed its readiness check (a port answers, or a log line matched)."""

    pid: int


@dataclass(frozen=True)
class NodeExited:
    returncode: int | None
    signal: int | None
    runtime: float
    killed_by: str | None = None


@dataclass(frozen=True)
class ShutdownRequested:
    signal: str = "SIGTERM"


@dataclass(frozen=True)
class HandoverRequested:
    """Ask the holder to step down (from the database flag)."""


@dataclass(frozen=True)
class Peer:
    """A member of the pair as the member table says (`supervisor.core.candidates`)."""

    instance: str
    machine_name: str
    me: bool  # this supervisor's own row
    fresh: bool  # seen within the member table's freshness
    can_take_over: bool
    priority: int = 0
    nofailover: bool = False
    settings: tuple[object, ...] | None = None  # (U, W, M, version); None: not published


@dataclass(frozen=True)
class PeersSeen:
    """The member table as read (every member, this one included)."""

    peers: tuple[Peer, ...]


@dataclass(frozen=True)
class ScheduleSettled:
    """The scheduled handover was taken off the row (`applied`), or it had changed."""

    applied: bool


Event = (
    Begin | Tick | LeaseObserved | LeaseAcquired | LeaseNotAcquired | LeaseRenewed | LeaseLost
    | LeaseReleased | LeaseCallFailed | PeerReleased | NodeStarted | NodeReady | NodeExited
    | NodeStartRefused | SharedDirsChecked | FencingChecked
    | ShutdownRequested | HandoverRequested | PeersSeen | ScheduleSettled
)

# ---------------------------------------------------------------- actions


@dataclass(frozen=True)
class ObserveLease:
    timeout: float


@dataclass(frozen=True)
class AcquireLease:
    expected: SeenVersion | None
    takeover: ProcessRef | None  # our dead predecessor, taken back at once
    server: str | None  # take it only if this server answers (the one we watched)
    timeout: float


@dataclass(frozen=True)
class RenewLease:
    epoch: int
    timeout: float
    hedge_after: float | None = None  # race a fresh attempt after this long, and again


@dataclass(frozen=True)
class ReleaseLease:
    epoch: int
    timeout: float


@dataclass(frozen=True)
class SettleSchedule:
    """Take the handover set for now off the row; with `proceed`, as a handover request
    (to `to`, or to any member when None), else as a cancellation."""

    epoch: int
    proceed: bool
    to: str | None
    timeout: float


@dataclass(frozen=True)
class StartNode:
    epoch: int | None
    kill_deadline: float | None  # absolute, `supervisor.clock`; None when the lease is off


@dataclass(frozen=True)
class SetNodeDeadline:
    kill_deadline: float


@dataclass(frozen=True)
class StopNode:
    grace: float  # SIGTERM now, SIGKILL the group after this many seconds
    planned: bool = False  # shutdown or handover (runs the preStop hook), not a lost lease


@dataclass(frozen=True)
class KillNode:
    pass


@dataclass(frozen=True)
class Log:
    event: str
    level: Literal["debug", "info", "warning", "error"]
    fields: tuple[tuple[str, object], ...] = ()


@dataclass(frozen=True)
class Exit:
    code: int


Action = (
    ObserveLease | AcquireLease | RenewLease | ReleaseLease | SettleSchedule | StartNode
    | SetNodeDeadline | StopNode | KillNode | Log | Exit
)
