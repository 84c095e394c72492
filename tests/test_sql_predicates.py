"""Every condition of the lease store's SQL decides a scenario of its own.

Each scenario of `tests/mutants/sqlcases.py` sets up rows in which every condition of
one statement holds but one, runs the statement through `PostgresLeaseStore` (real
PostgreSQL), and checks what the call answered and every row afterwards: the row it
wrote (the write a statement makes, stated per operation below), and every other row
unchanged. The database clock is held still at `T0`: each scenario runs in a schema of
its own whose `clock_timestamp()` (first on the store's search_path) reads a fixed time,
so a boundary (a row that expires exactly now) is exact, and no test sleeps.

`python -m tests.mutants --generated` runs each generated SQL mutant against the
scenario that must kill it (`KILLS` in tests/mutants/sqlkills.py).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from supervisor.config import DatabaseConfig
from supervisor.core.identity import Identity, ProcessRef
from supervisor.lease import LeaseVersion, PostgresLeaseStore
from supervisor.lease import members as member_rows
from supervisor.lease.candidates import ScheduleSql, read_op, set_op
from tests.harness.aio import run
from tests.harness.pgserver import PgServer
from tests.mutants.sqlcases import (
    LEASE,
    MINE,
    NOBODY,
    SCENARIOS,
    UNSCHEDULED,
    Row,
    Scenario,
    W,
)

pytestmark = pytest.mark.timeout(60)

T0 = datetime(2030, 1, 1, tzinfo=UTC)
ME = Identity(machine_name="node-a", host="host-a", pid=1111, instance="inst-a",
              machine="mach-a", started=5555)
ME_MEMBER = member_rows.Member(instance="inst-a", machine_name="node-a",
                               machine_identity="mach-a", host="host-a2", pid=1112,
                               state="standby", can_take_over=True, reason="ok",
                               version="1.0", priority=3, nofailover=True,
                               timing_ms=(1000, 3000, 300))
TABLE = "corda_ha_lease"
TABLES = {  # table -> its columns, the key columns first
    TABLE: ("lease_name", "holder", "holder_host", "holder_pid", "holder_machine",
            "holder_started", "instance", "epoch", "acquired_at", "renewed_at", "expires_at",
            "handover_requested_at", "server_id", "paused_at", "handover_to", "handover_at",
            "handover_at_to"),
    f"{TABLE}_history": ("lease_name", "epoch", "holder", "holder_host", "how",
                         "previous_holder", "acquired_at", "ended_at", "end_reason"),
    f"{TABLE}_member": ("lease_name", "instance", "machine_name", "machine_identity", "host",
                        "pid", "state", "can_take_over", "reason", "version", "started_at",
                        "last_seen", "priority", "nofailover", "update_interval_ms",
                        "wait_interval_ms", "margin_ms"),
}
TIMES = {"acquired_at", "renewed_at", "expires_at", "handover_requested_at", "paused_at",
         "handover_at", "ended_at", "started_at", "last_seen"}
# Which server answers, written out here (not taken from the code under test): every
# statement that writes the row records it, every observation reports it.
SERVER = """SELECT coalesce(host(inet_server_addr()), 'local') || ':'
    || coalesce(inet_server_port()::text, '-') || ' up since '
    || extract(epoch FROM pg_postmaster_start_time())::text || ' timeline '
    || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"""


def at(offset: float | None) -> datetime | None:
    return None if offset is None else T0 + timedelta(seconds=offset)


def offset(value: Any) -> Any:
    return (value - T0).total_seconds() if isinstance(value, datetime) else value


@dataclasses.dataclass
class World:
    admin: psycopg.Connection[Any]
    schema: str
    db: DatabaseConfig
    server: str

    def insert(self, table: str, rows: tuple[Row, ...]) -> None:
        for r in rows:
            r = {"lease_name": LEASE, **r}
            self.admin.execute(
                sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                    sql.Identifier(self.schema, table), sql.SQL(", ").join(map(sql.Identifier, r)),
                    sql.SQL(", ").join(sql.Placeholder() * len(r))),
                [at(v) if k in TIMES else v for k, v in r.items()])

    def rows(self, table: str) -> dict[tuple[Any, ...], Row]:
        """Every row of `table`, by its key, times as seconds relative to T0."""
        columns = TABLES[table]
        keys = 1 if table == TABLE else 2
        cur = self.admin.execute(sql.SQL("SELECT {} FROM {}").format(
            sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(self.schema, table)))
        return {r[:keys]: {c: offset(v) for c, v in zip(columns, r, strict=True)}
                for r in cur.fetchall()}


@pytest.fixture
def world(pg_server: PgServer) -> Iterator[World]:
    """A schema of its own, whose `clock_timestamp()` answers T0, first on the store's
    search_path (then pg_catalog, so everything else is PostgreSQL's own)."""
    schema = f"sqlp_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.dsn, autocommit=True, connect_timeout=10) as admin:
        admin.execute(sql.SQL(
            "CREATE SCHEMA {s}; CREATE TABLE {s}.fake_clock (t timestamptz NOT NULL);"
            "CREATE FUNCTION {s}.clock_timestamp() RETURNS timestamptz LANGUAGE sql VOLATILE "
            "AS 'SELECT t FROM {s}.fake_clock'").format(s=sql.Identifier(schema)).as_string(admin))
        admin.execute(sql.SQL("INSERT INTO {}.fake_clock VALUES (%s)")
                      .format(sql.Identifier(schema)), [T0])
        server = admin.execute(SERVER).fetchone()
        assert server is not None
        db = DatabaseConfig(
            conninfo=make_conninfo(pg_server.dsn, options=f"-c search_path={schema},pg_catalog"),
            user=None, password=None, schema=schema, table=TABLE, lease_name=LEASE,
            connect_timeout=5, operation_timeout=5)
        try:
            yield World(admin, schema, db, str(server[0]))
        finally:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def test_the_store_reads_the_held_clock(world: World) -> None:
    async def main() -> None:
        store = PostgresLeaseStore(world.db, ME, W)
        try:
            await store.ensure_schema(5.0)
            snap = await store.observe(5.0)
        finally:
            await store.close()
        assert snap.db_now == T0 and snap.server == world.server

    run(main())


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario(world: World, name: str) -> None:
    sc = SCENARIOS[name]

    async def main() -> Any:
        store = PostgresLeaseStore(world.db, ME, W)
        try:
            await store.ensure_schema(5.0)
            world.insert(TABLE, sc.others)  # first: a scan that ignores the name finds them
            world.insert(TABLE, () if sc.lease is None else (sc.lease,))
            world.insert(f"{TABLE}_history", sc.history)
            world.insert(f"{TABLE}_member", sc.members)
            return await run_op(store, sc, world)
        finally:
            await store.close()

    result = run(main())
    after = {t: world.rows(t) for t in TABLES}
    expected, answer = expect(sc, world.server)
    assert result == answer, f"{name}: {sc.op} answered {result!r}, expected {answer!r}"
    for table, rows in expected.items():
        assert after[table] == rows, f"{name}: {table} after {sc.op}"


# ---------------------------------------------------------------- the calls


async def run_op(store: PostgresLeaseStore, sc: Scenario, world: World) -> Any:
    a = sc.args
    lease = sc.lease
    if sc.op == "acquire":
        return await store.acquire(version(lease, a.get("expected", "row")),
                                   takeover=None if "takeover" not in a
                                   else ProcessRef(*a["takeover"]),
                                   server={"other": "another server", None: None}.get(
                                       a.get("server", ""), world.server), timeout=5.0)
    epoch = a.get("epoch", None if lease is None else lease["epoch"])
    if sc.op == "renew":
        r = await store.renew(epoch, 5.0)
        return None if r is None else (r.handover_requested, r.paused, offset(r.renewed_at))
    if sc.op == "release":
        return await store.release(epoch, 5.0)
    if sc.op == "observe":
        s = await store.observe(5.0)
        return dict(exists=s.exists, holder=s.holder, epoch=s.epoch, db_now=offset(s.db_now),
                    server=s.server, expired=s.expired, paused=s.paused,
                    reserved_for=s.reserved_for)
    if sc.op == "request_handover":
        s = await store.request_handover(5.0, to="node-c")
        return offset(s.handover_requested_at), s.holder
    if sc.op == "set_paused":
        return await store.set_paused(a["paused"], 5.0)
    if sc.op in ("record_acquired", "record_ended"):
        if sc.op == "record_acquired":
            store.record_acquired(a["epoch"], "released", "node-b")
        else:
            store.record_ended(a["epoch"], "released")
        (statement, params), = store._listener._history  # what the listener runs
        conn = await store._open()
        try:
            await conn.execute(statement, params)
        finally:
            await conn.close()
        return None
    if sc.op == "read_history":
        return [(h["epoch"], h["holder"]) for h in await store.history(a["limit"], 5.0)]
    if sc.op.startswith("schedule_"):
        return await run_schedule_op(store, sc, epoch, world)
    conn = await store._open()  # members: what the LISTEN connection's health check runs
    try:
        if sc.op == "members_refresh":
            await member_rows.refresh(conn, store._members, LEASE, ME_MEMBER)
            return None
        assert sc.op == "members_read", sc.op
        return sorted(m.member.instance for m in
                      await member_rows.read(conn, store._members, LEASE))
    finally:
        await conn.close()


async def run_schedule_op(store: PostgresLeaseStore, sc: Scenario, epoch: int | None,
                          world: World) -> Any:
    """The schedule's statements as the daemon (`settle_schedule`, on the lease
    connection) and the operator's `handover --at` / `--cancel` / `status` run them."""
    a = sc.args
    if sc.op == "schedule_settle":
        assert epoch is not None
        return await store.settle_schedule(epoch, a["proceed"], a["to"], 5.0)
    statements = ScheduleSql(world.db.schema, TABLE)
    if sc.op == "schedule_set":
        return await store.call("schedule_handover",
                                set_op(LEASE, at(a["at"]), a["to"], statements), 5.0)
    assert sc.op == "schedule_read", sc.op
    when, to = await store.call("read_schedule", read_op(LEASE, statements), 5.0)
    return offset(when), to


def version(lease: Row | None, expected: Any) -> LeaseVersion | None:
    if expected is None or lease is None:
        return None
    changes = {} if expected == "row" else expected
    v = {"epoch": lease["epoch"], "instance": lease["instance"],
         "renewed_at": lease["renewed_at"], **changes}
    return LeaseVersion(v["epoch"], v["instance"], at(v["renewed_at"]))


# ---------------------------------------------------------------- what each call writes


def expect(sc: Scenario, server: str) -> tuple[dict[str, dict[Any, Row]], Any]:
    """The rows after the call (every table) and the call's answer, for the decision
    `sc.expect` states."""
    lease = None if sc.lease is None else {"lease_name": LEASE, **sc.lease}
    rows = {TABLE: {(r["lease_name"],): r for r in sc.others}}
    history = {(r.get("lease_name", LEASE), r["epoch"]): {"lease_name": LEASE, **r}
               for r in sc.history}
    members = {(r.get("lease_name", LEASE), r["instance"]): {"lease_name": LEASE, **r}
               for r in sc.members}
    new, answer = lease, None
    e, op = sc.expect, sc.op
    if op == "acquire":
        if e:
            new = {**(lease or {"lease_name": LEASE, "epoch": 0, "paused_at": None,
                                **UNSCHEDULED}), **MINE,
                   "epoch": (lease or {"epoch": 0})["epoch"] + 1, "acquired_at": 0.0,
                   "renewed_at": 0.0, "expires_at": W, "handover_requested_at": None,
                   "handover_to": None, "server_id": server}
            answer = new["epoch"]
    elif op == "renew":
        if e:
            assert lease is not None
            new = {**lease, "renewed_at": 0.0, "expires_at": W, "server_id": server}
            answer = (lease["handover_requested_at"] is not None,
                      lease["paused_at"] is not None, 0.0)
    elif op == "release":
        answer = bool(e)
        if e:
            assert lease is not None
            new = {**lease, **NOBODY, "expires_at": 0.0, "server_id": server}
    elif op == "observe":
        answer = observed(lease, server, e)
    elif op == "request_handover":
        if e:
            assert lease is not None
            asked = lease["handover_requested_at"]
            new = {**lease, "handover_requested_at": 0.0 if asked is None else asked,
                   "handover_to": "node-c"}
        answer = (None if new is None else new["handover_requested_at"],
                  None if new is None else new["holder"])
    elif op == "set_paused":
        paused = sc.args["paused"]
        old = lease or {"lease_name": LEASE, **dict.fromkeys(TABLES[TABLE][1:]), "epoch": 0}
        since = old["paused_at"] if old["paused_at"] is not None else 0.0
        new = {**old, "paused_at": since if paused else None}
        answer = old["holder"]
    elif op in ("record_acquired", "record_ended", "read_history"):
        answer = recorded(sc, history)
    elif op == "members_refresh":
        members = refreshed(members, e)
    elif op == "members_read":
        answer = sorted(k[1] for k in members if k[0] == LEASE)
    elif op.startswith("schedule_"):
        new, answer = scheduled(sc, lease)
    if new is not None:
        rows[TABLE][(LEASE,)] = new
    return {TABLE: rows[TABLE], f"{TABLE}_history": history,
            f"{TABLE}_member": members}, answer


def recorded(sc: Scenario, history: dict[Any, Row]) -> Any:
    """The history rows after a history statement (`history` updated in place), and its
    answer."""
    e = sc.expect
    if sc.op == "record_acquired":
        ended, inserted = e
        for key, h in history.items():
            if key[0] == LEASE and h["epoch"] in ended:
                history[key] = {**h, "ended_at": 0.0, "end_reason": "taken over"}
        if inserted:
            epoch = sc.args["epoch"]
            history[(LEASE, epoch)] = dict(
                lease_name=LEASE, epoch=epoch, holder="node-a", holder_host="host-a",
                how="released", previous_holder="node-b", acquired_at=0.0, ended_at=None,
                end_reason=None)
    elif sc.op == "record_ended":
        key = (LEASE, sc.args["epoch"])
        if e:
            h = history[key]
            end = h["ended_at"]
            history[key] = {**h, "ended_at": 0.0 if end is None else min(end, 0.0),
                            "end_reason": "released"}
    else:
        assert sc.op == "read_history", sc.op
        return sorted(((k[1], h["holder"]) for k, h in history.items() if k[0] == LEASE),
                      reverse=True)
    return None


def scheduled(sc: Scenario, lease: Row | None) -> tuple[Row | None, Any]:
    """The lease row after a schedule statement, and its answer. Taking a due schedule
    off clears it and, to hand over, asks as `handover --to` does (an earlier request
    keeps its time); setting or cancelling writes the schedule alone."""
    a = sc.args
    if sc.op == "schedule_settle":
        if not sc.expect:
            return lease, False
        assert lease is not None
        new = {**lease, **UNSCHEDULED}
        if a["proceed"]:
            asked = lease["handover_requested_at"]
            new.update(handover_requested_at=0.0 if asked is None else asked,
                       handover_to=a["to"])
        return new, True
    if lease is None:
        return None, ((False, None) if sc.op == "schedule_set" else (None, None))
    if sc.op == "schedule_set":
        return {**lease, "handover_at": a["at"], "handover_at_to": a["to"]}, (True,
                                                                             lease["holder"])
    return lease, (lease["handover_at"], lease["handover_at_to"])


def observed(lease: Row | None, server: str, e: dict[str, Any]) -> dict[str, Any]:
    return dict(exists=lease is not None, holder=None if lease is None else lease["holder"],
                epoch=0 if lease is None else lease["epoch"], db_now=0.0, server=server,
                expired=e.get("expired", False), paused=e.get("paused", False),
                reserved_for=e.get("reserved_for"))


def refreshed(members: dict[Any, Row], removed: set[str]) -> dict[Any, Row]:
    """The member rows after our refresh: `removed` (of our lease) gone, our row
    inserted, or its state, reason and last_seen refreshed."""
    out = {k: r for k, r in members.items() if not (k[0] == LEASE and k[1] in removed)}
    m = ME_MEMBER
    key = (LEASE, m.instance)
    mine = dict(state=m.state, can_take_over=m.can_take_over, reason=m.reason, last_seen=0.0)
    if key in out:
        out[key] = {**out[key], **mine}
    else:
        out[key] = dict(lease_name=LEASE, instance=m.instance, machine_name=m.machine_name,
                        machine_identity=m.machine_identity, host=m.host, pid=m.pid,
                        version=m.version, started_at=0.0, priority=m.priority,
                        nofailover=m.nofailover, update_interval_ms=1000,
                        wait_interval_ms=3000, margin_ms=300, **mine)
    return out
