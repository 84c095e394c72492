"""One fence scenario (`tests/mutants/fencecases.py`) run in a `fenceworld` world.

**One scenario** runs in one transaction of the DBA that is rolled back afterwards, so
every scenario starts from the same world: the clock script, the lease rows and the
scenario's own changes (its `setup`, as the DBA), then the call as the supervisor's
least-privilege role (`SET SESSION AUTHORIZATION`: `session_user` and `current_user` are
that role, as after its login) or as the DBA (`bind`), in a savepoint, then what it
left: the call's rows or its error, every node role's LOGIN attribute, every binding
row, which node sessions (connected, as their roles, before the transaction) it ended,
and (PostgreSQL 16+) which roles the fencer administers. A call that has not returned
after `HANG` seconds is cancelled (a mutant that waits for what never comes). Names in
what it answered are put back as `{key}`. `run_wait` drives the clock past the end
call's deadline while it waits for a session whose backend is stopped (SIGSTOP, root
only). `run_corda` runs a Corda lock row scenario in a schema of its own.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg
from psycopg import sql

from supervisor.lease.cordarow import CORDA_TABLE, look, make_takeable
from supervisor.lease.fence_sql import FenceSql
from supervisor.lease.sql import LeaseSql
from tests.harness.fenceworld import CLOCK, LEASE, T0, World, at, offset
from tests.harness.pgserver import PgServer

HANG = 5.0  # seconds a call may take before it is cancelled (the functions need ms)


@dataclass(frozen=True)
class Failed:
    """A call's error: its SQLSTATE and primary message."""

    sqlstate: str | None
    message: str


@dataclass
class Observed:
    outcome: Any
    login: dict[str, bool]  # node role key -> rolcanlogin
    bindings: dict[str, tuple[Any, ...]]  # node role key -> (lease, machine, epoch, at)
    ended: list[str]  # node role keys whose session was ended
    admin: list[str] | None = None  # PostgreSQL 16+: roles the fencer administers


ROLE_KEYS = ("a", "b", "c", "d", "e", "x", "ghost")


def key_of(w: World, role: str | None) -> str | None:
    """A node role's key ("a", ...), else the name with the world's names as `{key}`."""
    if role is None:
        return None
    return next((k for k in ROLE_KEYS if w.names[k] == role), None) or w_unformat(w, role)


def role_key(w: World, role: str) -> str:
    """`key_of` for a role name read from the catalog (never NULL)."""
    key = key_of(w, role)
    assert key is not None, role
    return key


def observe(conn: psycopg.Connection[Any], w: World, sessions: dict[str, Any],
            f: FenceSql) -> Observed:
    roles = [w.role(k) for k in ROLE_KEYS]
    login = {role_key(w, r): bool(v) for r, v in conn.execute(
        "SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname = ANY (%s)", (roles,))}
    bindings = {role_key(w, r[0]): (r[1], r[2], r[3], offset(r[4])) for r in conn.execute(
        sql.SQL("SELECT node_role, lease_name, machine_name, locked_by_epoch, locked_at "
                "FROM {}").format(f.binding))}
    ended = []
    for k, s in sessions.items():
        try:
            s.execute("SELECT 1")
        except psycopg.Error:
            ended.append(k)
    admin = None
    if w.version >= 160000:
        admin = sorted(role_key(w, r[0]) for r in conn.execute(
            "SELECT m.roleid::regrole::text FROM pg_auth_members m WHERE m.admin_option "
            "AND m.member = %s::regrole AND m.roleid::regrole::text = ANY (%s)",
            (w.role("fencer"), roles)))
    return Observed(None, login, bindings, sorted(ended), admin)


# ---------------------------------------------------------------- one scenario


