"""`python -m tests.mutants`: run the safety mutants (see tests/mutants/__init__.py).

`--generated` runs the generated SQL mutants instead (tests/mutants/generated.py): one
per condition, comparison, time bound and assigned column of the lease store's SQL and
of the database fence's functions, policies and Corda's lock row statements, each
against the scenario of tests/test_sql_predicates.py or tests/test_fence_predicates.py
in which it alone decides.

Exit status: 0 every mutant caught; 1 a mutant escaped or could not be run;
2 the unmutated copy fails the named tests (or bad arguments).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from tests.mutants import generated
from tests.mutants.catalog import MUTANTS
from tests.mutants.runner import REPO, Mutant, Result, run_mutant, sanity_run, table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.mutants", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--list", action="store_true", help="list the mutants and exit")
    p.add_argument("--generated", action="store_true",
                   help="the generated SQL mutants instead of the catalog's")
    p.add_argument("--only", action="append", metavar="NAME",
                   help="run only this mutant (repeatable)")
    p.add_argument("--jobs", type=int, default=1,
                   help="mutants run at once (default %(default)s; end-to-end tests are "
                        "timing-sensitive)")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="seconds one mutant's tests may take (default %(default)s)")
    p.add_argument("--no-sanity", action="store_true",
                   help="skip the check that the unmutated copy passes the same tests")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--repo", type=Path, default=REPO,
                   help="repository to copy (default: this one)")
    args = p.parse_args(argv)

    every: list[Mutant] = generated.mutants(args.repo) if args.generated else list(MUTANTS)
    mutants = every
    if args.only:
        names = {m.name for m in every}
        unknown = [n for n in args.only if n not in names]
        if unknown:
            print(f"unknown mutant(s): {', '.join(unknown)}", file=sys.stderr)
            return 2
        mutants = [m for m in every if m.name in args.only]
    if args.list:
        for m in mutants:
            kill = ", ".join(m.tests) if m.todo is None else f"TODO: {m.todo}"
            print(f"{m.name}\n    rule:  {m.rule}\n    file:  {m.file}\n    tests: {kill}")
        return 0
    if args.jobs < 1:
        print("--jobs must be at least 1", file=sys.stderr)
        return 2
    if args.generated:
        return run_generated(mutants, args, argv)

    started = time.monotonic()
    runnable = [m for m in mutants if m.todo is None]
    if not args.no_sanity and runnable:
        tests = [t for m in runnable for t in m.tests]
        print(f"sanity: the unmutated copy runs {len(set(tests))} test selections ...",
              flush=True)
        run = sanity_run(tests, repo=args.repo, timeout=max(args.timeout, 900.0))
        if run.returncode != 0:
            print(run.output[-6000:])
            print(f"sanity: FAILED ({run.summary or run.returncode}): the unmutated copy does "
                  "not pass these tests, so no mutant result would mean anything", flush=True)
            return 2
        print(f"sanity: passed in {run.seconds:.1f} s ({run.summary})", flush=True)

    results: list[Result] = []

    def one(m: Mutant) -> Result:
        r = run_mutant(m, repo=args.repo, timeout=args.timeout)
        print(f"{r.outcome:8} {m.name} ({r.seconds:.1f} s) {r.killed_by}", flush=True)
        if r.outcome in ("escaped", "error"):
            print(f"--- {m.name}: {r.detail}\n{r.output}\n---", flush=True)
        return r

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(one, mutants))

    print()
    print(table(results))
    counts = {k: sum(r.outcome == k for r in results)
              for k in ("caught", "escaped", "error", "todo")}
    took = time.monotonic() - started
    print(f"\n{counts['caught']} caught, {counts['escaped']} escaped, {counts['error']} errors, "
          f"{counts['todo']} todo; {took:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({
            "seconds": round(took, 1), "counts": counts,
            "mutants": [{"name": r.mutant.name, "rule": r.mutant.rule, "file": r.mutant.file,
                         "tests": list(r.mutant.tests), "outcome": r.outcome,
                         "killed_by": r.killed_by, "detail": r.detail,
                         "seconds": round(r.seconds, 1)} for r in results]}, indent=2) + "\n")
    return 0 if counts["escaped"] == 0 and counts["error"] == 0 else 1


def run_generated(mutants: list[Mutant], args: argparse.Namespace,
                  argv: list[str] | None) -> int:
    started = time.monotonic()
    print(f"python -m tests.mutants {shlex.join(sys.argv[1:] if argv is None else argv)}\n"
          f"on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {generated.machine()}", flush=True)
    results = generated.run(mutants, repo=args.repo, jobs=args.jobs,
                            timeout=min(args.timeout, 120.0), sanity=not args.no_sanity)
    if results is None:
        return 2
    text, counts = generated.summary(results)
    took = time.monotonic() - started
    print(f"\n{text}\n\n{counts['caught']} caught, {counts['escaped']} escaped, "
          f"{counts['error']} errors, {counts['equivalent']} equivalent, "
          f"{counts['out of reach']} out of reach; {took:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({
            "seconds": round(took, 1), "counts": counts,
            "mutants": [{"name": r.mutant.name, "file": r.mutant.file,
                         "tests": list(r.mutant.tests),
                         "outcome": r.detail.partition(":")[0] if r.outcome == "todo"
                         else r.outcome,
                         "killed_by": r.killed_by, "detail": r.detail,
                         "seconds": round(r.seconds, 1)} for r in results]}, indent=2) + "\n")
    return 0 if counts["escaped"] == 0 and counts["error"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
