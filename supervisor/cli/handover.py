"""`handover` with candidates: `--at TIME` and `--cancel` (a handover set for a time,
stored in the lease row: `supervisor.lease.candidates`), the choice of the taker when
no `--to` is given (the one live candidate of the highest priority), the refusal of a
`--to` naming a `candidate.nofailover` host, and what `status` shows of all this (the
schedule, each member's priority and timing, a timing mismatch)."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import Any

from supervisor.cli.exits import EXIT_NO_HOLDER, EXIT_REFUSED, fail
from supervisor.config import Config
from supervisor.lease import LeaseSnapshot, LeaseUnavailable, MemberRow, PostgresLeaseStore
from supervisor.lease.candidates import ScheduleSql, read_op, set_op
from supervisor.lease.members import local_time
from supervisor.node.machine import this_process


def parse_at(text: str) -> datetime:
    """An ISO 8601 time, with an offset or in this host's time zone (argparse type)."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--at {text!r}: expected an ISO 8601 time such as 2026-05-04T02:30 (this "
            "host's time zone) or 2026-05-04T02:30+02:00") from None
    return moment if moment.tzinfo is not None else moment.astimezone()


def add_options(parser: argparse.ArgumentParser) -> None:
    """`--at TIME` and `--cancel` of `handover`."""
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--at", type=parse_at, metavar="TIME",
                      help="hand over at TIME instead of now (ISO 8601, this host's time zone "
                           "or with an offset): stored in the database, shown by `status`; "
                           "carried out within one updateInterval of TIME if a standby can "
                           "take over then, else cancelled")
    when.add_argument("--cancel", action="store_true",
                      help="cancel the handover set with --at")


def nofailover_refusal(members: list[MemberRow], to: str | None) -> str | None:
    """Why `--to` may not name this member: it never takes the lease (or None)."""
    if to is None:
        return None
    for m in members:
        if m.member.machine_name == to and m.fresh and m.member.nofailover:
            return (f"refusing to hand over to {to!r}: it has candidate.nofailover = true, "
                    "so it never takes the lease (kept for manual use)")
    return None


def best_taker(snapshot: LeaseSnapshot, members: list[MemberRow]) -> str | None:
    """The machineName of the one live candidate with the highest priority, or None when
    there is no such one (none, or the highest priority shared: any may take it)."""
    live = [m for m in members if m.fresh and m.member.can_take_over and not m.member.nofailover
            and m.member.instance != snapshot.instance]
    if not live:
        return None
    top = max(m.member.priority for m in live)
    best = [m for m in live if m.member.priority == top]
    return best[0].member.machine_name if len(best) == 1 else None


async def schedule(config: Config, at: datetime | None, to: str | None,
                   members: list[MemberRow], snapshot: LeaseSnapshot | None,
                   timeout: float) -> int:
    """Store (or with `at` None, cancel) a handover set for a time; 0 when stored."""
    if snapshot is None:
        print("corda-ha-supervisor: there is no lease row yet; nothing to schedule",
              file=sys.stderr)
        return EXIT_NO_HOLDER
    if at is not None and at <= snapshot.db_now:
        print(f"corda-ha-supervisor: --at {local_time(at)} has passed (database time "
              f"{local_time(snapshot.db_now)})", file=sys.stderr)
        return EXIT_REFUSED
    names = {m.member.machine_name for m in members}
    if to is not None and to not in names:
        print(f"corda-ha-supervisor: {to!r} is no member of this pair (members: "
              f"{', '.join(sorted(names)) or 'none'})", file=sys.stderr)
        return EXIT_REFUSED
    refusal = nofailover_refusal(members, to)
    if refusal is not None:
        print(f"corda-ha-supervisor: {refusal}", file=sys.stderr)
        return EXIT_REFUSED
    statements = ScheduleSql(config.database.schema, config.database.table)
    store = PostgresLeaseStore(config.database, this_process("handover"),
                               config.lease.wait_interval)
    try:
        await store.call("schedule_handover", set_op(
            config.database.lease_name, at, to, statements), timeout)
    except LeaseUnavailable as e:
        return fail(e, config)
    finally:
        await store.close()
    if at is None:
        print("scheduled handover cancelled")
    else:
        whom = to or "the live candidate of the highest priority then"
        print(f"handover set for {local_time(at)} (in "
              f"{(at - snapshot.db_now).total_seconds():.0f} s by the database clock), to "
              f"{whom}; stored in the database: it survives restarts. The holder hands over "
              "within one updateInterval of it if a standby can take over then, else it "
              "cancels it. `handover --cancel` takes it back.")
    return 0


async def read_schedule(config: Config, timeout: float) -> dict[str, Any] | None:
    """The handover set for a time, for `status` (None when none, or unreadable)."""
    store = PostgresLeaseStore(config.database, this_process("status"),
                               config.lease.wait_interval)
    try:
        at, to = await store.call("read_schedule", read_op(
            config.database.lease_name,
            ScheduleSql(config.database.schema, config.database.table)), timeout)
    except LeaseUnavailable:
        return None
    finally:
        await store.close()
    return None if at is None else {"at": local_time(at), "to": to}


def timing_view(members: list[MemberRow]) -> dict[str, Any]:
    """The distinct timing settings the live members publish, and whether they differ."""
    settings = {m.member.settings for m in members if m.fresh and m.member.settings is not None}
    return {"settings": len(settings), "mismatch": len(settings) > 1}


def candidate_lines(info: dict[str, Any]) -> str:
    """`status` text: each live member's candidacy and timing; the mismatch; the schedule."""
    lines = []
    for m in info.get("members", []):
        if m.get("gone"):
            continue
        timing = m.get("timing") or {}
        lines.append(f"  {m['machine_name']:<16} priority {m.get('priority', 0)}"
                     + ("  NOFAILOVER (never takes the lease)" if m.get("nofailover") else "")
                     + (f"  updateInterval {timing['update_interval']:g} s waitInterval "
                        f"{timing['wait_interval']:g} s margin {timing['margin']:g} s"
                        if timing else "")
                     + f"  version {m.get('version')}")
    timing = info.get("timing", {})
    if timing.get("mismatch"):
        lines.append(f"TIMING MISMATCH: the members publish {timing['settings']} different "
                     "settings (updateInterval, waitInterval, margin, version)")
    scheduled = info.get("scheduled_handover")
    if scheduled:
        lines.append(f"handover scheduled at {scheduled['at']} to "
                     f"{scheduled['to'] or 'the best live candidate'}")
    return "candidates:\n" + "\n".join(lines) if lines else "candidates: none registered"