def prepare(conn: psycopg.Connection[Any], w: World, sc: Any,
            clock: bool = True) -> None:
    """In the scenario's transaction: the clock script, the lease rows, the setup."""
    if clock:
        base = conn.execute(f"SELECT nextval('{CLOCK}.reads')").fetchone()[0]  # type: ignore[index]
        for after, off, action in sc.clock:
            conn.execute(f"INSERT INTO {CLOCK}.script VALUES (%s, %s, %s)",
                         (base + after, at(off), None if action is None else w.fmt(action)))
    for row in (sc.lease, sc.lease2):
        if row is not None:
            row = {k: at(v) if k.endswith("_at") else v for k, v in row.items()}
            conn.execute(sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                w.fence.lease_table, sql.SQL(", ").join(map(sql.Identifier, row)),
                sql.SQL(", ").join(sql.Placeholder() * len(row))), list(row.values()))
    for statement in sc.setup:
        conn.execute(w.fmt(statement).encode())


def fence_of(w: World, sc: Any) -> FenceSql:
    """The fence's names, in the schema the scenario may have renamed (`args["schema"]`)."""
    return FenceSql(w.fmt(sc.arguments().get("schema", "{schema}")), w.one.table)


def statement(w: World, sc: Any) -> tuple[Any, dict[str, Any]]:
    """The call's statement and parameters (the defaults of `fencecases.ARGS`)."""
    a = {k: w.fmt(v) if isinstance(v, str) else v for k, v in sc.arguments().items()}
    a.pop("schema", None)
    f = fence_of(w, sc)
    if sc.call == "confirm":
        return f.confirm, a
    if sc.call == "lock":
        return f.lock, a
    if sc.call == "end":
        return f.end, a
    if sc.call == "bind":
        return sql.SQL("SELECT {}(%(role)s, %(lease)s, %(machine)s)").format(f.bind_fn), a
    if sc.call == "read":
        return f.read, a
    assert sc.call == "sql", sc.call
    return w.fmt(a["sql"]).encode(), {}


def shaped(w: World, sc: Any, rows: list[tuple[Any, ...]]) -> Any:
    if sc.call == "confirm":
        ((value,),) = rows
        return value
    if sc.call == "bind":
        ((value,),) = rows
        return None if value == "" else value  # void
    if sc.call in ("lock", "end"):
        return [(key_of(w, r[0]), r[1], r[2]) for r in rows]
    if sc.call == "read":
        return [(key_of(w, r[0]), r[1], r[2], r[3], offset(r[4]), r[5]) for r in rows]
    return [tuple(key_of(w, v) if isinstance(v, str) else v for v in r) for r in rows]


def call(conn: psycopg.Connection[Any], w: World, sc: Any) -> Any:
    """The call in a savepoint, as `sc.caller`, cancelled after HANG; rows or `Failed`."""
    text, params = statement(w, sc)
    timer = threading.Timer(HANG, conn.cancel)
    timer.start()
    try:
        with conn.transaction():
            if sc.caller != "dba":
                conn.execute(f"SET SESSION AUTHORIZATION {w.role(sc.caller)}".encode())
            cur = conn.execute(text, params)
            rows = cur.fetchall() if cur.description is not None else []
            conn.execute("RESET SESSION AUTHORIZATION")
        return shaped(w, sc, rows)
    except psycopg.Error as e:
        return Failed(e.sqlstate, w_unformat(w, e.diag.message_primary or str(e)))
    finally:
        timer.cancel()


def w_unformat(w: World, text: str) -> str:
    """An error message with this world's names put back as `{key}` (longest first)."""
    for key, value in sorted(w.names.items(), key=lambda kv: -len(kv[1])):
        if key != "suffix":
            text = text.replace(value, "{" + key + "}")
    return text


def connect_sessions(w: World, keys: tuple[str, ...]) -> dict[str, psycopg.Connection[Any]]:
    return {k: psycopg.connect(w.dsn(w.role(k)), autocommit=True, connect_timeout=10)
            for k in keys}


