"""The short chaos run, part of the normal suite: every fault type once, the invariants
checked after each episode.

A fixed seed (`SEED`, printed; `CHAOS_SEED=<seed>` runs another one), so a
failure in CI replays: the whole run as it is, or one episode on a fresh cluster
with `python -m tests.chaos --seed <seed> --profile lab --episode <k>` (for the
corda part add `--faults` with `CORDA_FAULTS`; the failure message prints both
commands). Random seeds are for the long run (`python -m tests.chaos --episodes
200 --profile both`).

- profile `lab` (U = 0.5 s, W = 2 s, S = 0.5 s): every fault type of
  tests/chaos/faults.py and faults_shape.py once, in the seed's order, over
  three supervisors, a PostgreSQL primary with a streaming replica (under
  libfaketime when installed; without it `clock_jump` is skipped);
- profile `corda` (U = 2 s, W = 4 s, S = 3 s: Corda's ratio with a JVM-sized
  stop timeout): `CORDA_FAULTS`, the faults whose timing the profile changes
  most (the failover after W, the keep slack of a short cut-off with G < S, the
  kill deadline of a long cut-off, a SIGTERM-deaf node), without a replica.

Every node writes to the database all the time as its host's own role, with database
fencing on (tests/chaos/writes.py): a write of an old node that lands after a newer
node's first write fails the run (the frozen-host episodes are where it could).

About two and a half minutes on a 2-core machine. Fails on any overlap of two
nodes outside the frozen-VM case, on a lease taken before W, on a cut-off
node alive past its lease, on more than W plus a load-derived allowance
without a node while a healthy host and the database were up, on a broken
fault expectation (a short cut-off or a stalled log sink costing the node, a
missing `machine_name_conflict`, a node killed later than `t + W - M` plus a
load-derived allowance, ...), on a late write, on a traceback, on a cluster that does not
settle, and on processes left behind.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.chaos.faults import catalog
from tests.chaos.load import LoadMonitor
from tests.chaos.profile import PROFILES
from tests.chaos.report import RunReport, format_violations
from tests.chaos.runner import ChaosRun
from tests.harness.pgbin import find_bindir
from tests.harness.pgserver import ENV_DSN

pytestmark = pytest.mark.timeout(480)

SEED = 20240611
HOSTS = 3
CORDA_FAULTS = ["kill_supervisor", "blackhole_short", "blackhole_long", "ignore_sigterm"]


def run_profile(root: Path, seed: int, name: str, load: LoadMonitor,
                only: list[str] | None, *, replica: bool) -> RunReport:
    p = PROFILES[name]
    kinds = only or list(catalog(p))
    run = ChaosRun(root / name, seed=seed, profile=p, hosts=HOSTS, log=print,
                   replica=replica, load=load, writes="fenced")
    report = run.run(episodes=len(kinds), only=kinds)
    print(report.summary())
    return report


def test_short_chaos_run_never_runs_two_nodes(tmp_path: Path) -> None:
    if find_bindir() is None:
        if os.environ.get(ENV_DSN):
            pytest.skip("the chaos suite starts its own PostgreSQL: no server binaries here")
        pytest.fail("PostgreSQL server binaries are needed (apt-get install postgresql)")
    seed = int(os.environ.get("CHAOS_SEED") or SEED)
    print(f"\nchaos seed {seed} (another seed: CHAOS_SEED=<seed>)")
    with LoadMonitor() as load:
        lab = run_profile(tmp_path, seed, "lab", load, None, replica=True)
        corda = run_profile(tmp_path, seed, "corda", load, CORDA_FAULTS, replica=False)
    reports = [lab, corda]
    if any(r.violations for r in reports):
        print(format_violations(reports))

    ran = {e.fault for e in lab.episodes}
    cat = catalog(PROFILES["lab"])
    expected = {k for k in cat if (lab.faketime or not cat[k].needs_faketime)
                and (lab.replica or not cat[k].needs_replica)}
    assert ran == expected, f"fault types not run: {sorted(expected - ran)}"
    assert {e.fault for e in corda.episodes} == set(CORDA_FAULTS)
    fatal = [v for r in reports for v in r.violations]
    assert not fatal, (
        f"seed {seed}:\n{format_violations(reports)}\nreplay one episode: python -m "
        f"tests.chaos --seed {seed} --profile lab --episode K, or --profile corda --faults "
        f"{','.join(CORDA_FAULTS)} --no-replica --episode K")
    for r in reports:
        assert not r.orphans, f"processes outlived their supervisor: {r.orphans}"
