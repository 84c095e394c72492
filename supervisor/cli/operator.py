"""The operator's commands against the database: `status`, `handover`, `pause`,
`resume`, `history` (the DBA's `schema` script is `supervisor.cli.schema`).

None of them creates anything in the database (a DBA runs what `schema` prints,
or the first supervisor start creates it). Every database call is bounded by the
configuration's timeouts; an unreachable database is exit 69 with a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from supervisor.config import Config
from supervisor.lease import (
    LeaseSnapshot,
    LeaseUnavailable,
    MemberRow,
    PostgresLeaseStore,
    read_state,
)
from supervisor.lease.fence import FenceSql, explain, read_roles
from supervisor.lease.fence import check as fence_check
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