def run(w: World, sc: Any, pre: Sequence[str] = ()) -> Observed:
    """One scenario in a rolled-back transaction (see the module docstring); `pre`:
    statements run first in it (a mutated function or policy, in process)."""
    sessions = connect_sessions(w, sc.sessions)
    try:
        with psycopg.connect(w.db.dsn, autocommit=True, connect_timeout=10) as conn, \
                conn.transaction(force_rollback=True):
            for text in pre:
                conn.execute(text.encode())
            prepare(conn, w, sc)
            outcome = call(conn, w, sc)
            if isinstance(outcome, str | Failed):
                outcome = unformatted(w, outcome)
            seen = observe(conn, w, sessions, fence_of(w, sc))
    finally:
        for s in sessions.values():
            s.close()
    seen.outcome = outcome
    return seen


def unformatted(w: World, outcome: Any) -> Any:
    """A problem string or an error with this world's names as `{key}`."""
    if isinstance(outcome, str):
        return w_unformat(w, outcome)
    if isinstance(outcome, Failed):
        return Failed(outcome.sqlstate, w_unformat(w, outcome.message))
    return outcome


# ---------------------------------------------------------------- the end call's deadline


def run_wait(w: World, sc: Any, pre: Sequence[str] = ()) -> Observed:
    """The end call waits for a session that was signalled but does not exit (its backend
    stopped): it must still be waiting with the clock a microsecond before its deadline
    (`T0 + wait_ms`), and return once the clock reaches it. The outcome: ("returned at
    the deadline", rows), or at which step it went otherwise."""
    if os.geteuid() != 0:
        import pytest
        pytest.skip("stopping a PostgreSQL backend (SIGSTOP) needs root")
    wait_s = sc.arguments()["wait_ms"] / 1000
    sessions = connect_sessions(w, sc.sessions)
    ((pid,),) = sessions["b"].execute("SELECT pg_backend_pid()").fetchall()
    result: dict[str, Any] = {}
    observer = psycopg.connect(w.db.dsn, autocommit=True, connect_timeout=10)
    conn = psycopg.connect(w.db.dsn, autocommit=True, connect_timeout=10)
    caller = conn.info.backend_pid
    after = int(observer.execute(f"SELECT nextval('{CLOCK}.reads')").fetchone()[0])  # type: ignore[index]
    observer.execute(f"INSERT INTO {CLOCK}.script VALUES (%s, %s, NULL)", (after, T0))

    def set_clock(seconds: float) -> None:
        observer.execute(f"UPDATE {CLOCK}.script SET t = %s WHERE after = %s",
                         (T0 + timedelta(seconds=seconds), after))

    def the_call() -> None:
        try:
            with conn.transaction(force_rollback=True):
                for text in pre:
                    conn.execute(text.encode())
                prepare(conn, w, sc, clock=False)
                text, params = statement(w, sc)
                conn.execute(f"SET SESSION AUTHORIZATION {w.role(sc.caller)}".encode())
                result["rows"] = shaped(w, sc, conn.execute(text, params).fetchall())
        except psycopg.Error as e:
            result["rows"] = Failed(e.sqlstate, e.diag.message_primary or str(e))

    def reads() -> int:
        return int(observer.execute(f"SELECT last_value FROM {CLOCK}.reads").fetchone()[0])  # type: ignore[index]

    def until(cond: Callable[[], bool]) -> bool:
        end = time.monotonic() + HANG
        while not cond():
            if time.monotonic() > end:
                return False
            time.sleep(0.001)
        return True

    os.kill(pid, signal.SIGSTOP)
    thread = threading.Thread(target=the_call, daemon=True)
    thread.start()
    try:
        sleeping = until(lambda: not thread.is_alive() or bool(observer.execute(
            "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND wait_event = 'PgSleep'",
            (caller,)).fetchall()))
        if not sleeping or not thread.is_alive():
            step = "returned before the deadline" if sleeping else "never waited"
        else:
            set_clock(wait_s - 1e-6)
            r0 = reads()
            until(lambda: reads() >= r0 + 2 or not thread.is_alive())
            if not thread.is_alive():
                step = "returned before the deadline"
            else:
                set_clock(wait_s)
                step = ("returned at the deadline" if until(lambda: not thread.is_alive())
                        else "still waiting at the deadline")
    finally:
        os.kill(pid, signal.SIGCONT)
        set_clock(86400.0)  # a mutant still waiting for the deadline ends
        thread.join(HANG)
        if thread.is_alive():
            observer.execute("SELECT pg_cancel_backend(%s)", (caller,))
            thread.join(HANG)
        observer.execute(f"DELETE FROM {CLOCK}.script WHERE after = %s", (after,))
        until(lambda: not observer.execute(
            "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchall())
        observer.close()
        conn.close()
        for s in sessions.values():
            s.close()
    return Observed((step, result.get("rows")), {}, {}, [])


# ---------------------------------------------------------------- Corda's lock row

CORDA_DDL = """CREATE TABLE {} (mutual_exclusion_id char(1) PRIMARY KEY,
    machine_name varchar(255) NOT NULL, pid varchar(255) NOT NULL,
    mutual_exclusion_timestamp timestamp NOT NULL, version bigint)"""


def run_corda(server: PgServer, sc: Any, take: Callable[..., Any] = make_takeable,
              look_at: Callable[..., Any] = look) -> tuple[Any, dict[str, float]]:
    """A `fencecases.CordaScenario` in a schema of its own (the lease table, Corda's table
    in Corda's shape, `clock_timestamp()` reading T0 first on the search_path): what
    `take` (make_takeable) or `look_at` answered, and Corda's rows afterwards (id ->
    seconds before T0)."""
    schema = f"crow_{uuid.uuid4().hex[:12]}"
    s = sql.Identifier(schema)
    lease = LeaseSql(schema, "corda_ha_lease")
    corda = sql.Identifier(schema, CORDA_TABLE)
    naive = T0.replace(tzinfo=None)
    with psycopg.connect(server.dsn, autocommit=True, connect_timeout=10) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(s))
        try:
            admin.execute(sql.SQL("CREATE FUNCTION {}.clock_timestamp() RETURNS timestamptz "
                                  "LANGUAGE sql VOLATILE AS {}").format(
                s, sql.Literal(f"SELECT timestamptz '{T0.isoformat()}'")))
            admin.execute(lease.create_table)
            admin.execute(sql.SQL(CORDA_DDL).format(corda))
            for r in (*sc.others, *(() if sc.lease is None else (sc.lease,))):
                r = {k: at(v) if k.endswith("_at") else v for k, v in r.items()}
                admin.execute(sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                    lease.table, sql.SQL(", ").join(map(sql.Identifier, r)),
                    sql.SQL(", ").join(sql.Placeholder() * len(r))), list(r.values()))
            for ident, machine, age, version in sc.rows:
                admin.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s, '4242', %s, %s)")
                              .format(corda), (ident, machine, naive - timedelta(seconds=age),
                                               version))

            async def the_call() -> Any:
                conn = await psycopg.AsyncConnection.connect(
                    server.dsn, autocommit=True, connect_timeout=10,
                    options=f"-c search_path={schema},pg_catalog -c TimeZone=UTC")
                try:
                    if sc.call == "take":
                        return await take(conn, lease.table, corda, lease_name=LEASE,
                                          instance="inst-a", epoch=sc.epoch,
                                          machine_name="this-host", wait_interval=sc.w)
                    return await look_at(conn, corda, machine_name="this-host",
                                         wait_interval=sc.w)
                finally:
                    await conn.close()

            try:
                answer = asyncio.run(the_call())
            except psycopg.Error as e:
                answer = Failed(e.sqlstate, e.diag.message_primary or str(e))
            after = {r[0]: (naive - r[1]).total_seconds() for r in admin.execute(
                sql.SQL("SELECT mutual_exclusion_id, mutual_exclusion_timestamp FROM {}")
                .format(corda))}
        finally:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(s))
    return answer, after
