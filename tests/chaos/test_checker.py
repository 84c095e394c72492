"""Unit tests for tests/chaos/checker.py on synthetic heartbeat records."""

from __future__ import annotations

import itertools
import json
import math
import statistics
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.chaos import hb_node
from tests.chaos.checker import (
    Availability,
    EpisodeResult,
    Fault,
    Kind,
    NodeRun,
    Overlap,
    Record,
    RunKey,
    availability,
    availability_detail,
    build_runs,
    check_episode,
    failover_times,
    format_table,
    intersect,
    load,
    load_jsonl,
    merge_intervals,
    overlaps,
    percentile,
    summarise,
    to_json,
)

pytestmark = pytest.mark.timeout(60)

BEAT = 0.015


def beats(host: str, pid: int, start: float, end: float, *, epoch: int | None = 1,
          stop: bool = True, started: bool = True, step: float = BEAT,
          run_id: str = "r") -> list[Record]:
    """A run's records: start at `start`, beats every `step` up to `end`, stop at `end`."""
    out: list[Record] = []
    if started:
        out.append(Record(host, pid, epoch, "start", start, run_id))
    n = int((end - start) / step + 1e-9)
    out += [Record(host, pid, epoch, "beat", start + i * step, run_id) for i in range(1, n + 1)]
    if stop:
        out.append(Record(host, pid, epoch, "stop", end, run_id))
    return out


def one(runs: Sequence[NodeRun]) -> NodeRun:
    assert len(runs) == 1
    return runs[0]


# ---------------------------------------------------------------- runs


def test_graceful_run_is_alive_from_start_to_stop() -> None:
    run = one(build_runs(beats("a", 10, 1.0, 2.0)))
    assert run.key == RunKey("r", "a", 10, 1)
    assert run.started and run.stopped
    assert run.segments == ((1.0, 2.0),)
    assert (run.first, run.last) == (1.0, 2.0)


def test_missing_stop_record_adds_one_tolerance() -> None:
    recs = beats("a", 10, 1.0, 2.0, stop=False)
    run = one(build_runs(recs, tolerance=0.02))
    assert not run.stopped
    assert run.alive_until == pytest.approx(recs[-1].mono + 0.02)


def test_missing_start_record_starts_at_first_beat() -> None:
    run = one(build_runs(beats("a", 10, 1.0, 2.0, started=False)))
    assert not run.started
    assert run.alive_from == pytest.approx(1.0 + BEAT)


def test_long_gap_splits_run_and_infinite_gap_does_not() -> None:
    recs = [*beats("a", 1, 0.0, 1.0, stop=False), Record("a", 1, 1, "beat", 4.0, "r")]
    split = one(build_runs(recs, tolerance=0.02, max_gap=0.5))
    assert len(split.segments) == 2
    assert split.segments[1] == pytest.approx((4.0, 4.02))
    whole = one(build_runs(recs, tolerance=0.02, max_gap=math.inf))
    assert whole.segments[0] == pytest.approx((0.0, 4.02))
    assert len(whole.segments) == 1


def test_gap_up_to_max_gap_is_joined() -> None:
    recs = [Record("a", 1, 1, "beat", t, "r") for t in (0.0, 0.5, 1.0)]
    assert len(one(build_runs(recs, max_gap=0.5)).segments) == 1
    assert len(one(build_runs(recs, max_gap=0.49)).segments) == 3


def test_duplicates_and_order_do_not_matter() -> None:
    recs = beats("a", 1, 0.0, 1.0) + beats("b", 2, 2.0, 3.0)
    late = [Record(r.host, r.pid, r.epoch, r.kind, r.mono, r.run_id,
                   db_ts=datetime(2030, 1, 1, tzinfo=UTC), late=True) for r in recs[5:20]]
    shuffled = list(reversed(recs)) + late  # late copies: same records flushed again
    a = build_runs(recs)
    b = build_runs(shuffled)
    assert [(r.key, r.segments, r.records) for r in a] == [
        (r.key, r.segments, r.records) for r in b]


def test_late_rows_use_mono_not_db_ts() -> None:
    # Rows buffered during an outage and flushed later: db_ts is the flush time.
    flush = datetime(2030, 1, 1, tzinfo=UTC)
    recs = beats("a", 1, 0.0, 3.0)
    recs = [Record(r.host, r.pid, r.epoch, r.kind, r.mono, r.run_id, db_ts=flush,
                   late=1.0 <= r.mono < 2.0) for r in recs]
    run = one(build_runs(recs))
    assert run.segments == ((0.0, 3.0),)
    assert run.late == sum(1 for r in recs if r.late) > 0


