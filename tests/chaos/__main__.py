"""The long chaos run: `python -m tests.chaos --episodes 200 --json chaos.json`.

Prints one line per episode, then the summary table (per fault type: overlaps,
availability, failover p50/p95/max), every violation with its seed, episode
and the supervisors' log lines, and writes everything as JSON with `--json`.
Exit status: 0 without invariant violations, 1 with any.

Replay: `--seed S` repeats a run's fault sequence and parameters;
`--seed S --episode K` runs only episode K of that run (same fault, same
parameters) on a fresh cluster. Needs PostgreSQL server binaries (and, for the
`clock_jump` fault, libfaketime: `apt-get install libfaketime`).
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
from pathlib import Path

from tests.chaos.faults import catalog
from tests.chaos.runner import ChaosRun, format_violations


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--seed", type=int, help="default: random (printed)")
    p.add_argument("--episode", type=int, help="replay only this episode of --seed's run")
    p.add_argument("--hosts", type=int, default=3, choices=(2, 3))
    p.add_argument("--faults", help="comma-separated fault types (default: all); "
                   f"one of {', '.join(catalog())}")
    p.add_argument("--short-blackhole-max", type=float, default=0.65,
                   help="longest 'short' blackhole in seconds (default %(default)s)")
    p.add_argument("--json", type=Path, help="write the table and every episode here")
    p.add_argument("--workdir", type=Path,
                   help="keep the hosts' files here (default: a temporary directory, "
                   "removed unless an invariant was violated)")
    args = p.parse_args(argv)

    seed = args.seed if args.seed is not None else random.randrange(1, 2**31)
    only = [f.strip() for f in args.faults.split(",")] if args.faults else None
    root = args.workdir or Path(tempfile.mkdtemp(prefix="corda-ha-chaos-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"chaos: seed {seed} (replay with --seed {seed}); files in {root}", flush=True)

    def log(msg: str) -> None:
        print(msg, flush=True)

    run = ChaosRun(root, seed=seed, hosts=args.hosts, log=log,
                   short_blackhole_max=args.short_blackhole_max)
    report = run.run(episodes=args.episodes, only=only, replay=args.episode)

    print()
    print(report.table())
    for extra in (report.short_blackhole_summary(), report.frozen_summary()):
        if extra:
            print(extra)
    print(f"runtime {report.runtime_s:.0f}s (setup {report.setup_s:.1f}s), "
          f"{len(report.episodes)} episodes, seed {seed}")
    unexpected = [x for x in report.exits if not x.expected]
    if unexpected:
        print(f"unexpected supervisor exits: {unexpected}")
    if report.orphans:
        print(f"orphan processes at the end: {report.orphans}")
    if report.violations:
        print()
        print(format_violations(report))
    if args.json:
        args.json.write_text(report.to_json())
        print(f"wrote {args.json}")
    failed = any(v.invariant for v in report.violations)
    if args.workdir is None and not failed:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
