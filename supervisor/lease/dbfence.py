"""Database fencing (issue 9): no write of an old node lands once the new node runs.

Each host's node logs in to Corda's database with its own role (Corda's
`dataSource.user`); both roles are members of one group role that holds the
privileges on Corda's schema. The supervisor names its host's node role
(`fencing.nodeRole`). A DBA installs, once, what `schema` prints:

- `<table>_fence`: which node roles are registered for which lease, and which
  epoch locked each out. Owned by the fencer role; the supervisor may only read it.
- `<table>_fence_register(lease, role, machine)`: registers a node role for a lease
  (never changes whether it may log in); returns NULL, or what is wrong (role
  missing, not a member of the node group, a superuser).
- `<table>_fence(lease, epoch, instance, role, machine, wait_ms)`: only for the holder of
  `lease` at `epoch` (checked under a row lock on the lease, by the database clock;
  else SQLSTATE 55000): every *other* role registered for the lease that is a
  member of the node group gets `NOLOGIN` and its sessions terminated (waiting up
  to `wait_ms` for each to exit); the holder's own role gets `LOGIN`. One row per
  role: what was done and how many sessions it signalled (a session slow to exit is
  found, and signalled, again by the next call: the caller repeats until a call finds
  none).

Both functions are `SECURITY DEFINER`, owned by a `NOLOGIN CREATEROLE` role that
also holds `pg_signal_backend`; the supervisor's role only gets EXECUTE. So the
supervisor needs no superuser, and it can lock out only roles registered for its
lease that belong to the node group.

Order matters: `NOLOGIN` takes effect for new logins only when its transaction
commits, but a terminated session's pool reconnects at once. So `fence_database`
calls the function again, in a new transaction, until a call ends no session
(at most `MAX_PASSES`): a login that slipped in before the first commit is ended
by the second call, and none can log in after it. Only then may the node start.
Needs PostgreSQL 14 or later (`pg_terminate_backend` with a timeout).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from psycopg import sql

from supervisor.lease.bounded import Conn
from supervisor.lease.model import LeaseUnavailable

T = TypeVar("T")

#: Calls of the fence function before giving up on sessions that keep coming back.
MAX_PASSES = 5
#: SQLSTATE the fence function raises when the caller does not hold the lease.
NOT_HOLDER = "55000"


@dataclass(frozen=True)
class FencedRole:
    """One registered role after a fence: `action` is "locked", "still locked",
    "unlocked", "can log in" or "refused: <why>"; `sessions`: sessions ended."""

    role: str
    action: str
    sessions: int


@dataclass(frozen=True)
class RoleState:
    """A registered node role as `status` shows it."""

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


class FenceSql:
    """Names and statements for the fencing objects of lease table `schema.table`."""

    def __init__(self, schema: str | None, table: str) -> None:
        # Qualified always: the functions run with a fixed search_path (no schema of
        # ours in it). Without `database.schema` the tables are those in `public`.
        where = schema or "public"
        self.schema = sql.Identifier(where)

        def name(suffix: str) -> sql.Identifier:
            return sql.Identifier(where, f"{table}_{suffix}"[:63])

        self.lease_table = sql.Identifier(where, table)
        self.registry = name("fence_role")
        self.register_fn = name("fence_register")
        self.fence_fn = name("fence")
        self.register = sql.SQL("SELECT {}(%(lease)s, %(role)s, %(machine)s)").format(
            self.register_fn)
        self.fence = sql.SQL(
            "SELECT node_role, action, sessions FROM {}(%(lease)s, %(epoch)s, %(instance)s, "
            "%(role)s, %(machine)s, %(wait_ms)s)").format(self.fence_fn)
        self.read = sql.SQL(
            """SELECT f.node_role, f.machine_name, r.rolcanlogin, f.locked_by_epoch,
                      f.locked_at,
                      (SELECT count(*) FROM pg_stat_activity a WHERE a.usename = f.node_role)
               FROM {} f LEFT JOIN pg_roles r ON r.rolname = f.node_role
               WHERE f.lease_name = %(lease)s ORDER BY f.node_role""").format(self.registry)

    def ddl(self, *, node_group: str, fencer: str, supervisor_role: str) -> list[str]:
        """What a DBA runs once (as a superuser), as SQL text."""
        def q(ident: sql.Composable) -> str:
            return ident.as_string(None)

        fencer_id = q(sql.Identifier(fencer))
        group_lit = q(sql.Literal(node_group))
        reg, lease = q(self.registry), q(self.lease_table)
        role = q(sql.Identifier(supervisor_role))
        register_fn = q(self.register_fn) + "(text, name, text)"
        fence_fn = q(self.fence_fn) + "(text, bigint, text, name, text, bigint)"
        register_name, fence_name = q(self.register_fn), q(self.fence_fn)
        check = f"""
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = p_role) THEN
        RETURN format('node role %s does not exist', p_role);
    END IF;
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = p_role) THEN
        RETURN format('node role %s is a superuser: it cannot be fenced', p_role);
    END IF;
    IF NOT pg_has_role(p_role, {group_lit}, 'MEMBER') THEN
        RETURN format('node role %s is not a member of the node group %s', p_role, {group_lit});
    END IF;"""
        return [
            f"""CREATE TABLE IF NOT EXISTS {reg} (
    lease_name text NOT NULL,
    node_role name NOT NULL,
    machine_name text NOT NULL,
    registered_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    locked_by_epoch bigint,
    locked_at timestamptz,
    PRIMARY KEY (lease_name, node_role)
)""",
            # the functions run as the fencer: it must reach the schema (PUBLIC may, in
            # `public`; in a schema of our own nobody may unless granted)
            f"GRANT USAGE ON SCHEMA {q(self.schema)} TO {fencer_id}",
            f"ALTER TABLE {reg} OWNER TO {fencer_id}",
            f"""CREATE OR REPLACE FUNCTION {register_name}(p_lease text, p_role name,
                                                 p_machine text)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN{check}
    INSERT INTO {reg} AS f (lease_name, node_role, machine_name)
    VALUES (p_lease, p_role, p_machine)
    ON CONFLICT (lease_name, node_role) DO UPDATE SET machine_name = EXCLUDED.machine_name,
        registered_at = clock_timestamp();
    RETURN NULL;
