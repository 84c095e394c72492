"""The renewal-durability invariant, checked in every end-to-end run whatever the fault:
every lease write a supervisor acted on (an acquisition it started a node on, a
renewal it moved its kill deadline for) was committed.

`install(conn)` puts an AFTER INSERT OR UPDATE trigger on every lease table of a test
database, and (an event trigger) on every lease table created later, whoever creates
it, in the creating transaction. The trigger copies each written row into one audit
table (`AUDIT`, in `public`). It runs inside the writing transaction: a write that is
rolled back takes its audit row with it, so the audit holds exactly the committed
writes.

`violations(dsn, lease_name, hosts_lines)` compares what each supervisor logged
(`lease_acquired` with its epoch, `lease_renewed` with the epoch and the row's new
`renewed_at`) with the audit: a logged write missing from it is a renewal (or an
acquisition) the supervisor acted on that the database does not have.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from supervisor.config import DatabaseConfig
from supervisor.lease import PostgresLeaseStore
from supervisor.node.machine import this_process

AUDIT = "corda_ha_test_lease_audit"

_SETUP = """
CREATE TABLE IF NOT EXISTS public.{audit} (
    lease_name text NOT NULL,
    epoch bigint NOT NULL,
    instance text,
    holder text,
    renewed_at timestamptz,
    expires_at timestamptz,
    written_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS {audit}_lease ON public.{audit} (lease_name);
CREATE OR REPLACE FUNCTION public.{audit}_write() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO public.{audit} (lease_name, epoch, instance, holder, renewed_at, expires_at)
    VALUES (NEW.lease_name, NEW.epoch, NEW.instance, NEW.holder, NEW.renewed_at,
            NEW.expires_at);
    RETURN NULL;
END $$;
-- audit one lease table (a table with the lease's columns); idempotent
CREATE OR REPLACE FUNCTION public.{audit}_on(t regclass) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF t = 'public.{audit}'::regclass OR (SELECT count(*) FROM pg_attribute
                                          WHERE attrelid = t AND NOT attisdropped
        AND attname IN ('lease_name', 'epoch', 'instance', 'holder', 'renewed_at',
                        'expires_at')) < 6 THEN
        RETURN;
    END IF;
    EXECUTE format('DROP TRIGGER IF EXISTS {audit}_trigger ON %s', t);
    EXECUTE format('CREATE TRIGGER {audit}_trigger AFTER INSERT OR UPDATE ON %s '
                   'FOR EACH ROW EXECUTE FUNCTION public.{audit}_write()', t);
END $$;
-- every lease table created from now on, by whoever, is audited in its own transaction
CREATE OR REPLACE FUNCTION public.{audit}_new_tables() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c record;
BEGIN
    FOR c IN SELECT objid FROM pg_event_trigger_ddl_commands()
             WHERE command_tag = 'CREATE TABLE' AND object_type = 'table' LOOP
        PERFORM public.{audit}_on(c.objid::regclass);
    END LOOP;
END $$;
DROP EVENT TRIGGER IF EXISTS {audit}_new_tables;
CREATE EVENT TRIGGER {audit}_new_tables ON ddl_command_end WHEN TAG IN ('CREATE TABLE')
    EXECUTE FUNCTION public.{audit}_new_tables();
"""


def install(conn: psycopg.Connection[Any]) -> None:
    """Audit every lease table of `conn`'s database: those that exist and every one
    created later, by any role. Idempotent; run as a superuser."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (AUDIT,))
        conn.execute(_SETUP.replace("{audit}", AUDIT))
        tables = conn.execute(
            "SELECT c.oid::regclass::text FROM pg_class c JOIN pg_attribute a "
            "ON a.attrelid = c.oid WHERE c.relkind = 'r' AND a.attname = 'renewed_at' "
            "AND NOT a.attisdropped").fetchall()
        for (table,) in tables:
            conn.execute(f"SELECT public.{AUDIT}_on(%s::regclass)", (table,))


def committed_writes(dsn: str, lease_name: str) -> set[tuple[str, int, datetime | None]] | None:
    """Every write of `lease_name` in `dsn`'s audit as (instance, epoch, renewed_at),
    plus (instance, epoch, None) for each epoch an instance wrote; None without the
    audit table."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        found = conn.execute("SELECT to_regclass(%s)", (f"public.{AUDIT}",)).fetchone()
        if found is None or found[0] is None:
            return None
        rows = conn.execute(
            sql.SQL("SELECT instance, epoch, renewed_at FROM public.{} WHERE lease_name = %s "
                    "AND instance IS NOT NULL").format(sql.Identifier(AUDIT)),
            (lease_name,)).fetchall()
    out: set[tuple[str, int, datetime | None]] = set()
    for instance, epoch, renewed in rows:
        out.add((str(instance), int(epoch), renewed))
        out.add((str(instance), int(epoch), None))
    return out


def acted_on(lines: Iterable[Mapping[str, Any]]) -> list[tuple[str, int, datetime | None,
                                                               float | None]]:
    """The lease writes one host's supervisors acted on, in log order: (instance,
    epoch, renewed_at or None for an acquisition, sent_at). The instance is the
    supervisor process's (its `supervisor_started` line; each restart has a new one)."""
    out: list[tuple[str, int, datetime | None, float | None]] = []
    instance = "?"
    for e in lines:
        event = e.get("event")
        if event == "supervisor_started":
            instance = str(e.get("instance"))
        elif event == "lease_acquired" and e.get("epoch") is not None:
            out.append((instance, int(e["epoch"]), None, _float(e.get("sent_at"))))
        elif event == "lease_renewed" and e.get("renewed_at"):
            out.append((instance, int(e["epoch"]),
                        datetime.fromisoformat(str(e["renewed_at"])), _float(e.get("sent_at"))))
    return out


def _float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def violations(dsns: Iterable[str], lease_name: str,
               hosts_lines: Mapping[str, Iterable[Mapping[str, Any]]]) -> list[str]:
    """Every logged acquisition or renewal of `lease_name` that the audits of all of
    `dsns` lack (several: a lease database that failed over, each server's audit
    holding what was committed there). Writes are matched by the supervisor
    process's instance, so tests that reuse a lease name never mask each other."""
    acted = [(host, *w) for host, lines in hosts_lines.items() for w in acted_on(lines)]
    if not acted:
        return []
    committed: set[tuple[str, int, datetime | None]] = set()
    for dsn in dsns:
        found = committed_writes(dsn, lease_name)
        if found is None:
            return [f"no audit table {AUDIT}: run tests.harness.renewal_audit.install on {dsn}"]
        committed |= found
    if not committed:
        return [f"no audited write of lease {lease_name!r} at all: its lease table has no "
                f"audit trigger (install tests.harness.renewal_audit on it)"]
    return [f"{host}: {'acquisition' if at is None else f'renewal at {at}'} of epoch {epoch} "
            f"(instance {instance}) was acted on but never committed"
            for host, instance, epoch, at, _ in acted
            if (instance, epoch, at) not in committed]


def acquire_and_renew(db: DatabaseConfig) -> tuple[str, int, datetime]:
    """A real acquisition and one renewal of `db`'s lease (its table created first, so
    audited by the event trigger): (the writer's instance, the epoch, the renewal's
    renewed_at). For the checks' own tests."""
    me = this_process("a")

    async def main() -> tuple[int, datetime]:
        store = PostgresLeaseStore(db, me, 5.0)
        try:
            await store.ensure_schema(5.0)
            epoch = await store.acquire(None, timeout=5.0)
            assert epoch is not None
            result = await store.renew(epoch, 5.0)
            assert result is not None and result.renewed_at is not None
            return epoch, result.renewed_at
        finally:
            await store.close()

    epoch, renewed = asyncio.run(main())
    return me.instance, epoch, renewed
