"""The lease in PostgreSQL (docs/design.md, "The lease").

Owns: the port the daemon uses (`port.LeaseStore`, its contract) and its adapter
(`store.PostgresLeaseStore`: the lease statements on a connection of their own,
everything else on a side connection; `channel`, `bounded`, `hedge`: a renewal
raced on fresh connections), the listener (`listener`:
LISTEN, the history and member rows), the SQL (`sql`, `schema`), the member registry
(`members`), Corda's lock row (`cordarow`), the database fence (`fence`, `fence_sql`,
`fence_check`, `ownership`), one-shot reads for the operator (`oneshot`) and the
start-up errors an operator can act on (`startup`).

May import: the stdlib, psycopg, `supervisor.config` and `supervisor.core` (values:
the row, identities). Never `node`, `observe`, `daemon` or `cli`.
"""

from supervisor.core.identity import Identity, ProcessRef
from supervisor.core.row import (
    LeaseSnapshot,
    LeaseUnavailable,
    LeaseVersion,
    RenewResult,
)
from supervisor.lease.members import MEMBER_FRESH, MEMBER_INTERVAL, Member, MemberRow
from supervisor.lease.oneshot import read_snapshot, read_state
from supervisor.lease.port import LeaseStore
from supervisor.lease.store import NOTIFY_CHANNEL_DEFAULT, PostgresLeaseStore

__all__ = [
    "MEMBER_FRESH",
    "MEMBER_INTERVAL",
    "NOTIFY_CHANNEL_DEFAULT",
    "Identity",
    "LeaseSnapshot",
    "LeaseStore",
    "LeaseUnavailable",
    "LeaseVersion",
    "Member",
    "MemberRow",
    "PostgresLeaseStore",
    "ProcessRef",
    "RenewResult",
    "read_snapshot",
    "read_state",
]
