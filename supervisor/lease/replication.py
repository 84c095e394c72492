"""What a failover of the lease database can cost, read from its replication settings.

The supervisor sends every lease statement with `synchronous_commit = on`
(`bounded.py`), so its writes are as durable as the server's replication makes them.
`read(conn)` asks the session's `synchronous_commit`, the server's
`synchronous_standby_names` and how many standbys are synchronous right now
(`pg_stat_replication`, readable in full only with `pg_read_all_stats`); `assess`
turns that into a `Protection`: one word (`synchronous`, `asynchronous` or
`standalone`) and what a
failover of that database can and cannot cost the pair. Both the daemon (at start,
the `replication_protection` event) and `check-config --online` print it.

The rules:

- **synchronous** (a standby is named in `synchronous_standby_names` and the session
  commits at `on`, `remote_write` or `remote_apply`): an acknowledged lease write is on
  a synchronous standby too, so a failover to it loses none, and an old primary cut off
  from its synchronous standby cannot acknowledge a renewal (it waits): the database
  never lets two nodes run. With no synchronous standby connected, lease writes wait:
  renewals fail and the holder's node stops at its deadline (time without a node).
- **standalone** (nothing named, no standby connected): nothing to promote that could
  have lost writes; said, not warned.
- **asynchronous** (standbys connected but nothing named, or a session level of
  `local`/`off`): a failover may lose the last lease writes, so the new primary may show
  an old row (the server-identity rule makes every host watch a newly answering server
  for W first: time without a node, not a second node); but an old primary that still
  accepts writes after another was promoted (partitioned, not yet demoted) lets the
  holder renew there while a standby takes over on the new one: **two nodes**. A
  warning.

This is a snapshot: Patroni's `synchronous_mode` (not `_strict`) empties
`synchronous_standby_names` while no standby can be synchronous.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg.rows import TupleRow

from supervisor.core.state import Timing

Conn = psycopg.AsyncConnection[TupleRow]

#: session levels at which a commit waits for the synchronous standbys
SYNC_LEVELS = ("on", "remote_write", "remote_apply")

_QUERY = """
SELECT current_setting('synchronous_commit'),
       current_setting('synchronous_standby_names'),
       (SELECT count(*) FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')),
       (SELECT count(*) FROM pg_stat_replication WHERE sync_state IS NULL),
       (SELECT count(*) FROM pg_stat_replication)
"""


@dataclass(frozen=True)
class Settings:
    """The replication settings as the lease session sees them."""

    synchronous_commit: str
    synchronous_standby_names: str
    sync_standbys: int | None  # connected synchronous standbys; None: not visible
    standbys: int = 0  # connected streaming standbys of any kind


@dataclass(frozen=True)
class Protection:
    """What a failover of the lease database can cost: `kind` is `synchronous`,
    `asynchronous` or `standalone`; `two_nodes` says whether the database could let two nodes run;
    `message` says it for the operator."""

    kind: str
    two_nodes: bool
    settings: Settings
    message: str


def holder_slack(t: Timing) -> float:
    """W - M - U - G: how long the database may be away (from the moment a renewal is
    due) before the holder's node is stopped."""
    return t.wait_interval - t.margin - t.update_interval - t.loss_grace


async def read(conn: Conn) -> Settings:
    """The settings (one statement, changes nothing)."""
    cur = await conn.execute(_QUERY)
    row = await cur.fetchone()
    assert row is not None
    level, names, sync, hidden, standbys = row
    return Settings(synchronous_commit=str(level), synchronous_standby_names=str(names),
                    sync_standbys=None if hidden else int(sync), standbys=int(standbys))


def assess(s: Settings, slack: float) -> Protection:
    """See the module docstring. `slack` is the holder's W - M - U - G (seconds): how
    long a database may be away without the running node being stopped."""
    named = s.synchronous_standby_names.strip()
    said = (f"synchronous_commit = {s.synchronous_commit}, "
            f"synchronous_standby_names = {named!r}")
    if named and s.synchronous_commit in SYNC_LEVELS:
        connected = ("" if s.sync_standbys is None
                     else f", {s.sync_standbys} synchronous standby(s) connected")
        message = (f"synchronous replication ({said}{connected}): a failover to a "
                   "synchronous standby loses no acknowledged lease write, and an old "
                   "primary cut off from it cannot acknowledge a renewal: the database "
                   "never lets two nodes run. A failover or switchover shorter than the "
                   f"holder's slack W - M - U - G = {slack:.3g} s does not stop the node; "
                   "a longer one stops it and the pair has no node until a host takes "
                   "over. This is a snapshot: Patroni's synchronous_mode (not _strict) "
                   "turns replication asynchronous while no standby can be synchronous")
        if s.sync_standbys == 0:
            message += ("; no synchronous standby is connected now: lease writes wait, "
                        "so renewals fail and the holder's node stops at its deadline")
        return Protection("synchronous", False, s, message)
    if not named and s.standbys == 0:
        return Protection("standalone", False, s, (
            f"no streaming standby ({said}, none connected): no replica of this server can "
            "be promoted with lost writes; a failover the server cannot see (storage "
            "level, a managed service) must keep every acknowledged write"))
    why = ("no standby is named" if not named
           else f"the lease session commits at {s.synchronous_commit}")
    message = (f"asynchronous replication ({said}: {why}): a failover may lose the last "
               "lease writes, so the new primary may show an old row (every host then "
               "watches the newly answering server for W before taking the lease: time "
               "without a node); and an old primary that still accepts writes after "
               "another was promoted (partitioned, not yet demoted) lets the holder renew "
               "there while a standby takes over on the new one: two nodes. Make the "
               "replication synchronous (Patroni: synchronous_mode: true, better "
               "synchronous_mode_strict: true; or synchronous_standby_names)")
    return Protection("asynchronous", True, s, message)
