"""The lease in PostgreSQL (design.md, "The lease").

- `model`: what the store returns (`LeaseSnapshot`, `LeaseVersion`, errors);
- `sql`: the table's DDL and statements;
- `bounded`: database calls under a timeout the supervisor owns;
- `members`: who contends for the lease (an aid to operators);
- `store`: `PostgresLeaseStore`, the operations and their contracts.
"""

from supervisor.core.identity import Identity, ProcessRef
from supervisor.core.row import (
    LeaseSnapshot,
    LeaseUnavailable,
    LeaseVersion,
    RenewResult,
)
from supervisor.lease.members import MEMBER_FRESH, MEMBER_INTERVAL, Member, MemberRow
from supervisor.lease.store import (
    NOTIFY_CHANNEL_DEFAULT,
    PostgresLeaseStore,
    read_snapshot,
    read_state,
)

__all__ = [
    "MEMBER_FRESH",
    "MEMBER_INTERVAL",
    "NOTIFY_CHANNEL_DEFAULT",
    "Identity",
    "LeaseSnapshot",
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
