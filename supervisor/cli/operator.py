"""The operator's commands against the database: `status`, `handover`, `pause`,
`resume`, `history` (the DBA's `schema` script is `supervisor.cli.schema`).

None of them creates anything in the database (a DBA runs what `schema` prints,
or the first supervisor start creates it). Every database call is bounded by the
configuration's timeouts. A database that cannot be reached is exit 69; a refused
login, a TLS problem or a missing privilege is exit 78 (`supervisor.cli.exits`).
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

from supervisor.cli import handover as candidates
from supervisor.cli.exits import (
    EX_CONFIG,
    EXIT_FAILED,
    EXIT_NO_HOLDER,
    EXIT_REFUSED,
    fail,
)
from supervisor.cli.show import describe, fencing_lines, local_lines, member_lines
from supervisor.config import Config
from supervisor.lease import (
    LeaseSnapshot,
    LeaseUnavailable,
    MemberRow,
    PostgresLeaseStore,
    read_state,
)
from supervisor.lease.bounded import connect_budget
from supervisor.lease.fence import FenceSql, explain, read_roles
from supervisor.lease.fence import check as fence_check
from supervisor.lease.members import local_time
from supervisor.lease.privileges import Missing
from supervisor.lease.replication import Settings as ReplicationSettings
from supervisor.node.machine import this_process


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


def _timeout(config: Config) -> float:
    """One command's call: its connection (`connect_budget`) and its statement."""
    return connect_budget(config.database) + config.database.operation_timeout


async def missing_privileges(config: Config) -> list[Missing]:
    """The privilege probe as the daemon runs it at start (raises `LeaseUnavailable`)."""
    async with _store(config, config.lease.machine_name) as store:
        return await store.missing_privileges(fencing=config.fencing.enabled,
                                              fencing_required=config.fencing.required,
                                              timeout=_timeout(config))


async def replication_settings(config: Config) -> ReplicationSettings:
    """The lease database's replication settings as the daemon reads them at start
    (raises `LeaseUnavailable`)."""
    async with _store(config, config.lease.machine_name) as store:
        return await store.replication(_timeout(config))


async def status(config: Config, *, as_json: bool) -> int:
    """Exit 0 with a live (renewing) holder, 3 without; 69 without a database, 78 when
    this role may not read what it must (its view would be wrong)."""
    view, view_error = await asyncio.to_thread(local_view, config)
    try:
        missing = [m for m in await missing_privileges(config) if m.blocking]
        snapshot, members = await read_state(config.database, config.lease.wait_interval,
                                             _timeout(config))
    except LeaseUnavailable as e:
        if as_json:
            print(json.dumps({"database_error": str(e), "this_host": view,
                              "this_host_error": view_error}, indent=2))
        else:
            print(local_lines(view, view_error))
        return fail(e, config)
    if missing:
        for m in missing:
            print(f"corda-ha-supervisor: configuration error: {m}", file=sys.stderr)
        print(local_lines(view, view_error))
        return EX_CONFIG
    info = describe(snapshot, members, config.lease.update_interval)
    info["timing"] = candidates.timing_view(members)
    info["scheduled_handover"] = await candidates.read_schedule(config, _timeout(config))
    if config.fencing.enabled:
        info["fencing"] = await fencing_roles(config)
    if as_json:
        print(json.dumps({**info, "this_host": view, "this_host_error": view_error}, indent=2))
    else:
        print(lease_text(info))
        print(member_lines(info["members"]))
        print(candidates.candidate_lines(info))
        if "fencing" in info:
            print(fencing_lines(info["fencing"]))
        print(local_lines(view, view_error))
    return 0 if info["live"] else EXIT_NO_HOLDER


def lease_text(info: dict[str, Any]) -> str:
    if info["holder"] is None:
        return "no holder: the lease is free"
    state = ("live" if info["live"] else
             "NOT RENEWING (its supervisor stopped or is cut off)" if info["unexpired"]
             else "EXPIRED")
    return (f"holder: {info['holder']} (host {info['holder_host']}, pid "
            f"{info['holder_pid']})\nepoch: {info['epoch']}\nstate: {state}\n"
            f"acquired: {info['acquired_at']}\nrenewed: {info['renewed_ago']} s ago\n"
            f"expires in: {info['expires_in']} s"
            + ("\nhandover: requested" if info["handover_requested"] else "")
            + ("\nPAUSED (maintenance: `resume` ends it)" if info["paused"] else ""))


