"""The long chaos run: `python -m tests.chaos --episodes 200 --profile both --json chaos.json`.

Prints one line per episode, then per timing profile (tests/chaos/profile.py:
`lab`, `corda`) the summary table (per fault type: overlaps, availability,
failover p50/p95/max), the failover figures, the load measured, and every
violation with its seed, profile, episode and the supervisors' log lines; writes
everything as JSON with `--json`. With `--profile both` the episodes are split
between the profiles (lab first, each on its own fresh cluster). Exit status: 0
without invariant violations, 1 with any.

Replay: `--seed S` repeats a run's fault sequences and parameters;
`--seed S --profile P --episode K` runs only episode K of profile P's run (same
fault, same parameters) on a fresh cluster. Needs PostgreSQL server binaries
(with `pg_basebackup` for `lossy_failover`; libfaketime for `clock_jump`:
`apt-get install libfaketime`).
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
from pathlib import Path

from tests.chaos.faults import catalog
from tests.chaos.load import LoadMonitor
from tests.chaos.profile import PROFILES
from tests.chaos.report import RunReport, format_violations, to_json
from tests.chaos.runner import ChaosRun
from tests.chaos.writes import Writes

WRITES: dict[str, Writes] = {"on": "fenced", "off": "unfenced", "none": "off"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=20, help="in total, over the profiles")
    p.add_argument("--profile", choices=[*PROFILES, "both"], default="both")
    p.add_argument("--seed", type=int, help="default: random (printed)")
    p.add_argument("--episode", type=int,
                   help="replay only this episode of --seed's run (needs one --profile)")
    p.add_argument("--hosts", type=int, default=3, choices=(2, 3))
    p.add_argument("--faults", help="comma-separated fault types (default: all); "
                   f"one of {', '.join(catalog(PROFILES['lab'], patroni=True))}")
    p.add_argument("--short-blackhole-max", type=float,
                   help="longest 'short' cut-off in seconds (default: the profile's)")
    p.add_argument("--no-replica", action="store_true",
                   help="no streaming replica (skips lossy_failover)")
    p.add_argument("--fencing", choices=("on", "off", "none"), default="on",
                   help="the nodes write to the database as their own roles, with database "
                   "fencing (on) or without (off: late writes are counted, not failed); "
                   "none: the nodes do not write")
    p.add_argument("--patroni", action="store_true",
                   help="the lease database is a Patroni cluster (etcd, two members, "
                   "synchronous_mode) and the Patroni faults join the catalog "
                   "(tests/chaos/patroni.py; needs patroni and etcd)")
    p.add_argument("--json", type=Path, help="write the tables and every episode here")
    p.add_argument("--workdir", type=Path,
                   help="keep the hosts' files here (default: a temporary directory, "
                   "removed unless an invariant was violated)")
    args = p.parse_args(argv)
    names = list(PROFILES) if args.profile == "both" else [args.profile]
    if args.episode is not None and len(names) > 1:
        p.error("--episode needs --profile lab or --profile corda")

    seed = args.seed if args.seed is not None else random.randrange(1, 2**31)
    only = [f.strip() for f in args.faults.split(",")] if args.faults else None
    root = args.workdir or Path(tempfile.mkdtemp(prefix="corda-ha-chaos-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"chaos: seed {seed} (replay with --seed {seed}); files in {root}", flush=True)

    def log(msg: str) -> None:
        print(msg, flush=True)

    reports: list[RunReport] = []
    with LoadMonitor() as load:
        for i, name in enumerate(names):
            share = args.episodes // len(names) + (1 if i < args.episodes % len(names) else 0)
            run = ChaosRun(root / name, seed=seed, profile=PROFILES[name], hosts=args.hosts,
                           log=log, short_cut_max=args.short_blackhole_max,
                           replica=not args.no_replica, load=load,
                           writes=WRITES[args.fencing], patroni=args.patroni)
            reports.append(run.run(episodes=share, only=only, replay=args.episode))

    for report in reports:
        print()
        print(report.summary())
    violations = [v for r in reports for v in r.violations]
    if violations:
        print()
        print(format_violations(reports))
    if args.json:
        args.json.write_text(to_json(reports))
        print(f"wrote {args.json}")
    failed = any(v.invariant for v in violations)
    print(f"{'FAILED' if failed else 'passed'}: {len(violations)} violations "
          f"({sum(v.invariant for v in violations)} of the invariant), seed {seed}")
    if args.workdir is None and not failed:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
