"""`handover`'s candidate choices, pure: `--at` parsing (an offset kept, a local time
given this host's zone, nonsense refused naming ISO 8601), the taker without `--to` (the
one live candidate of the highest priority; none when that priority is shared), and the
refusal of a `--to` naming a nofailover member."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

import pytest

from supervisor.cli.handover import best_taker, nofailover_refusal, parse_at, timing_view
from supervisor.core.row import LeaseSnapshot
from supervisor.lease.members import MEMBER_FRESH, Member, MemberRow

NOW = datetime(2026, 5, 4, 2, 30, tzinfo=UTC)
HELD = LeaseSnapshot(lease_name="l", exists=True, holder="a", holder_host="h", holder_pid=1,
                     instance="i-a", epoch=3, acquired_at=NOW, renewed_at=NOW,
                     expires_at=NOW + timedelta(seconds=2), handover_requested_at=None,
                     db_now=NOW, expired=False)


def row(name: str, priority: int = 0, *, can: bool = True, nofailover: bool = False,
        age: float = 0.5, timing: tuple[int, int, int] = (500, 2000, 200)) -> MemberRow:
    return MemberRow(Member(instance=f"i-{name}", machine_name=name, machine_identity="m",
                            host="h", pid=1, state="standby", can_take_over=can, reason="",
                            version="1", priority=priority, nofailover=nofailover,
                            timing_ms=timing), started_at=NOW, last_seen_age=age)


def test_at_with_an_offset_and_in_local_time() -> None:
    assert parse_at("2026-05-04T02:30+02:00") == datetime(2026, 5, 4, 0, 30, tzinfo=UTC)
    local = parse_at("2026-05-04T02:30")
    assert local.tzinfo is not None
    assert local == datetime(2026, 5, 4, 2, 30).astimezone()
    with pytest.raises(argparse.ArgumentTypeError, match="ISO 8601"):
        parse_at("tomorrow")


def test_the_taker_is_the_one_live_candidate_of_the_highest_priority() -> None:
    members = [row("a", 99, can=False), row("b", 1), row("c", 5),
               row("d", 9, nofailover=True), row("e", 50, age=MEMBER_FRESH + 1)]
    assert best_taker(HELD, members) == "c"
    assert best_taker(HELD, [row("b", 5), row("c", 5)]) is None  # shared: any may
    assert best_taker(HELD, [row("b", can=False)]) is None


def test_a_nofailover_member_is_refused_with_the_reason() -> None:
    members = [row("b"), row("c", nofailover=True, can=False)]
    refusal = nofailover_refusal(members, "c")
    assert refusal is not None and "candidate.nofailover = true" in refusal
    assert nofailover_refusal(members, "b") is None
    assert nofailover_refusal(members, None) is None


def test_timing_view_counts_the_live_members_settings() -> None:
    same = [row("a"), row("b")]
    assert timing_view(same) == {"settings": 1, "mismatch": False}
    assert timing_view([*same, row("c", timing=(500, 3000, 200))]) == {
        "settings": 2, "mismatch": True}
    gone = row("c", timing=(500, 3000, 200), age=MEMBER_FRESH + 1)
    assert timing_view([*same, gone]) == {"settings": 1, "mismatch": False}
