"""Corda's own guard kept on, and fast.

Corda Enterprise's `RunOnceService` keeps one row in `node_mutual_exclusion`
(`mutual_exclusion_id` = 'X', `machine_name`, `pid`, `mutual_exclusion_timestamp`,
`version`). A starting node takes the row when it names its own machine, or from
another machine by compare-and-swap on `version` once `CURRENT_TIMESTAMP >
mutual_exclusion_timestamp + waitInterval`; otherwise it sleeps waitInterval and exits
1. So right after a failover or a handover our node would find the old node's row
fresh and waste a start.

Holding the lease does not prove the previous node is dead: a frozen host's node can
continue, refreshing Corda's row every updateInterval, and then Corda's own guard is
exactly what keeps our node from becoming master beside it. So the row is made
takeable (`make_takeable`) only when the old node provably cannot act: in the same
acquisition, after the database fence locked the other host's node role out and ended
its sessions (the daemon checks that before it calls this). Then, in one transaction,
it re-checks our lease (this process, this epoch, not expired, by the database
clock), reads Corda's row, and when it names another machine and is still fresh, sets
its timestamp back by waitInterval (+1 s), conditional on the version it read.
Otherwise the row is only looked at (`look`), to say how long Corda's own rule will
make our node wait.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from psycopg import sql

from supervisor.lease.bounded import Conn

CORDA_TABLE = "node_mutual_exclusion"

Outcome = Literal["made_takeable", "own", "takeable", "no_row", "changed", "not_holder"]


async def make_takeable(conn: Conn, lease_table: sql.Composable, corda_table: sql.Composable,
                        *, lease_name: str, instance: str, epoch: int, machine_name: str,
                        wait_interval: float) -> Outcome:
    """One transaction; what it found or did. Raises psycopg errors (no table: 42P01,
    no privilege: 42501) for the caller to report."""
    wait = timedelta(seconds=wait_interval)
    async with conn.transaction():
        cur = await conn.execute(
            sql.SQL("SELECT 1 FROM {} WHERE lease_name = %s AND instance = %s AND epoch = %s "
                    "AND expires_at > clock_timestamp() FOR SHARE").format(lease_table),
            (lease_name, instance, epoch))
        if await cur.fetchone() is None:
            return "not_holder"
        cur = await conn.execute(
            sql.SQL("SELECT machine_name, version, mutual_exclusion_timestamp + %s "
                    "< clock_timestamp() FROM {} WHERE mutual_exclusion_id = 'X' "
                    "FOR UPDATE").format(corda_table), (wait,))
        row = await cur.fetchone()
        if row is None:
            return "no_row"
        holder, version, takeable = row
        if holder == machine_name:
            return "own"
        if takeable:
            return "takeable"
        cur = await conn.execute(
            sql.SQL("UPDATE {} SET mutual_exclusion_timestamp = clock_timestamp() - %s "
                    "- interval '1 second' WHERE mutual_exclusion_id = 'X' AND version = %s "
                    "RETURNING 1").format(corda_table), (wait, version))
        return "made_takeable" if await cur.fetchone() is not None else "changed"


async def look(conn: Conn, corda_table: sql.Composable, *, machine_name: str,
               wait_interval: float) -> tuple[Literal["no_row", "own", "takeable", "fresh"],
                                              str | None, float | None]:
    """Corda's row as it is, changing nothing: (what it means for our node, the machine
    it names, its age in seconds by the database clock). "fresh": another machine's row
    younger than waitInterval: Corda's guard refuses our node until it is that old.
    Raises psycopg errors (no table: 42P01, no privilege: 42501)."""
    cur = await conn.execute(
        sql.SQL("SELECT machine_name, extract(epoch FROM clock_timestamp() - "
                "mutual_exclusion_timestamp)::float8 FROM {} WHERE mutual_exclusion_id = 'X'")
        .format(corda_table))
    row = await cur.fetchone()
    if row is None:
        return "no_row", None, None
    holder, age = str(row[0]), float(row[1])
    if holder == machine_name:
        return "own", holder, age
    return ("takeable" if age > wait_interval else "fresh"), holder, age
