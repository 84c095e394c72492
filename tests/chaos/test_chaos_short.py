"""The short chaos run, part of the normal suite (issue 3).

Every fault type of tests/chaos/faults.py, twice, in a seeded random order,
over three supervisors and the chaos suite's own PostgreSQL (under libfaketime
when installed; without it `clock_jump` is skipped). About two minutes on a
2-core machine. The long run is `python -m tests.chaos --episodes 200`.

Fails on any overlap of two nodes outside the frozen-VM case (SIGSTOP of a
whole host, where an overlap right after SIGCONT is measured, not ruled out),
on more than W + 1 s without a node while a healthy host and the database were
up, on a node lost to a cut-off shorter than the slack, on a node alive while
the database was unreachable for everyone, on a supervisor traceback, on a
cluster that does not settle to exactly one node after a fault, and on
processes left behind. Replay a failure with `CHAOS_SEED=<seed>` (printed), or
one episode of it with `python -m tests.chaos --seed <seed> --episode <k>`.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.chaos.faults import catalog
from tests.chaos.runner import ChaosRun, format_violations
from tests.pgserver import ENV_DSN, find_bindir

pytestmark = pytest.mark.timeout(420)

ROUNDS = 2
HOSTS = 3
BUDGET_S = 230.0  # stop starting episodes after this (the first round always completes)


def test_short_chaos_run_never_runs_two_nodes(tmp_path: Path) -> None:
    if find_bindir() is None:
        if os.environ.get(ENV_DSN):
            pytest.skip("the chaos suite starts its own PostgreSQL: no server binaries here")
        pytest.fail("PostgreSQL server binaries are needed (apt-get install postgresql)")
    seed = int(os.environ.get("CHAOS_SEED") or random.randrange(1, 2**31))
    print(f"\nchaos seed {seed} (replay: CHAOS_SEED={seed})")
    kinds = list(catalog())
    run = ChaosRun(tmp_path, seed=seed, hosts=HOSTS, log=print)
    report = run.run(episodes=ROUNDS * len(kinds), budget_s=BUDGET_S)

    print(report.table())
    for extra in (report.short_blackhole_summary(), report.frozen_summary()):
        if extra:
            print(extra)
    print(f"runtime {report.runtime_s:.0f}s, {len(report.episodes)} episodes")
    if report.violations:
        print(format_violations(report))

    ran = {e.fault for e in report.episodes}
    expected = {k for k in kinds if report.faketime or not catalog()[k].needs_faketime}
    assert ran == expected, f"fault types not run: {sorted(expected - ran)}"
    fatal = report.violations  # overlaps, gaps over W + 1 s, instability, lost short cuts
    assert not fatal, f"seed {seed}:\n{format_violations(report)}"
    assert not report.orphans, f"processes outlived their supervisor: {report.orphans}"
