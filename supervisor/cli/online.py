"""`check-config --online`: what the supervisor will meet in the database, asked before
it runs, changing nothing: the login (user, password, TLS, pg_hba), every privilege
it needs (`supervisor.lease.privileges`) and, with `fencing`, the fencing check the
daemon makes. Each finding is printed to stderr; the status is 0 (all well), 78 (the
first kind of problem an operator or a DBA must fix) or 69 (no database to ask)."""

from __future__ import annotations

import sys

from supervisor.cli import operator
from supervisor.cli.exits import EX_CONFIG, EX_UNAVAILABLE, fail
from supervisor.config import Config
from supervisor.core.state import Timing
from supervisor.lease import LeaseUnavailable, replication


async def check(config: Config) -> int:
    db = config.database
    try:
        missing = await operator.missing_privileges(config)
    except LeaseUnavailable as e:
        return fail(e, config)
    print(f"database: login as database.user = {db.supervisor_role} accepted "
          f"({db.conninfo}, {db.password_text})", file=sys.stderr)
    blocking = [m for m in missing if m.blocking]
    for m in missing:
        kind = "configuration error" if m.blocking else "warning"
        print(f"corda-ha-supervisor: {kind}: {m}", file=sys.stderr)
    if blocking:
        return EX_CONFIG
    print("database: every privilege the supervisor needs is granted", file=sys.stderr)
    unreachable = await _replication(config)
    if unreachable is not None:
        print(f"corda-ha-supervisor: database unavailable: {unreachable}", file=sys.stderr)
        return EX_UNAVAILABLE
    if not config.fencing.enabled:
        return 0
    problem, unreachable = await operator.fencing_check(config)
    if unreachable is not None:
        print(f"corda-ha-supervisor: database unavailable: {unreachable}", file=sys.stderr)
        return EX_UNAVAILABLE
    blocking_problem = report_fencing(config, problem)
    if blocking_problem is None:
        return 0
    print(f"corda-ha-supervisor: configuration error: fencing: {blocking_problem}",
          file=sys.stderr)
    return EX_CONFIG


def report_fencing(config: Config, problem: str | None) -> str | None:
    """Print the fencing check's answer (ready, or a warning when `fencing.required` is
    false); the problem when it must fail the check, else None."""
    if problem is None:
        print(f"fencing: ready (node role {config.fencing.node_role} bound to lease "
              f"{config.database.lease_name!r} on machine {config.lease.machine_name!r})",
              file=sys.stderr)
        return None
    if not config.fencing.required:
        print(f"warning: fencing: {problem} (fencing.required = false: the node would "
              "start unfenced)", file=sys.stderr)
        return None
    return problem


async def _replication(config: Config) -> str | None:
    """Print what a failover of the lease database can cost (a warning where it could
    cost two nodes); the error when the database cannot be read, else None."""
    try:
        settings = await operator.replication_settings(config)
    except LeaseUnavailable as e:
        return str(e)
    p = replication.assess(settings, replication.holder_slack(Timing.from_config(config)))
    kind = "warning: " if p.two_nodes else ""
    print(f"{kind}database failover: {p.message}", file=sys.stderr)
    return None
