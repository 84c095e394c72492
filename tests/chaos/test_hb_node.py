"""tests/chaos/hb_node.py against the real test PostgreSQL.

Tests that stop the session's PostgreSQL always start it again (finally).
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.chaos.checker import Record, build_runs, load, load_jsonl
from tests.harness.pgserver import PgServer
from tests.harness.proc import Reaper, wait_until

pytestmark = pytest.mark.timeout(60)

HB_NODE = str(Path(__file__).with_name("hb_node.py"))

Start = Callable[..., tuple["subprocess.Popen[str]", str]]


@pytest.fixture
def start_node(reaper: Reaper, pg_dsn: str, tmp_path: Path) -> Start:
    """Start hb_node with a fresh CHAOS_RUN_ID; returns (process, run_id)."""

    def start(*args: str, host: str = "h1", epoch: str | None = "7",
              record: bool = True) -> tuple[subprocess.Popen[str], str]:
        run_id = uuid.uuid4().hex
        env = dict(os.environ, CHAOS_RUN_ID=run_id)
        env.pop("CORDA_HA_EPOCH", None)
        if epoch is not None:
            env["CORDA_HA_EPOCH"] = epoch
        argv = [sys.executable, HB_NODE, "--dsn", pg_dsn, "--host", host, *args]
        if record:
            argv += ["--record", str(tmp_path / "records")]
        proc = reaper.popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
        return proc, run_id

    return start


def rows(dsn: str, run_id: str) -> list[Record]:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        return load(conn, run_id)


def wait_rows(dsn: str, run_id: str, predicate: Callable[[list[Record]], bool],
              timeout: float = 10.0) -> list[Record]:
    found: list[Record] = []

    def check() -> bool:
        nonlocal found
        found = rows(dsn, run_id)
        return predicate(found)

    wait_until(check, timeout, interval=0.05, message=f"rows of {run_id}")
    return found


def gaps(recs: list[Record]) -> list[float]:
    ms = sorted(r.mono for r in recs)
    return [b - a for a, b in itertools.pairwise(ms)]


def median(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2]


def term_and_wait(proc: subprocess.Popen[Any], timeout: float = 5.0) -> tuple[int, float]:
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout)
    return code, time.monotonic() - t0


def test_beats_every_10_to_20_ms_with_db_clock(start_node: Start, pg_dsn: str,
                                               tmp_path: Path) -> None:
    proc, run_id = start_node()
    recs = wait_rows(pg_dsn, run_id, lambda rs: sum(r.kind == "beat" for r in rs) >= 40)
    code, took = term_and_wait(proc)
    assert code == 0 and took < 1.5
    recs = wait_rows(pg_dsn, run_id, lambda rs: any(r.kind == "stop" for r in rs))
    assert recs[0].kind == "start" and recs[-1].kind == "stop"
    assert all(r.kind == "beat" for r in recs[1:-1])
    assert {(r.host, r.pid, r.epoch, r.run_id) for r in recs} == {("h1", proc.pid, 7, run_id)}
    assert all(r.db_ts is not None for r in recs)
    assert not any(r.late for r in recs[:-1])  # nothing waited: the database was up
    beat_gaps = gaps([r for r in recs if r.kind == "beat"])
    assert 0.010 <= median(beat_gaps) <= 0.020, beat_gaps
    assert sorted(beat_gaps)[int(len(beat_gaps) * 0.9)] < 0.05, beat_gaps
    # The mono stamps follow the database clock (same process, no buffering).
    ts = [r.db_ts for r in recs if r.db_ts is not None]
    assert ts == sorted(ts)
    span_db = (ts[-1] - ts[0]).total_seconds()
    assert span_db == pytest.approx(recs[-1].mono - recs[0].mono, abs=0.1)
    # The JSON-lines copy holds exactly the same records.
    local = load_jsonl(tmp_path / "records", run_id)
    assert [(r.kind, r.mono) for r in local] == [(r.kind, r.mono) for r in recs]
    out = proc.stdout.read() if proc.stdout else ""
    assert f"hb_node started pid={proc.pid} host=h1 epoch=7" in out


def test_sigterm_with_stop_delay_keeps_beating_then_stops(start_node: Start,
                                                         pg_dsn: str) -> None:
    proc, run_id = start_node("--stop-delay", "0.3", epoch=None)
    wait_rows(pg_dsn, run_id, lambda rs: len(rs) >= 5)
    t_term = time.monotonic()
    code, took = term_and_wait(proc)
    assert code == 0
    assert 0.3 <= took < 1.5
    recs = wait_rows(pg_dsn, run_id, lambda rs: any(r.kind == "stop" for r in rs))
    stop = recs[-1]
    assert stop.kind == "stop" and stop.epoch is None
    assert stop.mono >= t_term + 0.3
    assert any(r.kind == "beat" and r.mono > t_term + 0.2 for r in recs)
    (run,) = build_runs(recs)
    assert run.stopped and run.started and len(run.segments) == 1


def test_sigkill_leaves_no_stop_record(start_node: Start, pg_dsn: str, tmp_path: Path) -> None:
    proc, run_id = start_node()
    wait_rows(pg_dsn, run_id, lambda rs: len(rs) >= 5)
    proc.kill()
    assert proc.wait(2) == -signal.SIGKILL
    time.sleep(0.2)
    recs = rows(pg_dsn, run_id)
    assert recs and not any(r.kind == "stop" for r in recs)
    local = load_jsonl(tmp_path / "records", run_id)
    assert not any(r.kind == "stop" for r in local)
    assert len(local) >= len(recs)


def test_fail_at_start_leaves_no_rows(start_node: Start, pg_dsn: str, tmp_path: Path) -> None:
    proc, run_id = start_node("--fail-at-start")
    assert proc.wait(5) == 1
    assert rows(pg_dsn, run_id) == []
    assert load_jsonl(tmp_path / "records", run_id) == []


def test_crash_after_exits_3_without_stop_record(start_node: Start, pg_dsn: str) -> None:
    proc, run_id = start_node("--crash-after", "0.3")
    assert proc.wait(5) == 3
    recs = rows(pg_dsn, run_id)  # flushed before exiting
    assert recs[0].kind == "start" and not any(r.kind == "stop" for r in recs)
    assert recs[-1].mono - recs[0].mono == pytest.approx(0.3, abs=0.05)


def test_ignore_sigterm(start_node: Start, pg_dsn: str) -> None:
    proc, run_id = start_node("--ignore-sigterm")
    wait_rows(pg_dsn, run_id, lambda rs: len(rs) >= 3)
    proc.send_signal(signal.SIGTERM)
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(0.5)
    t = time.monotonic()
    wait_rows(pg_dsn, run_id, lambda rs: rs[-1].mono > t)  # still beating
    proc.kill()
    assert proc.wait(2) == -signal.SIGKILL
    assert not any(r.kind == "stop" for r in rows(pg_dsn, run_id))


def test_interval_option(start_node: Start, pg_dsn: str) -> None:
    proc, run_id = start_node("--interval", "0.05")
    recs = wait_rows(pg_dsn, run_id, lambda rs: len(rs) >= 10)
    proc.kill()
    proc.wait(2)
    assert 0.045 <= median(gaps(recs)) <= 0.06


def test_concurrent_nodes_create_the_table_once(start_node: Start, pg_server: PgServer,
                                                pg_dsn: str) -> None:
    pg_server.execute("DROP TABLE IF EXISTS chaos_heartbeat")
    started = [start_node(host=f"h{i}", record=False) for i in range(4)]
    for proc, run_id in started:
        wait_rows(pg_dsn, run_id, lambda rs: len(rs) >= 3)
        proc.kill()
        proc.wait(2)
        assert not (proc.stderr.read() if proc.stderr else "")


def _require_restartable(pg_server: PgServer) -> None:
    if not pg_server.can_restart:
        pytest.skip("needs the suite's own PostgreSQL (CORDA_HA_TEST_DSN is set)")


def test_database_outage_beats_are_buffered_and_flushed_late(
        start_node: Start, pg_server: PgServer, pg_dsn: str, tmp_path: Path) -> None:
    _require_restartable(pg_server)
    proc, run_id = start_node()
    wait_rows(pg_dsn, run_id, lambda rs: len(rs) >= 5)
    try:
        down = time.monotonic()
        pg_server.stop("immediate")
        time.sleep(1.0)
        assert proc.poll() is None
        up = time.monotonic()
    finally:
        pg_server.start()
    recs = wait_rows(pg_dsn, run_id, lambda rs: any(r.mono > up + 0.5 for r in rs))
    code, took = term_and_wait(proc)
    assert code == 0 and took < 1.5
    recs = wait_rows(pg_dsn, run_id, lambda rs: any(r.kind == "stop" for r in rs))
    late = [r for r in recs if r.late]
    assert late, "rows made during the outage must be marked late"
    assert any(down + 0.1 < r.mono < up - 0.1 for r in late)
    assert all(r.late for r in recs if down + 0.3 < r.mono < up)
    # No hole in the beats: the loop never waited for the database.
    during = [r for r in recs if down - 0.1 < r.mono < up + 0.3]
    assert max(gaps(during)) < 0.1, max(gaps(during))
    (run,) = build_runs(recs)
    assert len(run.segments) == 1 and run.stopped
    local = load_jsonl(tmp_path / "records", run_id)
    assert {(r.kind, r.mono) for r in local} == {(r.kind, r.mono) for r in recs}


def test_sigterm_while_database_down_exits_promptly(
        start_node: Start, pg_server: PgServer, pg_dsn: str, tmp_path: Path) -> None:
    _require_restartable(pg_server)
    proc, run_id = start_node()
    wait_rows(pg_dsn, run_id, lambda rs: len(rs) >= 5)
    try:
        pg_server.stop("immediate")
        time.sleep(0.2)
        code, took = term_and_wait(proc)
    finally:
        pg_server.start()
    assert code == 0
    assert took < 1.2  # flushes for at most ~0.5 s, never hangs
    local = load_jsonl(tmp_path / "records", run_id)
    assert local[-1].kind == "stop"
    assert not any(r.kind == "stop" for r in rows(pg_dsn, run_id))
