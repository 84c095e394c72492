"""How the operator's commands show the lease, the members, this host's supervisor and
the fence: text for people (times in this host's time zone, ISO 8601; durations to the
millisecond) and the dicts behind `--json`. Pure functions of what was read."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from supervisor.lease import LeaseSnapshot, MemberRow
from supervisor.lease.members import MEMBER_RETENTION, local_time

RETENTION_TEXT = f"{MEMBER_RETENTION.total_seconds() / 3600:g} h"
_UP_SINCE = re.compile(r"up since (\d+(?:\.\d+)?)")


def ago(seconds: float) -> str:
    """`4 min 12 s`, `3 h 05 min`, `2.5 s`: how long ago, for people."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def server_text(server: object) -> str:
    """The server id (`host:port up since <epoch seconds> timeline N`) with its start
    time as a local ISO time."""
    text = str(server)
    return _UP_SINCE.sub(lambda m: "up since " + str(local_time(
        datetime.fromtimestamp(float(m.group(1)), UTC))), text)


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
        "acquired_at": local_time(snapshot.acquired_at),
        "handover_requested": (snapshot.handover_requested_at is not None
                               and snapshot.holder is not None),
        "paused": snapshot.paused,
        "members": rows,
    }



def local_lines(view: dict[str, Any] | None, error: str | None) -> str:
    if view is None:
        return f"this host: {error}"
    lines = [f"this host: {view.get('machine_name')} state={view.get('state')} "
             f"epoch={view.get('epoch')}"]
    if "can_take_over" in view:
        can = "yes" if view["can_take_over"] else "NO"
        lines.append(f"  could take over now: {can} ({view.get('can_take_over_reason')})")
    db = view.get("database")
    if isinstance(db, dict):
        if db.get("missing_privilege"):
            lines.append(f"  database: answers, but REFUSES this supervisor for a missing "
                         f"privilege: {db['missing_privilege']}")
        elif db.get("reachable"):
            lines.append(f"  database: reachable (server {server_text(db.get('server'))})")
        else:
            lines.append(f"  database: UNREACHABLE for {db.get('failing_for')} s, "
                         f"{db.get('failures_in_a_row')} failures in a row; last error: "
                         f"{db.get('last_error')}")
    if view.get("machine_name_conflict"):
        lines.append(f"  CONFIGURATION ERROR: {view['machine_name_conflict']}")
    return "\n".join(lines)


def member_lines(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "members: none registered"
    lines = ["members:"]
    for m in rows:
        where = f"  {m['machine_name']:<16} host {m['host']} pid {m['pid']} "
        if m.get("gone"):
            lines.append(f"{where}GONE: last seen {m.get('last_seen')} "
                         f"({ago(m['last_seen_age'])} ago; removed after "
                         f"{RETENTION_TEXT} unseen)")
            continue
        role = "holder" if m.get("holder") else ("could take over" if m["can_take_over"]
                                                 else f"cannot take over: {m['reason']}")
        lines.append(f"{where}state={m['state']} seen {m['last_seen_age']:.1f} s ago  {role}")
    return "\n".join(lines)


def fencing_lines(info: dict[str, Any]) -> str:
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
