"""The chaos suite's renewal-durability check (tests/chaos/durability.py) and the rule
that no node runs past the lease its committed writes gave it (analysis.uncovered)."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from supervisor.config import DatabaseConfig
from tests.chaos.analysis import uncovered
from tests.chaos.checker import NodeRun, RunKey
from tests.chaos.durability import Durability, unseen_windows
from tests.harness.pgserver import PgServer
from tests.harness.renewal_audit import acquire_and_renew

pytestmark = pytest.mark.timeout(60)


def run_of(*segments: tuple[float, float]) -> NodeRun:
    return NodeRun(key=RunKey("a", 1, 1, 3), first=segments[0][0], last=segments[-1][1],
                   segments=segments, started=True, stopped=False, records=9, late=0)


def test_a_run_is_covered_only_within_w_of_a_committed_write() -> None:
    w = 2.0
    assert uncovered(run_of((0.0, 1.9)), [0.0], w) == []
    assert uncovered(run_of((0.0, 3.0)), [0.0, 1.0], w) == []
    assert uncovered(run_of((0.0, 2.5)), [0.0], w) == [(2.0, 2.5)]
    assert uncovered(run_of((0.0, 1.0), (2.0, 5.0)), [0.0, 2.5], w) == [
        (2.0, 2.5), (4.5, 5.0)]
    assert uncovered(run_of((0.0, 1.0)), [], w) == [(0.0, 1.0)]
    # renewals the supervisor logged while its log sink dropped lines cannot be seen
    assert uncovered(run_of((0.0, 5.0)), [0.0], w, [(1.5, 2.0)]) == [(4.0, 5.0)]


def test_dropped_log_lines_make_an_unseen_window() -> None:
    lines = {"a": [{"event": "log_records_dropped", "count": 9,
                    "since": "2026-01-01T00:00:10Z", "timestamp": "2026-01-01T00:00:14Z"},
                   {"event": "lease_renewed"}]}
    wall = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    assert unseen_windows(lines, wall) == {"a": [(10.0, 14.0)]}


def test_writes_acted_on_but_not_committed_are_found_once(
        db_config: DatabaseConfig, pg_server: PgServer) -> None:
    db = dataclasses.replace(db_config, schema=f"du_{uuid.uuid4().hex[:10]}")
    pg_server.execute(f"CREATE SCHEMA {db.schema}")

    instance, epoch, renewed = acquire_and_renew(db)
    lines: list[dict[str, Any]] = [
        {"event": "supervisor_started", "instance": instance},
        {"event": "lease_acquired", "epoch": epoch, "sent_at": 10.0},
        {"event": "lease_renewed", "epoch": epoch, "sent_at": 10.5, "renewed_at": str(renewed)},
        {"event": "lease_renewed", "epoch": epoch, "sent_at": 11.0,
         "renewed_at": "2020-01-01 00:00:00+00:00"},  # never written
    ]
    d = Durability(db.lease_name)
    lost, committed = d.check(pg_server.dsn, {"a": lines}, [])
    assert [(w.epoch, w.sent_at) for w in lost] == [(epoch, 11.0)]
    assert committed == {"a": {epoch: [10.0, 10.5]}}
    lost, _ = d.check(pg_server.dsn, {"a": lines}, [])
    assert lost == [], "a violation is reported once"

    later = Durability(db.lease_name)  # a promotion at 10.8: the write at 11.0 is after it
    lost, committed = later.check(pg_server.dsn, {"a": lines}, [10.8])
    assert [w.sent_at for w in lost] == [11.0]
    earlier = Durability(db.lease_name)  # a promotion after it: unverifiable, not lost
    lost, committed = earlier.check(pg_server.dsn, {"a": lines}, [11.5])
    assert lost == [] and earlier.unverifiable == 1
    assert committed == {"a": {epoch: [10.0, 10.5, 11.0]}}
