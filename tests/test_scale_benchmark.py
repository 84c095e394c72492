"""The scale benchmark (benchmarks/scale.py) still measures what it says: its quantile
is Prometheus' `histogram_quantile`, and one pair on the suite's PostgreSQL yields every
figure (a latency from the supervisors' own histogram; two connections per supervisor
once the side connection has been idle: lease statements and LISTEN)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from benchmarks import scale
from supervisor.lease.store import SIDE_IDLE_CLOSE
from tests.harness.pgserver import PgServer


def test_quantile_interpolates_within_the_bucket() -> None:
    buckets = {0.001: 0.0, 0.002: 50.0, 0.005: 99.0, 0.01: 100.0, math.inf: 100.0}
    assert scale.quantile(0.5, buckets) == pytest.approx(0.002)
    assert scale.quantile(0.25, buckets) == pytest.approx(0.0015)
    assert scale.quantile(0.99, buckets) == pytest.approx(0.005)
    assert scale.quantile(0.995, buckets) == pytest.approx(0.0075)
    assert scale.quantile(0.5, {0.001: 0.0, math.inf: 0.0}) is None
    assert scale.quantile(0.5, {0.001: 0.0, math.inf: 4.0}) == pytest.approx(0.001)


@pytest.mark.timeout(150)
def test_one_pair_yields_every_figure(pg_server: PgServer, tmp_path: Path) -> None:
    if not pg_server.can_restart:
        pytest.skip("the database's CPU is read from its processes: needs the suite's own")
    # the window ends after the side connections' idle close (their last use: start-up)
    r = scale.measure(pg_server, tmp_path, 1, steady=SIDE_IDLE_CLOSE + 2.0)
    assert r["supervisors"] == 2 and r["statements_per_second"] > 0, r
    assert r["connections"]["per_supervisor_max"] == 2, r
    assert r["lease_statement_p50_ms"] is not None and r["lease_statement_p99_ms"] is not None
    assert 0 < r["lease_statement_p50_ms"] <= r["lease_statement_p99_ms"], r
    assert 0 < r["failover_seconds"] < 60, r