def test_pid_and_epoch_separate_runs() -> None:
    recs = (beats("a", 1, 0.0, 1.0, epoch=1) + beats("a", 2, 2.0, 3.0, epoch=2)
            + beats("a", 2, 4.0, 5.0, epoch=3))
    runs = build_runs(recs)
    assert [(r.pid, r.epoch) for r in runs] == [(1, 1), (2, 2), (2, 3)]


def test_bad_parameters_rejected() -> None:
    with pytest.raises(ValueError):
        build_runs([], tolerance=-1)
    assert build_runs([]) == []


# ---------------------------------------------------------------- intervals


def test_merge_and_intersect() -> None:
    assert merge_intervals([(3, 4), (0, 1), (1, 2), (5, 5)]) == [(0, 2), (3, 4)]
    assert intersect([(0, 2), (3, 5)], [(1, 4)]) == [(1, 2), (3, 4)]
    assert intersect([(0, 1)], [(1, 2)]) == []
    assert intersect([(0, 1), (1, 2)], [(0.5, 1.5)]) == [(0.5, 1.5)]


# ---------------------------------------------------------------- overlaps


def test_clean_failover_has_no_overlap() -> None:
    runs = build_runs(beats("a", 1, 0.0, 1.0, stop=False) + beats("b", 2, 3.0, 4.0))
    assert overlaps(runs) == []


def test_touching_intervals_do_not_overlap() -> None:
    runs = build_runs(beats("a", 1, 0.0, 1.0) + beats("b", 2, 1.0, 2.0))
    assert runs[0].alive_until == runs[1].alive_from == 1.0
    assert overlaps(runs) == []


def test_sigkilled_node_is_assumed_alive_for_one_tolerance() -> None:
    recs = beats("a", 1, 0.0, 1.0, stop=False) + beats("b", 2, 1.005, 2.0)
    last = max(r.mono for r in recs if r.host == "a")
    found = overlaps(build_runs(recs, tolerance=0.02))
    assert len(found) == 1
    assert found[0].start == pytest.approx(1.005)
    assert found[0].end == pytest.approx(last + 0.02)
    assert not found[0].same_host
    assert overlaps(build_runs(recs, tolerance=0.0)) == []


def test_cross_host_overlap_measured() -> None:
    runs = build_runs(beats("a", 1, 0.0, 2.0) + beats("b", 2, 1.5, 3.0))
    (o,) = overlaps(runs)
    assert (o.a.host, o.b.host) == ("a", "b")
    assert o.duration_ms == pytest.approx(500.0)
    assert not o.same_host


def test_same_host_restart_without_overlap() -> None:
    runs = build_runs(beats("a", 1, 0.0, 1.0, stop=False) + beats("a", 2, 1.2, 2.0, epoch=1))
    assert overlaps(runs) == []


def test_same_host_overlap_of_two_pids_reported() -> None:
    runs = build_runs(beats("a", 1, 0.0, 1.0) + beats("a", 2, 0.9, 2.0))
    (o,) = overlaps(runs)
    assert o.same_host
    assert o.duration_ms == pytest.approx(100.0)


def test_frozen_host_overlap_is_only_the_beats_after_sigcont() -> None:
    # a is frozen at 1.0 (SIGSTOP), b takes over at 3.0; a gets SIGCONT at 5.0 and
    # beats twice before the guard kills it.
    recs = (beats("a", 1, 0.0, 1.0, stop=False)
            + [Record("a", 1, 1, "beat", t, "r") for t in (5.0, 5.01)]
            + beats("b", 2, 3.0, 6.0))
    (o,) = overlaps(build_runs(recs, tolerance=0.02))
    assert (o.start, o.end) == pytest.approx((5.0, 5.03))
    # Without gap splitting the whole freeze would count.
    (whole,) = overlaps(build_runs(recs, tolerance=0.02, max_gap=math.inf))
    assert whole.duration_ms == pytest.approx(2030.0)


def test_two_separate_overlaps_between_one_pair() -> None:
    recs = [*beats("a", 1, 0.0, 1.0, stop=False), Record("a", 1, 1, "beat", 5.0, "r"),
            *beats("b", 2, 0.5, 6.0)]
    found = overlaps(build_runs(recs))
    assert len(found) == 2
    assert found[0].start < found[1].start