END $$""",
            f"""CREATE OR REPLACE FUNCTION {fence_name}(p_lease text, p_epoch bigint,
                                       p_instance text, p_role name, p_machine text,
                                       p_wait_ms bigint)
RETURNS TABLE (node_role name, action text, sessions integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
    problem text;
    ended integer;
    backend integer;
BEGIN
    PERFORM 1 FROM {lease} l WHERE l.lease_name = p_lease AND l.instance = p_instance
        AND l.epoch = p_epoch AND l.expires_at > clock_timestamp() FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'not the holder of lease % at epoch %', p_lease, p_epoch
            USING ERRCODE = '{NOT_HOLDER}';
    END IF;
    FOR r IN SELECT f.node_role AS name, g.rolcanlogin AS can_login FROM {reg} f
             LEFT JOIN pg_roles g ON g.rolname = f.node_role
             WHERE f.lease_name = p_lease AND f.node_role <> p_role
             ORDER BY f.node_role FOR UPDATE OF f LOOP
        node_role := r.name;
        problem := NULL;
        IF r.can_login IS NULL THEN
            problem := 'role does not exist';
        ELSIF (SELECT rolsuper FROM pg_roles WHERE rolname = r.name) THEN
            problem := 'a superuser';
        ELSIF NOT pg_has_role(r.name, {group_lit}, 'MEMBER') THEN
            problem := 'not a member of the node group';
        END IF;
        IF problem IS NOT NULL THEN
            action := 'refused: ' || problem;
            sessions := 0;
            RETURN NEXT;
            CONTINUE;
        END IF;
        IF r.can_login THEN
            EXECUTE format('ALTER ROLE %I NOLOGIN', r.name);
            action := 'locked';
        ELSE
            action := 'still locked';
        END IF;
        ended := 0;
        -- every session found is signalled and counted; one that is slow to exit (a
        -- busy server: false after p_wait_ms) is found again by the caller's next call
        FOR backend IN SELECT a.pid FROM pg_stat_activity a WHERE a.usename = r.name LOOP
            PERFORM pg_terminate_backend(backend, p_wait_ms);
            ended := ended + 1;
        END LOOP;
        sessions := ended;
        UPDATE {reg} f SET locked_by_epoch = coalesce(
                CASE WHEN r.can_login THEN p_epoch END, f.locked_by_epoch, p_epoch),
            locked_at = coalesce(CASE WHEN r.can_login THEN clock_timestamp() END,
                                 f.locked_at, clock_timestamp())
            WHERE f.lease_name = p_lease AND f.node_role = r.name;
        RETURN NEXT;
    END LOOP;
    node_role := p_role;
    sessions := 0;
    problem := {register_name}(p_lease, p_role, p_machine);
    IF problem IS NOT NULL THEN
        action := 'refused: ' || problem;
    ELSIF (SELECT rolcanlogin FROM pg_roles WHERE rolname = p_role) THEN
        action := 'can log in';
    ELSE
        EXECUTE format('ALTER ROLE %I LOGIN', p_role);
        action := 'unlocked';
    END IF;
    UPDATE {reg} f SET locked_by_epoch = NULL, locked_at = NULL
        WHERE f.lease_name = p_lease AND f.node_role = p_role;
    RETURN NEXT;
END $$""",
            f"ALTER FUNCTION {register_fn} OWNER TO {fencer_id}",
            f"ALTER FUNCTION {fence_fn} OWNER TO {fencer_id}",
            f"REVOKE ALL ON FUNCTION {register_fn} FROM PUBLIC",
            f"REVOKE ALL ON FUNCTION {fence_fn} FROM PUBLIC",
            f"GRANT EXECUTE ON FUNCTION {register_fn} TO {role}",
            f"GRANT EXECUTE ON FUNCTION {fence_fn} TO {role}",
            f"GRANT SELECT ON {reg} TO {role}",
            # FOR SHARE (the holder check) needs an UPDATE privilege on some column
            f"GRANT SELECT, UPDATE (lease_name) ON {lease} TO {fencer_id}",
        ]


def roles_ddl(*, node_group: str, fencer: str, node_roles: list[str]) -> list[str]:
    """The roles fencing needs (run by a superuser before `FenceSql.ddl`)."""
    def q(name: str) -> str:
        return sql.Identifier(name).as_string(None)

    lines = [f"CREATE ROLE {q(node_group)} NOLOGIN",
             f"CREATE ROLE {q(fencer)} NOLOGIN CREATEROLE",
             f"GRANT pg_signal_backend TO {q(fencer)}"]
    group_lit = sql.Literal(node_group).as_string(None)
    for r in node_roles:
        # Each node acts as the group: the tables Corda creates at its first start are the
        # group's, so the other host's node (another role) can use them after a failover.
        lines += [f"CREATE ROLE {q(r)} LOGIN IN ROLE {q(node_group)}",
                  f"ALTER ROLE {q(r)} SET role = {group_lit}"]
    return lines


async def register(conn: Conn, f: FenceSql, *, lease: str, role: str, machine: str) -> str | None:
    """Register this host's node role for `lease`; None, or what is wrong with it. One
    statement (atomic). Raises psycopg errors (no function: 42883, no EXECUTE: 42501)."""
    cur = await conn.execute(f.register, {"lease": lease, "role": role, "machine": machine})
    row = await cur.fetchone()
    return None if row is None else row[0]


async def fence_once(conn: Conn, f: FenceSql, *, lease: str, epoch: int, instance: str,
                     role: str, machine: str, wait_ms: int) -> list[FencedRole]:
    """One call of the fence function, in its own transaction. Raises psycopg errors;
    SQLSTATE `NOT_HOLDER` when the lease is not ours at `epoch` any more."""
    async with conn.transaction():
        cur = await conn.execute(f.fence, {"lease": lease, "epoch": epoch,
                                           "instance": instance, "role": role,
                                           "machine": machine, "wait_ms": wait_ms})
        rows = await cur.fetchall()
    return [FencedRole(role=str(r[0]), action=str(r[1]), sessions=int(r[2])) for r in rows]


async def read_roles(conn: Conn, f: FenceSql, lease: str) -> list[RoleState]:
    """The registered node roles of `lease` (raises 42P01 without the registry)."""
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
    """A completed fence: per role, what the first call did and the sessions all calls
    ended; `sessions_ended`: those of the other roles."""

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
    if error.sqlstate == NOT_HOLDER:
        return f"no longer the holder: {error}"
    return str(error)


async def check(call: Caller, f: FenceSql, *, lease: str, role: str, machine: str,
                timeout: float) -> str | None:
    """Register this host's node role; None when fencing can work, else why not.
    Raises `LeaseUnavailable` only when the database cannot be reached (a missing
    function or privilege is a reason, returned)."""
    try:
        return await call("fence_register", lambda conn: register(
            conn, f, lease=lease, role=role, machine=machine), timeout)
    except LeaseUnavailable as e:
        if e.sqlstate is None:
            raise
        return explain(e)


async def fence_database(call: Caller, f: FenceSql, *, lease: str, epoch: int, instance: str,
                         role: str, machine: str, timeout: float,
                         clock: Callable[[], float] = time.monotonic) -> FenceResult:
    """Lock every other registered node role out and end its sessions, for the holder
    of `lease` at `epoch`; done when a call found every other role locked already and
    ended no session (at least two calls after a role was newly locked). Each call is
    bounded by `timeout`. Raises `FenceFailed`."""
    started, ended = clock(), 0
    first: dict[str, FencedRole] = {}
    wait_ms = int(min(1.0, timeout / 3) * 1000)
    for n in range(1, MAX_PASSES + 1):
        try:
            rows = await call("fence", lambda conn: fence_once(
                conn, f, lease=lease, epoch=epoch, instance=instance, role=role,
                machine=machine, wait_ms=wait_ms), timeout)
        except LeaseUnavailable as e:
            raise FenceFailed(explain(e)) from e
        refused = [r for r in rows if r.action.startswith("refused")]
        if refused:
            raise FenceFailed("; ".join(f"{r.role}: {r.action}" for r in refused))
        for r in rows:  # what the first call did to each role, sessions of all calls
            seen = first.get(r.role)
            first[r.role] = r if seen is None else FencedRole(
                seen.role, seen.action, seen.sessions + r.sessions)
        others = [r for r in rows if r.role != role]
        ended += sum(r.sessions for r in others)
        if all(r.action == "still locked" and r.sessions == 0 for r in others):
            return FenceResult(roles=list(first.values()), sessions_ended=ended, passes=n,
                               seconds=clock() - started)
    raise FenceFailed(f"sessions of the other node roles kept coming back after {MAX_PASSES} "
                      "calls")