def takeover_candidates(snapshot: LeaseSnapshot, members: list[MemberRow]) -> list[MemberRow]:
    """Members other than the holder that are fresh and say they could take over now."""
    return [m for m in members if m.fresh and m.member.can_take_over
            and m.member.instance != snapshot.instance]


def handover_refusal(snapshot: LeaseSnapshot, members: list[MemberRow], to: str | None,
                     force: bool) -> str | None:
    """Why `handover` must not ask the holder to stop (exit 4), or None."""
    if to is not None and to == snapshot.holder:
        return f"{to} holds the lease already"
    if to is not None and to not in {m.member.machine_name for m in members}:
        known = ", ".join(sorted({m.member.machine_name for m in members})) or "none"
        return (f"{to!r} is no member of this pair: no supervisor with machineName {to!r} "
                f"has registered for lease {snapshot.lease_name!r} (members: {known})")
    if force:
        return None
    if snapshot.paused:
        return "the pair is paused: `resume` first (or --force)"
    candidates = takeover_candidates(snapshot, members)
    if to is not None:
        candidates = [m for m in candidates if m.member.machine_name == to]
    if candidates:
        return None
    who = f"{to!r} could not" if to is not None else "no other supervisor could"
    return (f"refusing to hand over: {who} take over from {snapshot.holder} now, so the "
            f"node would just stop.\n"
            + member_lines(describe(snapshot, members)["members"])
            + "\nUse --force to hand over anyway.")


async def handover(config: Config, *, wait: float | None, force: bool = False,
                   to: str | None = None, at: datetime | None = None,
                   cancel: bool = False) -> int:
    """Ask the holder to step down; refuse (exit 4, node untouched) when no other
    member could take over (or not `to`, when named), unless `force`. With `at` (or
    `cancel`): set (or cancel) a handover for that time instead
    (`supervisor.cli.handover`)."""
    timeout = _timeout(config)
    try:
        snapshot, members = await read_state(config.database, config.lease.wait_interval,
                                             timeout)
        if at is not None or cancel:
            return await candidates.schedule(config, at, to, members, snapshot, timeout)
        if snapshot is None or snapshot.free:
            print("corda-ha-supervisor: nobody holds the lease; nothing to hand over",
                  file=sys.stderr)
            return EXIT_NO_HOLDER
        refusal = (candidates.nofailover_refusal(members, to)
                   or handover_refusal(snapshot, members, to, force))
        to = to or candidates.best_taker(snapshot, members)
        if refusal is not None:
            print(f"corda-ha-supervisor: {refusal}", file=sys.stderr)
            return EXIT_REFUSED
        async with _store(config, "handover") as store:
            before = await store.request_handover(timeout, to=to)
            if before.holder is None:
                print("corda-ha-supervisor: nobody holds the lease; nothing to hand over",
                      file=sys.stderr)
                return EXIT_NO_HOLDER
            takers = ", ".join(f"{m.member.machine_name} (host {m.member.host})"
                               for m in takeover_candidates(snapshot, members)
                               if to is None or m.member.machine_name == to)
            print(f"handover requested from {before.holder} (epoch {before.epoch}); "
                  f"could take over: {takers or 'nobody (forced)'}")
            if wait is None:
                return 0
            return await _wait_for_taker(store, before, wait, timeout)
    except LeaseUnavailable as e:
        return fail(e, config)


async def _wait_for_taker(store: PostgresLeaseStore, before: LeaseSnapshot, wait: float,
                          timeout: float) -> int:
    """0 once another process holds a newer epoch; 1 after `wait` seconds."""
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
    print(f"corda-ha-supervisor: no other host took the lease within {wait:g} s",
          file=sys.stderr)
    return EXIT_FAILED


async def pause(config: Config, *, paused: bool) -> int:
    """Pause or resume the pair through the database (works from any host)."""
    try:
        async with _store(config, "pause") as store:
            holder = await store.set_paused(paused, _timeout(config))
    except LeaseUnavailable as e:
        return fail(e, config)
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
        return fail(e, config)
    rows = [{**r, "acquired_at": local_time(r["acquired_at"]),
             "ended_at": local_time(r["ended_at"]),
             "held_seconds": None if r["held_seconds"] is None
             else round(r["held_seconds"], 3)} for r in rows]
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