def test_three_runs_pairwise_overlaps() -> None:
    recs = beats("a", 1, 0.0, 3.0) + beats("b", 2, 1.0, 4.0) + beats("c", 3, 2.0, 5.0)
    found = overlaps(build_runs(recs))
    assert sorted((o.a.host, o.b.host) for o in found) == [("a", "b"), ("a", "c"), ("b", "c")]


def test_different_chaos_runs_are_not_compared() -> None:
    recs = beats("a", 1, 0.0, 2.0, run_id="x") + beats("b", 2, 0.0, 2.0, run_id="y")
    assert overlaps(build_runs(recs)) == []


# ---------------------------------------------------------------- availability


def test_availability_exactly_one_alive() -> None:
    runs = build_runs(beats("a", 1, 0.0, 4.0) + beats("b", 2, 6.0, 10.0))
    d = availability_detail(runs, [(0.0, 10.0)])
    assert d.window_s == pytest.approx(10.0)
    assert d.one_s == pytest.approx(8.0)
    assert d.none_s == pytest.approx(2.0)
    assert d.many_s == 0.0
    assert availability(runs, [(0.0, 10.0)]) == pytest.approx(0.8)


def test_availability_overlap_is_not_available_and_windows_are_merged() -> None:
    runs = build_runs(beats("a", 1, 0.0, 6.0) + beats("b", 2, 4.0, 10.0))
    d = availability_detail(runs, [(0.0, 5.0), (3.0, 10.0), (20.0, 22.0)])
    assert d.window_s == pytest.approx(12.0)
    assert d.many_s == pytest.approx(2.0)
    assert d.one_s == pytest.approx(8.0)
    assert d.none_s == pytest.approx(2.0)


def test_availability_only_counts_inside_windows() -> None:
    runs = build_runs(beats("a", 1, 0.0, 10.0))
    assert availability(runs, [(2.0, 3.0)]) == pytest.approx(1.0)
    assert availability([], [(2.0, 3.0)]) == 0.0
    assert math.isnan(availability(runs, []))


def test_availability_frozen_gap_counts_as_down() -> None:
    recs = (beats("a", 1, 0.0, 1.0, stop=False)
            + [Record("a", 1, 1, "beat", t, "r") for t in (3.0, 3.015)]
            + beats("a", 1, 3.03, 4.0))
    runs = build_runs(recs, tolerance=0.02)
    d = availability_detail(runs, [(0.0, 4.0)])
    last = max(r.mono for r in recs if r.mono < 2.0)  # 0.99: the last beat before the freeze
    assert d.none_s == pytest.approx(3.0 - (last + 0.02), abs=1e-6)


# ---------------------------------------------------------------- failover


def test_failover_time_to_first_record_of_next_run() -> None:
    runs = build_runs(beats("a", 1, 0.0, 1.0, stop=False) + beats("b", 2, 3.2, 4.0)
                      + beats("a", 3, 3.5, 4.0))
    assert failover_times(runs, [Fault("kill-node", 1.0, 1.0, "a")]) == [pytest.approx(2.2)]


def test_failover_none_when_node_survives_and_until_bounds_search() -> None:
    runs = build_runs(beats("a", 1, 0.0, 10.0) + beats("b", 2, 20.0, 21.0))
    faults = [Fault("blackhole-short", 2.0, 2.5, "a", until=10.0),
              Fault("blackhole-short", 2.0, 2.5, "a"),
              Fault("x", 0.0, 0.0)]  # a run beginning exactly at the fault does not count
    assert failover_times(runs, faults) == [None, pytest.approx(18.0), pytest.approx(20.0)]


def test_check_episode_combines_everything() -> None:
    runs = build_runs(beats("a", 1, 0.0, 1.0, stop=False) + beats("b", 2, 3.0, 6.0))
    res = check_episode(runs, Fault("kill-supervisor", 1.0, 1.0, "a"), [(0.0, 6.0)])
    assert res.fault == "kill-supervisor"
    assert res.overlaps == ()
    assert len(res.failover) == 1
    assert res.failover[0] == pytest.approx(2.0)
    a_until = runs[0].alive_until  # last beat (0.99) + tolerance
    assert res.availability.ratio == pytest.approx((a_until + 3.0) / 6.0)
    with pytest.raises(ValueError):
        check_episode(runs, [], [])


# ---------------------------------------------------------------- percentiles


