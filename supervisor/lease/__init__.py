"""The lease in PostgreSQL (design.md, "The lease").

- `model`: what the store returns (`LeaseSnapshot`, `LeaseVersion`, errors);
- `sql`: the table's DDL and statements;
- `bounded`: database calls under a timeout the supervisor owns;
- `store`: `PostgresLeaseStore`, the operations and their contracts.
"""

from supervisor.identity import Identity, ProcessRef
from supervisor.lease.model import (
    LeaseSnapshot,
    LeaseUnavailable,
    LeaseVersion,
    RenewResult,
)
from supervisor.lease.store import NOTIFY_CHANNEL_DEFAULT, PostgresLeaseStore, read_snapshot

__all__ = [
    "NOTIFY_CHANNEL_DEFAULT",
    "Identity",
    "LeaseSnapshot",
    "LeaseUnavailable",
    "LeaseVersion",
    "PostgresLeaseStore",
    "ProcessRef",
    "RenewResult",
    "read_snapshot",
]
