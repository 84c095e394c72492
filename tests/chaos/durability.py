"""The renewal-durability invariant in the chaos suite: every lease write a supervisor
acted on was committed, whatever the fault.

The chaos database audits every write of its lease table (tests/harness/renewal_audit.py: a
trigger in the writing transaction, so the audit holds exactly the committed writes).
After each episode, `Durability.check` reads the primary's audit and compares it with
what each supervisor logged: `lease_acquired` (the epoch) and `lease_renewed` (the
epoch and the row's new `renewed_at`). A logged write that is not there is a
violation. One exception, reported as a figure: a write logged before a promotion
of the replica may have been committed on the old primary and lost with it
(asynchronous replication); the old primary is gone, so it cannot be verified.

`Durability.check` also returns, per host and epoch, the send times of the
*committed* writes (and of the unverifiable ones): the analysis then holds every
node run to the lease those writes gave it (tests/chaos/analysis.py, "outlived its
lease").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tests.harness.renewal_audit import AUDIT, acted_on, committed_writes

#: Per host, per epoch: the send times (monotonic) of the committed acquisition and
#: renewals of that epoch.
Committed = dict[str, dict[int, list[float]]]
#: Per host: the windows (monotonic) in which its supervisor dropped log lines (a stalled
#: log sink): its writes there cannot be seen, so they cannot be held against it.
Unseen = dict[str, list[tuple[float, float]]]


def unseen_windows(hosts_lines: Mapping[str, Iterable[Mapping[str, Any]]],
                   wall_offset: float) -> Unseen:
    """From each `log_records_dropped` report: [since, reported], in monotonic seconds
    (`wall_offset`: wall clock minus monotonic, measured by the runner)."""
    out: Unseen = {}
    for host, lines in hosts_lines.items():
        for e in lines:
            if e.get("event") != "log_records_dropped" or not e.get("since"):
                continue
            lo = datetime.fromisoformat(str(e["since"]).replace("Z", "+00:00")).timestamp()
            hi = datetime.fromisoformat(str(e["timestamp"]).replace("Z", "+00:00")).timestamp()
            out.setdefault(host, []).append((lo - wall_offset, hi - wall_offset))
    return out


@dataclass(frozen=True)
class Write:
    """One lease write a supervisor acted on, as its log says."""

    host: str
    instance: str  # the supervisor process that wrote it
    epoch: int
    sent_at: float
    renewed_at: datetime | None  # None: an acquisition (found by its epoch)

    def __str__(self) -> str:
        what = "acquisition" if self.renewed_at is None else f"renewal at {self.renewed_at}"
        return f"{self.host}: {what} of epoch {self.epoch} (sent at {self.sent_at:.3f})"


def logged_writes(host: str, lines: Iterable[Mapping[str, Any]]) -> list[Write]:
    return [Write(host, instance, epoch, sent_at, at)
            for instance, epoch, at, sent_at in acted_on(lines) if sent_at is not None]


@dataclass
class Durability:
    """Checks one chaos run's lease `lease_name`; see the module docstring."""

    lease_name: str
    reported: set[Write] = field(default_factory=set)
    unverifiable: int = 0

    def check(self, dsn: str, hosts_lines: Mapping[str, Iterable[Mapping[str, Any]]],
              promoted_at: Iterable[float]) -> tuple[list[Write], Committed]:
        """(writes acted on but not committed, newly found; the committed writes)."""
        audit = committed_writes(dsn, self.lease_name)
        if audit is None:
            raise AssertionError(f"the chaos database has no audit table {AUDIT}")
        last_promotion = max(promoted_at, default=None)
        lost: list[Write] = []
        committed: Committed = {}
        for host, lines in hosts_lines.items():
            for w in logged_writes(host, lines):
                found = (w.instance, w.epoch, w.renewed_at) in audit
                lost_server = last_promotion is not None and w.sent_at < last_promotion
                if found or lost_server:
                    # a write that may have been committed on a lost primary gives its
                    # node the benefit of the doubt (its supervisor acted on it)
                    committed.setdefault(host, {}).setdefault(w.epoch, []).append(w.sent_at)
                if found or w in self.reported:
                    continue
                self.reported.add(w)
                if lost_server:
                    self.unverifiable += 1
                else:
                    lost.append(w)
        for by_epoch in committed.values():
            for times in by_epoch.values():
                times.sort()
        return lost, committed