def test_percentile_known_values() -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == pytest.approx(2.5)
    assert percentile([1.0, 2.0, 3.0, 4.0], 95) == pytest.approx(3.85)
    assert percentile([7.0], 95) == 7.0
    assert percentile(range(101), 95) == pytest.approx(95.0)
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@given(st.lists(finite, min_size=1, max_size=50), st.floats(0, 100), st.floats(0, 100))
def test_percentile_properties(xs: list[float], q1: float, q2: float) -> None:
    lo, hi = sorted((q1, q2))
    assert min(xs) <= percentile(xs, lo) <= percentile(xs, hi) + 1e-6 <= max(xs) + 1e-6
    assert percentile(xs, 0) == min(xs)
    assert percentile(xs, 100) == max(xs)


@given(st.lists(finite, min_size=2, max_size=50))
def test_percentile_matches_statistics_inclusive(xs: list[float]) -> None:
    cuts = statistics.quantiles(xs, n=100, method="inclusive")
    for q in (1, 25, 50, 95, 99):
        assert percentile(xs, q) == pytest.approx(cuts[q - 1], rel=1e-9, abs=1e-6)


# ---------------------------------------------------------------- property: brute force


def _brute_alive(recs: list[Record], s: float, tol: float, gap: float) -> bool:
    """Independent statement of the alive rule (see the checker's docstring)."""
    ms = sorted(recs, key=lambda r: r.mono)
    stop_at = max((r.mono for r in ms if r.kind == "stop"), default=math.inf)
    if s >= stop_at and all(r.mono <= stop_at for r in ms):
        return False  # nothing runs after the stop record
    for r in ms:
        if r.mono <= s < r.mono + (0 if r.kind == "stop" else tol):
            return True
    return any(q.mono - p.mono <= gap and p.mono <= s < q.mono for p, q in itertools.pairwise(ms))


@st.composite
def synthetic_runs(draw: st.DrawFn) -> list[Record]:
    """Up to 4 runs on 2 hosts; records at integer times 0..60 (so sums are exact)."""
    out: list[Record] = []
    for pid in range(1, draw(st.integers(1, 4)) + 1):
        host = draw(st.sampled_from(["a", "b"]))
        times = sorted(draw(st.sets(st.integers(0, 60), min_size=1, max_size=15)))
        kinds: list[Kind] = ["beat"] * len(times)
        if draw(st.booleans()):
            kinds[0] = "start"
        if len(times) > 1 and draw(st.booleans()):
            kinds[-1] = "stop"
        out += [Record(host, pid, 1, k, float(t), "r") for k, t in zip(kinds, times, strict=True)]
    return out


@settings(max_examples=150, deadline=None)
@given(synthetic_runs(), st.integers(0, 3), st.integers(0, 5),
       st.lists(st.tuples(st.integers(0, 70), st.integers(0, 10)), max_size=3))
def test_overlaps_and_availability_match_brute_force(
        recs: list[Record], tol: int, gap: int, wins: list[tuple[int, int]]) -> None:
    runs = build_runs(recs, tolerance=float(tol), max_gap=float(gap))
    by_pid: dict[int, list[Record]] = {}
    for r in recs:
        by_pid.setdefault(r.pid, []).append(r)
    windows = [(float(a), float(a + n)) for a, n in wins]
    found = overlaps(runs)
    union = merge_intervals((o.start, o.end) for o in found)
    d = availability_detail(runs, windows)
    expect_many = expect_one = expect_window = 0.0
    for step in range(0, 2 * 80):
        s = step / 2 + 0.25  # samples strictly inside each half-unit piece
        alive = sum(_brute_alive(rs, s, tol, gap) for rs in by_pid.values())
        in_overlap = any(a <= s < b for a, b in union)
        assert in_overlap == (alive >= 2), s
        if any(a <= s < b for a, b in windows):
            expect_window += 0.5
            expect_one += 0.5 if alive == 1 else 0
            expect_many += 0.5 if alive >= 2 else 0
    assert d.window_s == pytest.approx(expect_window)
    assert d.one_s == pytest.approx(expect_one)
    assert d.many_s == pytest.approx(expect_many)
    assert d.one_s + d.none_s + d.many_s == pytest.approx(d.window_s)
    for o in found:
        assert o.a != o.b and o.end > o.start
        assert o.same_host == (o.a.host == o.b.host)


# ---------------------------------------------------------------- summary


