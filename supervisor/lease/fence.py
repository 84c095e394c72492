"""Database fencing: no write of an old node lands once the new node runs.

Each host's node logs in to Corda's database with its own role (Corda's
`dataSource.user`); both roles are members of one group role that holds the
privileges on Corda's schema. A DBA binds each node role to one lease and one machine
(`<table>_fence_binding`, printed by `schema`); the supervisor names its host's node
role (`fencing.nodeRole`) and can only confirm its binding, never create or move one.
What the database holds and checks is in `supervisor.lease.fence_sql`.

The fence, for the holder of a lease at an epoch, before its node starts, each call
one autocommitted statement on the store's connection (`PostgresLeaseStore.call`):

1. **lock** (`<table>_fence_lock`): `NOLOGIN` for every *other* role bound to the
   lease, `LOGIN` for this host's; committed before any session is ended. It holds
   FOR SHARE on the lease row for this short statement only.
2. **end** (`<table>_fence_end`): ends the sessions of the other bound roles that
   cannot log in (no row lock: the holder's renewals go on while it waits for them to
   exit). A role that can log in again (a newer holder unlocked it) is reported, and
   the client locks again, which fails once the lease is not ours.

`NOLOGIN` keeps out new logins only once committed, and a session that was signalled
may not have exited (and can still commit) when the call returns. So the fence is done
only when one end call found every other role locked **and** ended no session; at most
`MAX_PASSES` end calls, else `FenceFailed`. A statement timeout can cut an end call
short, never undo a lock. Both functions first run the confirm check (the caller can
alter nothing they read, the caller may act for the lease, the bindings are sound) and
refuse with its problem string (SQLSTATE `REFUSED`). Needs PostgreSQL 14 or later.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import psycopg

from supervisor.core.row import LeaseUnavailable
from supervisor.lease.bounded import Conn
from supervisor.lease.fence_sql import NOT_HOLDER, REFUSED, FenceSql, fence_ddl
from supervisor.lease.ownership import ident, literal

__all__ = ["MAX_PASSES", "NOT_HOLDER", "REFUSED", "FenceFailed", "FenceResult", "FenceSql",
           "FencedRole", "RoleState", "check", "confirm", "end_sessions", "explain",
           "fence_database", "fence_ddl", "lock", "read_roles", "roles_ddl"]

T = TypeVar("T")

#: End calls before giving up on sessions that keep coming back.
MAX_PASSES = 5


@dataclass(frozen=True)
class FencedRole:
    """One bound role after a fence call. Lock: `action` is "locked", "still locked"
    (another role) or "unlocked", "can log in" (ours). End: "locked" or "can log in"
    (unlocked meanwhile: its sessions were left alone); `sessions`: sessions ended."""

    role: str
    action: str
    sessions: int


@dataclass(frozen=True)
class RoleState:
    """A bound node role as `status` shows it."""

    role: str
    machine_name: str
    can_login: bool | None  # None: the role no longer exists
    locked_by_epoch: int | None
    locked_at: object
    sessions: int

    def as_dict(self) -> dict[str, Any]:
        return {"node_role": self.role, "machine_name": self.machine_name,
                "can_log_in": self.can_login, "locked_by_epoch": self.locked_by_epoch,
                "locked_at": str(self.locked_at) if self.locked_at else None,
                "sessions": self.sessions}


@dataclass(frozen=True)
class Refused:
    """A fence function's answer that is no connection problem: the confirm check's
    problem (`REFUSED`) or not the holder (`NOT_HOLDER`)."""

    sqlstate: str
    message: str


def roles_ddl(*, node_group: str, fencer: str, node_roles: list[str]) -> list[str]:
    """The node group and node roles fencing needs (a DBA creates them with passwords;
    `schema` prints these as comments). The fencer role is created by `schema`."""
    lines = [f"CREATE ROLE {ident(node_group)} NOLOGIN"]
    for r in node_roles:
        # Each node acts as the group: the tables Corda creates at its first start are the
        # group's, so the other host's node (another role) can use them after a failover.
        lines += [f"CREATE ROLE {ident(r)} LOGIN IN ROLE {ident(node_group)}",
                  f"ALTER ROLE {ident(r)} SET role = {literal(node_group)}"]
    return [*lines, f"CREATE ROLE {ident(fencer)} NOLOGIN CREATEROLE",
            f"GRANT pg_signal_backend TO {ident(fencer)}"]


async def confirm(conn: Conn, f: FenceSql, *, lease: str, role: str,
                  machine: str) -> str | None:
    """None when fencing can work for this host, else what is wrong (naming the fix).
    One statement; changes nothing. Raises psycopg errors (no function: 42883, no
    EXECUTE: 42501)."""
    cur = await conn.execute(f.confirm, {"lease": lease, "role": role, "machine": machine})
    row = await cur.fetchone()
    return None if row is None else row[0]


async def _rows(conn: Conn, statement: Any, params: dict[str, Any]) -> list[FencedRole] | Refused:
    try:
        cur = await conn.execute(statement, params)
        rows = await cur.fetchall()
    except psycopg.Error as e:
        if e.sqlstate in (REFUSED, NOT_HOLDER):
            return Refused(e.sqlstate, e.diag.message_primary or str(e))
        raise
    return [FencedRole(role=str(r[0]), action=str(r[1]), sessions=int(r[2])) for r in rows]


async def lock(conn: Conn, f: FenceSql, *, lease: str, epoch: int, instance: str, role: str,
               machine: str) -> list[FencedRole] | Refused:
    """The lock call: one autocommitted statement (never inside a transaction)."""
    return await _rows(conn, f.lock, {"lease": lease, "epoch": epoch, "instance": instance,
                                      "role": role, "machine": machine})


async def end_sessions(conn: Conn, f: FenceSql, *, lease: str, epoch: int, instance: str,
                       role: str, machine: str, wait_ms: int) -> list[FencedRole] | Refused:
    """The end call: one autocommitted statement; waits up to `wait_ms` for the
    sessions it signalled to exit."""
    return await _rows(conn, f.end, {"lease": lease, "epoch": epoch, "instance": instance,
                                     "role": role, "machine": machine, "wait_ms": wait_ms})


async def read_roles(conn: Conn, f: FenceSql, lease: str) -> list[RoleState]:
    """The node roles bound to `lease` (raises 42P01 without the binding table)."""
    cur = await conn.execute(f.read, {"lease": lease})
    return [RoleState(role=str(r[0]), machine_name=str(r[1]), can_login=r[2],
                      locked_by_epoch=r[3], locked_at=r[4], sessions=int(r[5]))
            for r in await cur.fetchall()]


class Caller(Protocol):
    """Runs `op` on the store's operations connection, bounded by `timeout`; raises
    `LeaseUnavailable` (see `PostgresLeaseStore.call`)."""

    async def __call__(self, what: str, op: Callable[[Conn], Awaitable[T]],
                       timeout: float) -> T: ...


class FenceFailed(Exception):
    """The fence did not complete; `str()` says why and what to do."""


@dataclass(frozen=True)
class FenceResult:
    """A completed fence: per role, what the (first) lock call did and the sessions the
    end calls ended; `sessions_ended`: all of them; `passes`: end calls."""

    roles: list[FencedRole]
    sessions_ended: int
    passes: int
    seconds: float


def explain(error: LeaseUnavailable) -> str:
    """What a failed fencing call means, for operators."""
    hint = "have a DBA run what `corda-ha-supervisor schema` prints (the fencing part)"
    if error.sqlstate in ("42883", "42P01"):
        return f"the fence functions are not installed: {hint} ({error})"
    if error.sqlstate == "42501":
        return f"missing privilege for fencing: {hint} ({error})"
    return str(error)


def _refusal(answer: Refused) -> str:
    if answer.sqlstate == NOT_HOLDER:
        return f"no longer the holder: {answer.message}"
    return f"fencing refused: {answer.message}"


async def check(call: Caller, f: FenceSql, *, lease: str, role: str, machine: str,
                timeout: float) -> str | None:
    """Confirm this host's binding; None when fencing can work, else why not. Raises
    `LeaseUnavailable` only when the database cannot be reached (a missing function or
    privilege is a reason, returned)."""
    try:
        return await call("fence_confirm", lambda conn: confirm(
            conn, f, lease=lease, role=role, machine=machine), timeout)
    except LeaseUnavailable as e:
        if e.sqlstate is None:
            raise
        return explain(e)


async def fence_database(call: Caller, f: FenceSql, *, lease: str, epoch: int, instance: str,
                         role: str, machine: str, timeout: float,
                         clock: Callable[[], float] = time.monotonic) -> FenceResult:
    """Lock every other node role bound to `lease` out and end its sessions, for the
    holder of `lease` at `epoch` (see the module docstring). Each call is bounded by
    `timeout`. Raises `FenceFailed`."""
    started, ended, passes = clock(), 0, 0
    wait_ms = int(min(1.0, timeout / 3) * 1000)
    first: dict[str, FencedRole] = {}
    locked = False
    while passes < MAX_PASSES:
        if not locked:
            answer = await _call(call, "fence_lock", lambda c: lock(
                c, f, lease=lease, epoch=epoch, instance=instance, role=role,
                machine=machine), timeout)
            for r in answer:
                first.setdefault(r.role, r)
            locked = True
        passes += 1
        answer = await _call(call, "fence_end", lambda c: end_sessions(
            c, f, lease=lease, epoch=epoch, instance=instance, role=role, machine=machine,
            wait_ms=wait_ms), timeout)
        for r in answer:
            seen = first.get(r.role, FencedRole(r.role, r.action, 0))
            first[r.role] = FencedRole(seen.role, seen.action, seen.sessions + r.sessions)
        ended += sum(r.sessions for r in answer)
        if any(r.action == "can log in" for r in answer):
            locked = False  # unlocked meanwhile: lock again (refused unless still ours)
            continue
        if all(r.action == "locked" and r.sessions == 0 for r in answer):
            return FenceResult(roles=list(first.values()), sessions_ended=ended,
                               passes=passes, seconds=clock() - started)
    raise FenceFailed(f"sessions of the other node roles kept coming back after {MAX_PASSES} "
                      "calls")


async def _call(call: Caller, what: str,
                op: Callable[[Conn], Awaitable[list[FencedRole] | Refused]],
                timeout: float) -> list[FencedRole]:
    try:
        answer = await call(what, op, timeout)
    except LeaseUnavailable as e:
        raise FenceFailed(explain(e)) from e
    if isinstance(answer, Refused):
        raise FenceFailed(_refusal(answer))
    return answer
