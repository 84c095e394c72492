"""The operator's commands against the database: `status`, `handover`, `schema`.

None of them creates anything in the database (a DBA runs what `schema` prints,
or the first supervisor start creates it). Every database call is bounded by the
configuration's timeouts; an unreachable database is exit 69 with a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from psycopg import sql

from supervisor.config import Config
from supervisor.config.loader import DEFAULT_SUPERVISOR_ROLE
from supervisor.lease import (
    LeaseSnapshot,
    LeaseUnavailable,
    MemberRow,
    PostgresLeaseStore,
    read_state,
)
from supervisor.lease.cordarow import CORDA_TABLE
from supervisor.lease.fence import FenceSql, explain, fence_ddl, read_roles, roles_ddl
from supervisor.lease.fence import check as fence_check
from supervisor.lease.ownership import OwnedTables, column_types, owner_ddl
from supervisor.node.machine import this_process

EX_UNAVAILABLE = 69
EXIT_NO_HOLDER = 3
EXIT_HANDOVER_REFUSED = 4


def renewal_slack(update_interval: float) -> float:
    """How late a renewal may be before `status` calls the holder "not renewing"."""
    return update_interval + max(1.0, update_interval / 2)


def describe(snapshot: LeaseSnapshot | None, members: list[MemberRow] | None = None,
             update_interval: float = 20.0) -> dict[str, Any]:
    """The lease as `status` shows it; ages by the database clock.

    `live` is true only for a holder whose row has not expired **and** whose
    renewals arrive on time (a holder whose supervisor died or froze shows
    `renewing: false` until its row expires, and is not live)."""
    rows = [m.as_dict() for m in members or []]
    if snapshot is None or not snapshot.exists:
        return {"holder": None, "live": False, "epoch": None, "members": rows}

    def seconds(a: datetime | None, b: datetime | None) -> float | None:
        return None if a is None or b is None else round((a - b).total_seconds(), 3)

    unexpired = snapshot.live
    renewed_ago = seconds(snapshot.db_now, snapshot.renewed_at)
    renewing = (unexpired and renewed_ago is not None
                and renewed_ago <= renewal_slack(update_interval))
    for row in rows:
        row["holder"] = row["instance"] == snapshot.instance and snapshot.holder is not None
    return {
        "lease_name": snapshot.lease_name,
        "holder": snapshot.holder,
        "holder_host": snapshot.holder_host,
        "holder_pid": snapshot.holder_pid,
        "epoch": snapshot.epoch,
        "live": renewing,
        "unexpired": unexpired,
        "renewing": renewing,
        "renewed_ago": renewed_ago,
        "expires_in": seconds(snapshot.expires_at, snapshot.db_now),
        "acquired_at": snapshot.acquired_at.isoformat() if snapshot.acquired_at else None,
        "handover_requested": (snapshot.handover_requested_at is not None
                               and snapshot.holder is not None),
        "paused": snapshot.paused,
        "members": rows,
    }


def status_url(config: Config) -> str:
    """Where this host's supervisor serves `/status`: the internal address when one is
    configured, else the main one (a wildcard host read as loopback)."""
    health = config.health
    host, port = ((health.host, health.port) if health.internal_port is None
                  else (health.internal_host, health.internal_port))
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    netloc = f"[{host}]" if ":" in host else host
    return f"http://{netloc}:{port}/status"


def local_view(config: Config, timeout: float = 2.0) -> tuple[dict[str, Any] | None, str | None]:
    """This host's supervisor's `/status` (its state, database view, whether it could
    take over), or (None, why not). Sends the token of `health.tokenFile` when one is
    configured. Bounded by `timeout`; never raises."""
    health = config.health
    if not health.enabled:
        return None, "health endpoint disabled (health.enabled = false)"
    url = status_url(config)
    request = urllib.request.Request(url)
    if health.token is not None:
        request.add_header("Authorization", f"Bearer {health.token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as e:
        hint = " (does health.tokenFile match the supervisor's?)" if e.code == 401 else ""
        return None, f"{url} answered {e.code}{hint}"
    except (OSError, ValueError) as e:
        return None, f"no supervisor answering at {url}: {e}"
    return (body, None) if isinstance(body, dict) else (None, f"{url}: unexpected answer")


def _describe_local(view: dict[str, Any] | None, error: str | None) -> str:
    if view is None:
        return f"this host: {error}"
    lines = [f"this host: {view.get('machine_name')} state={view.get('state')} "
             f"epoch={view.get('epoch')}"]
    if "can_take_over" in view:
        can = "yes" if view["can_take_over"] else "NO"
        lines.append(f"  could take over now: {can} ({view.get('can_take_over_reason')})")
    db = view.get("database")
    if isinstance(db, dict):
        if db.get("reachable"):
            lines.append(f"  database: reachable (server {db.get('server')})")
        else:
            lines.append(f"  database: UNREACHABLE for {db.get('failing_for')} s, "
                         f"{db.get('failures_in_a_row')} failures in a row; last error: "
                         f"{db.get('last_error')}")
    if view.get("machine_name_conflict"):
        lines.append(f"  CONFIGURATION ERROR: {view['machine_name_conflict']}")
    return "\n".join(lines)


def _describe_members(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "members: none registered"
    lines = ["members:"]
    for m in rows:
        role = "holder" if m.get("holder") else ("could take over" if m["can_take_over"]
                                                 else f"cannot take over: {m['reason']}")
        lines.append(f"  {m['machine_name']:<16} host {m['host']} pid {m['pid']} "
                     f"state={m['state']} seen {m['last_seen_age']:.1f} s ago  {role}")
    return "\n".join(lines)


@contextlib.asynccontextmanager
async def _store(config: Config, machine_name: str) -> AsyncIterator[PostgresLeaseStore]:
    """A lease store for one operator command, as `machine_name`; always closed."""
    store = PostgresLeaseStore(config.database, this_process(machine_name),
                               config.lease.wait_interval)
    try:
        yield store
    finally:
        await store.close()


async def fencing_roles(config: Config) -> dict[str, Any]:
    """The confirm check of this host's binding (`problem`: None when fencing can work)
    and the node roles bound to this lease, whether each may log in; or the error that
    kept them from being read. Reads only; bounded; never raises."""
    db, fencing = config.database, config.fencing
    assert fencing.node_role is not None
    fence = FenceSql(db.schema, db.table)
    info: dict[str, Any] = {"node_role": fencing.node_role, "error": None, "problem": None,
                            "roles": []}
    try:
        async with _store(config, config.lease.machine_name) as store:
            info["problem"] = await fence_check(
                store.call, fence, lease=db.lease_name, role=fencing.node_role,
                machine=config.lease.machine_name, timeout=_timeout(config))
            roles = await store.call("fence_roles", lambda conn: read_roles(
                conn, fence, db.lease_name), _timeout(config))
    except LeaseUnavailable as e:
        info["error"] = explain(e)
        return info
    info["roles"] = [r.as_dict() for r in roles]
    return info


async def fencing_check(config: Config) -> tuple[str | None, str | None]:
    """`check-config`'s fencing check: the confirm check the daemon makes (this host's
    node role bound to this lease on this machine, and every rule of
    `supervisor.lease.fence_sql`). (None, None) when fencing works; (why not, None);
    or (None, the database error) when the database could not be asked. Bounded; never
    raises; changes nothing."""
    assert config.fencing.node_role is not None
    try:
        async with _store(config, config.lease.machine_name) as store:
            problem = await fence_check(
                store.call, FenceSql(config.database.schema, config.database.table),
                lease=config.database.lease_name, role=config.fencing.node_role,
                machine=config.lease.machine_name, timeout=_timeout(config))
    except LeaseUnavailable as e:
        return None, str(e)
    return problem, None


def _describe_fencing(info: dict[str, Any]) -> str:
    if info["error"]:
        return f"fencing: CANNOT READ the node roles: {info['error']}"
    state = "ready" if info["problem"] is None else f"CANNOT FENCE: {info['problem']}"
    lines = [f"fencing: this host's node role {info['node_role']}: {state}"]
    for r in info["roles"]:
        login = {True: "may log in", False: f"LOCKED OUT by epoch {r['locked_by_epoch']}",
                 None: "ROLE MISSING"}[r["can_log_in"]]
        lines.append(f"  {r['node_role']:<20} {r['machine_name']:<16} {login}, "
                     f"{r['sessions']} sessions")
    if not info["roles"]:
        lines.append("  no node role bound to this lease (see `corda-ha-supervisor schema`)")
    return "\n".join(lines)


def _timeout(config: Config) -> float:
    return max(config.database.operation_timeout, config.database.connect_timeout)


async def status(config: Config, *, as_json: bool) -> int:
    """Exit 0 with a live (renewing) holder, 3 without, 69 without a database."""
    view, view_error = await asyncio.to_thread(local_view, config)
    try:
        snapshot, members = await read_state(config.database, config.lease.wait_interval,
                                             _timeout(config))
    except LeaseUnavailable as e:
        if as_json:
            print(json.dumps({"database_error": str(e), "this_host": view,
                              "this_host_error": view_error}, indent=2))
        else:
            print(f"corda-ha-supervisor: database unavailable: {e}", file=sys.stderr)
            print(_describe_local(view, view_error))
        return EX_UNAVAILABLE
    info = describe(snapshot, members, config.lease.update_interval)
    if config.fencing.enabled:
        info["fencing"] = await fencing_roles(config)
    if as_json:
        print(json.dumps({**info, "this_host": view, "this_host_error": view_error}, indent=2))
    else:
        if info["holder"] is None:
            print("no holder: the lease is free")
        else:
            state = ("live" if info["live"] else
                     "NOT RENEWING (its supervisor stopped or is cut off)" if info["unexpired"]
                     else "EXPIRED")
            print(f"holder: {info['holder']} (host {info['holder_host']}, pid "
                  f"{info['holder_pid']})\nepoch: {info['epoch']}\nstate: {state}\nrenewed: "
                  f"{info['renewed_ago']} s ago\nexpires in: {info['expires_in']} s"
                  + ("\nhandover: requested" if info["handover_requested"] else "")
                  + ("\nPAUSED (maintenance: `resume` ends it)" if info["paused"] else ""))
        print(_describe_members(info["members"]))
        if "fencing" in info:
            print(_describe_fencing(info["fencing"]))
        print(_describe_local(view, view_error))
    return 0 if info["live"] else EXIT_NO_HOLDER


def takeover_candidates(snapshot: LeaseSnapshot, members: list[MemberRow]) -> list[MemberRow]:
    """Members other than the holder that are fresh and say they could take over now."""
    return [m for m in members if m.fresh and m.member.can_take_over
            and m.member.instance != snapshot.instance]


async def handover(config: Config, *, wait: float | None, force: bool = False,
                   to: str | None = None) -> int:
    """Ask the holder to step down; refuse (exit 4, node untouched) when no other
    member could take over (or not `to`, when named), unless `force`."""
    timeout = _timeout(config)
    store = PostgresLeaseStore(config.database, this_process("handover"),
                               config.lease.wait_interval)
    try:
        snapshot, members = await read_state(config.database, config.lease.wait_interval,
                                             timeout)
        if snapshot is None or snapshot.free:
            print("corda-ha-supervisor: nobody holds the lease; nothing to hand over",
                  file=sys.stderr)
            return EXIT_NO_HOLDER
        candidates = takeover_candidates(snapshot, members)
        if to is not None:
            if to == snapshot.holder:
                print(f"corda-ha-supervisor: {to} holds the lease already", file=sys.stderr)
                return EXIT_HANDOVER_REFUSED
            candidates = [m for m in candidates if m.member.machine_name == to]
        if snapshot.paused and not force:
            print("corda-ha-supervisor: the pair is paused: `resume` first (or --force)",
                  file=sys.stderr)
            return EXIT_HANDOVER_REFUSED
        if not candidates and not force:
            who = f"{to!r}" if to is not None else "no other supervisor"
            print(f"corda-ha-supervisor: refusing to hand over: {who} could "
                  f"take over from {snapshot.holder} now, so the node would just stop.\n"
                  + _describe_members(describe(snapshot, members)["members"])
                  + "\nUse --force to hand over anyway.", file=sys.stderr)
            return EXIT_HANDOVER_REFUSED
        before = await store.request_handover(timeout, to=to)
        if before.holder is None:
            print("corda-ha-supervisor: nobody holds the lease; nothing to hand over",
                  file=sys.stderr)
            return EXIT_NO_HOLDER
        takers = ", ".join(f"{m.member.machine_name} (host {m.member.host})"
                           for m in candidates) or "nobody (forced)"
        print(f"handover requested from {before.holder} (epoch {before.epoch}); "
              f"could take over: {takers}")
        if wait is None:
            return 0
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                now = await store.observe(timeout)
            except LeaseUnavailable:
                now = None
            if (now is not None and now.holder is not None and now.epoch > before.epoch
                    and now.instance != before.instance and not now.expired):
                print(f"now held by {now.holder} (epoch {now.epoch})")
                return 0
            await asyncio.sleep(0.1)
        print(f"corda-ha-supervisor: no other host took the lease within {wait} s",
              file=sys.stderr)
        return 1
    except LeaseUnavailable as e:
        print(f"corda-ha-supervisor: database unavailable: {e}", file=sys.stderr)
        return EX_UNAVAILABLE
    finally:
        await store.close()


async def pause(config: Config, *, paused: bool) -> int:
    """Pause or resume the pair through the database (works from any host)."""
    try:
        async with _store(config, "pause") as store:
            holder = await store.set_paused(paused, _timeout(config))
    except LeaseUnavailable as e:
        print(f"corda-ha-supervisor: database unavailable: {e}", file=sys.stderr)
        return EX_UNAVAILABLE
    if paused:
        print(f"paused: the holder ({holder or 'none'}) keeps the lease and leaves its node "
              "alone (no restart, no stop); standbys take nothing. The holder sees it on its "
              "next renewal. `resume` ends it.")
    else:
        print("resumed: the holder restarts a node that stopped meanwhile; standbys contend "
              "again.")
    return 0


async def history(config: Config, *, as_json: bool, limit: int) -> int:
    """Every acquisition of the lease, newest first."""
    try:
        async with _store(config, "history") as store:
            rows = await store.history(limit, _timeout(config))
    except LeaseUnavailable as e:
        print(f"corda-ha-supervisor: database unavailable: {e}", file=sys.stderr)
        return EX_UNAVAILABLE
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not rows:
        print("no acquisitions recorded")
    for r in rows:
        held = f"{r['held_seconds']:.1f} s" if r["held_seconds"] is not None else "-"
        end = (f"{r['end_reason']} at {r['ended_at']}" if r["ended_at"] is not None
               else "still held")
        print(f"epoch {r['epoch']:>5}  {r['holder']:<16} {r['how'] or '':<40} "
              f"from {r['previous_holder'] or '-':<12} at {r['acquired_at']}  held {held} "
              f"({end})")
    return 0


def schema_script(config: Config) -> str:
    """What a DBA runs (as a superuser) for this configuration: the lease tables owned by
    the owner role (`database.ownerRole`), row privileges and row-level security for the
    supervisor's role (`database.user`, or `corda_ha` when not set), this lease's access
    row and, with `fencing`, the fencing objects and this host's binding. One transaction;
    running it again changes nothing (and fixes an install whose tables the supervisor's
    role created)."""
    db = config.database
    tables = OwnedTables.of(db.schema, db.table)
    corda = (sql.Identifier(db.schema, CORDA_TABLE) if db.schema
             else sql.Identifier(CORDA_TABLE))
    role = sql.Identifier(supervisor_role(config)).as_string(None)
    where = db.schema or "the role's search_path schema (e.g. public)"
    lines = [
        f"-- corda-ha-supervisor {config.source}: lease tables of lease {db.lease_name!r}",
        f"-- in {where}.",
        "-- Run as a superuser (psql -v ON_ERROR_STOP=1 -f ...): one transaction; running it",
        "-- again (e.g. for the other host) changes nothing.",
        f"-- The supervisor's role, if it does not exist: CREATE ROLE {role} LOGIN PASSWORD "
        "'...';",
        "-- It gets row privileges only, and sees only the rows of the leases that",
        f"-- {tables.access.as_string(None)} names for it; the tables belong to "
        f"{sql.Identifier(db.owner_role).as_string(None)}, which nobody logs in as.",
        "BEGIN;",
    ]
    lines += [_statement(s) for s in owner_ddl(
        tables, owner=db.owner_role, supervisor_role=supervisor_role(config),
        lease_name=db.lease_name, schema=db.schema)]
    lines += ["",
              "-- with Corda's own guard on (node.conf mutualExclusionConfiguration), once Corda",
              "-- created its table: lets the holder make the old node's row takeable so a",
              "-- node started after a failover or handover does not wait waitInterval out",
              f"-- GRANT SELECT, UPDATE ON {corda.as_string(None)} TO {role};"]
    if config.fencing.enabled:
        lines += fencing_script(config)
    return "\n".join([*lines, "COMMIT;"]) + "\n"


def supervisor_role(config: Config) -> str:
    """The role `schema` grants to: `database.user`, or `corda_ha` when not set."""
    return config.database.user or DEFAULT_SUPERVISOR_ROLE


def _statement(text: str) -> str:
    """One statement as printed: its lines indented under the first, and a `;`."""
    first, *rest = text.strip().splitlines()
    return "\n".join([first.rstrip(), *textwrap.dedent("\n".join(rest)).splitlines()]) + ";"


def fencing_script(config: Config) -> list[str]:
    """The fencing part of `schema_script` (see `supervisor.lease.fence`)."""
    db, fencing = config.database, config.fencing
    assert fencing.node_role is not None
    fence = FenceSql(db.schema, db.table)
    group, fencer = fencing.node_group, fencing.fencer_role

    def ident(name: str) -> str:
        return sql.Identifier(name).as_string(None)

    tables = OwnedTables.of(db.schema, db.table)
    columns = {fence.lease_table.as_string(None): column_types(tables.create_lease),
               fence.member_table.as_string(None): column_types(tables.create_member),
               fence.history_table.as_string(None): column_types(tables.create_history),
               fence.access_table.as_string(None): column_types(tables.create_access),
               fence.binding.as_string(None): column_types(fence.create_binding)}
    roles = roles_ddl(node_group=group, fencer=fencer, node_roles=[fencing.node_role])
    machine = config.lease.machine_name
    return [
        "",
        f"-- database fencing (fencing.nodeRole = {fencing.node_role}). The roles, if they do",
        f"-- not exist yet: {ident(group)} holds the privileges on Corda's schema (give it",
        "-- CREATE and USAGE there, or make it the schema's owner); every host's node role is",
        "-- a member of it and acts as it (SET role), so the tables Corda creates at its first",
        "-- start belong to the group and the other host's node can use them after a",
        "-- failover. Each host's node needs a login role of its own.",
        *[f"-- {line};" for line in roles[:-2]],
        "-- (each host's node role: CREATE ROLE ... LOGIN PASSWORD '...' IN ROLE "
        f"{ident(group)};",
        f"--  ALTER ROLE ... SET role = '{group}';)",
        f"-- {ident(fencer)} owns the fence functions and may lock the node roles bound to a",
        "-- lease out and end their sessions; nobody logs in as it. PostgreSQL 14 or later;",
        "-- fencing refuses to run while the supervisor's role may create objects in the",
        f"-- schema ({fence.schema_name}): on PostgreSQL 14 also REVOKE CREATE ON SCHEMA "
        f"{fence.schema.as_string(None)} FROM PUBLIC; (15's default).",
        *[_statement(s) for s in fence_ddl(
            fence, owner=db.owner_role, fencer=fencer, node_group=group,
            supervisor_role=supervisor_role(config), columns=columns)],
        "",
        f"-- this host's binding: node role {fencing.node_role} runs on machine {machine!r} of",
        f"-- lease {db.lease_name!r}. A role is bound to one lease and one machine at most;",
        "-- binding it again elsewhere is an error. On PostgreSQL 16 and later this also",
        f"-- grants the role to {ident(fencer)} WITH ADMIN OPTION (CREATEROLE alters only",
        "-- the roles it administers).",
        _statement(fence.bind(node_role=fencing.node_role, lease=db.lease_name,
                              machine=machine)),
    ]