def _ov(a: str, b: str, ms: float) -> Overlap:
    return Overlap(RunKey("r", a, 1, 1), RunKey("r", b, 2, 2), 0.0, ms / 1000)


def test_summarise_format_and_json() -> None:
    per = {
        "kill-node": [
            EpisodeResult("kill-node", (), Availability(10.0, 9.0, 1.0, 0.0), (0.5,)),
            EpisodeResult("kill-node", (), Availability(10.0, 8.0, 2.0, 0.0), (1.5,)),
        ],
        "freeze-host": [
            EpisodeResult("freeze-host", (_ov("a", "b", 12.0), _ov("a", "a", 3.0)),
                          Availability(10.0, 9.0, 0.5, 0.5), (2.0, None)),
        ],
        "no-window": [EpisodeResult("no-window")],
    }
    rows = summarise(per, total=True)
    assert [r.fault for r in rows] == ["freeze-host", "kill-node", "no-window", "ALL"]
    freeze, kill, nowin, total = rows
    assert (freeze.overlaps, freeze.same_host_overlaps) == (1, 1)
    assert freeze.longest_overlap_ms == pytest.approx(12.0)
    assert (freeze.failovers, freeze.no_failover) == (1, 1)
    assert kill.availability == pytest.approx(0.85)
    assert kill.failover_p50_s == pytest.approx(1.0)
    assert kill.failover_p95_s == pytest.approx(1.45)
    assert kill.failover_max_s == pytest.approx(1.5)
    assert kill.overlaps == 0 and kill.longest_overlap_ms == 0.0
    assert nowin.availability is None and nowin.failover_p50_s is None
    assert total.episodes == 4 and total.overlaps == 1
    assert total.availability == pytest.approx(26.0 / 30.0)

    table = format_table(rows)
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["fault", "episodes", "overlaps"]
    assert len(lines) == 2 + len(rows)
    assert "85.00" in table and "12.0" in table
    assert lines[4].split()[0] == "no-window" and " - " in lines[4]

    data = json.loads(to_json(rows))
    assert [f["fault"] for f in data["faults"]] == [r.fault for r in rows]
    assert data["faults"][2]["availability"] is None
    assert data["faults"][1]["failover_p95_s"] == pytest.approx(1.45)


# ---------------------------------------------------------------- loading


def test_load_jsonl_skips_truncated_lines(tmp_path: Path) -> None:
    rows = [{"run_id": "x", "host": "a", "pid": 5, "epoch": 2, "kind": "start", "mono": 1.0,
             "late": False},
            {"run_id": "x", "host": "a", "pid": 5, "epoch": None, "kind": "beat", "mono": 1.5},
            {"run_id": "y", "host": "a", "pid": 5, "epoch": 2, "kind": "beat", "mono": 1.6}]
    text = "".join(json.dumps(r) + "\n" for r in rows) + '{"run_id": "x", "ho'
    (tmp_path / "5.jsonl").write_text(text)
    (tmp_path / "other.txt").write_text("ignored")
    recs = load_jsonl(tmp_path, "x")
    assert [(r.kind, r.mono, r.epoch) for r in recs] == [("start", 1.0, 2), ("beat", 1.5, None)]
    assert len(load_jsonl(tmp_path)) == 3


def test_load_from_database(pg_dsn: str) -> None:
    run_id = uuid.uuid4().hex
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        hb_node.ensure_schema(conn)
        conn.execute(
            "INSERT INTO chaos_heartbeat (run_id, host, pid, epoch, kind, mono, db_ts, late)"
            " VALUES (%s, 'a', 7, 3, 'start', 1.0, clock_timestamp(), false),"
            " (%s, 'a', 7, 3, 'beat', 1.015, clock_timestamp(), true),"
            " (%s, 'a', 7, 3, 'beat', 9.0, clock_timestamp(), false)",
            (run_id, run_id, "someone-else"))
        recs = load(conn, run_id)
        assert [(r.kind, r.mono, r.late, r.epoch) for r in recs] == [
            ("start", 1.0, False, 3), ("beat", 1.015, True, 3)]
        assert all(r.db_ts is not None and r.run_id == run_id for r in recs)
        assert load(conn, run_id, table=f"missing_{run_id}") == []
    with psycopg.connect(pg_dsn) as conn:  # not autocommit: the failed query is rolled back
        assert load(conn, run_id, table=f"missing_{run_id}") == []
        assert len(load(conn, run_id)) == 2
