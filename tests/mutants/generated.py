"""`python -m tests.mutants --generated`: every generated SQL mutant against its scenario.

Each mutant of `sqlgen.generate()` (the lease store's SQL) and of `fencegen.generate()`
(the fence functions, their policies, Corda's lock row statements) is applied
(`runner.Mutant.apply`: the statement's literal rewritten in the source file) to a
scratch copy of the repository, and only the scenario `sqlkills.KILLS` or
`fencekills.KILLS` names for it runs there (`tests/test_sql_predicates.py::
test_scenario[<name>]`, `tests/test_fence_predicates.py::test_scenario[<name>]`); the
file is restored before the next mutant. One scratch copy per job, and per job the
servers of `fencerun.servers` (or `CORDA_HA_TEST_DSN` for all). First the unmutated copy
must pass every scenario. Mutants listed as equivalent (or out of reach) are reported
with their reason, not run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.mutants import fencerun
from tests.mutants.fencekills import invalid
from tests.mutants.runner import (
    REPO,
    Mutant,
    MutantError,
    Result,
    judge,
    run_tests,
    sanity_run,
    scratch_copy,
)
from tests.mutants.sqlgen import as_runner_mutant, generate
from tests.mutants.sqlkills import EQUIVALENT, kills

CASE_TEST = "tests/test_sql_predicates.py::test_scenario"


def scenario_test(scenario: str) -> str:
    return f"{CASE_TEST}[{scenario}]"


def mutants(repo: Path = REPO) -> list[Mutant]:
    """Every generated mutant as a runner mutant: its scenario's test, or (equivalent)
    `todo` carrying the reason. Raises KeyError for a mutant with neither."""
    killing = kills()
    out = []
    for m in generate(repo):
        if m.key in EQUIVALENT:
            out.append(Mutant(m.key, m.key, m.file, m.literal, m.replacement(), (),
                              todo=f"equivalent: {EQUIVALENT[m.key]}"))
        else:
            out.append(as_runner_mutant(m, (scenario_test(killing[m.key]),)))
    return out + fencerun.mutants(repo)


def run(selected: Sequence[Mutant], *, repo: Path = REPO, jobs: int = 1,
        timeout: float = 120.0, sanity: bool = True) -> list[Result] | None:
    """Run `selected` (see the module docstring); None when the sanity run failed."""
    with fencerun.servers(jobs) as envs:
        runnable = [m for m in selected if m.todo is None]
        if sanity and runnable:
            tests = [t for m in runnable for t in m.tests]
            print(f"sanity: the unmutated copy runs {len(set(tests))} scenarios ...", flush=True)
            with _environment(envs[0]):
                check = sanity_run(tests, repo=repo, timeout=max(timeout, 600.0))
            if check.returncode != 0:
                print(check.output[-6000:])
                print(f"sanity: FAILED ({check.summary or check.returncode})", flush=True)
                return None
            print(f"sanity: passed in {check.seconds:.1f} s ({check.summary})", flush=True)
        with tempfile.TemporaryDirectory(prefix="mut-sql-") as tmp:
            free = [(scratch_copy(repo, Path(tmp) / f"repo{i}"), envs[i]) for i in range(jobs)]
            lock = threading.Lock()

            def one(m: Mutant) -> Result:
                if m.todo is not None:
                    return Result(m, "todo", 0.0, detail=m.todo)
                with lock:
                    root, env = free.pop()
                try:
                    return _in_copy(m, root, timeout, env)
                finally:
                    with lock:
                        free.append((root, env))

            def report(m: Mutant) -> Result:
                r = one(m)
                label = "equiv" if r.outcome == "todo" else r.outcome
                print(f"{label:8} {m.name} ({r.seconds:.1f} s) {r.killed_by}", flush=True)
                if r.outcome in ("escaped", "error"):
                    print(f"--- {m.name}: {r.detail}\n{r.output}\n---", flush=True)
                return r

            with ThreadPoolExecutor(max_workers=jobs) as pool:
                return list(pool.map(report, selected))


@contextlib.contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    """`env` in os.environ while the block runs (the sanity run inherits it)."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _in_copy(m: Mutant, root: Path, timeout: float, env: dict[str, str]) -> Result:
    """Apply `m` to the copy at `root`, run its scenario (with the job's servers, `env`),
    restore the file."""
    start = time.monotonic()
    path = root / m.file
    original = path.read_text()
    try:
        try:
            m.apply(root)
        except MutantError as e:
            return Result(m, "error", time.monotonic() - start, detail=str(e).splitlines()[0],
                          output=str(e))
        r = judge(m, run_tests(root, m.tests, timeout, extra_env=env))
        if r.outcome == "caught" and invalid(m.name, r.detail):
            return dataclasses.replace(r, outcome="error", detail="killed by SQL that is not "
                                       f"valid, not by what it decides: {r.detail}")
        return r
    finally:
        path.write_text(original)


def summary(results: Sequence[Result]) -> tuple[str, dict[str, int]]:
    """A plain-text table (mutant, killing scenario, outcome, seconds), the equivalent
    mutants with their reasons, and the counts: caught, escaped, error, equivalent."""
    rows = [("mutant", "killed by scenario", "result", "s")]
    reasons = []
    for r in results:
        equivalent = r.outcome == "todo"
        if equivalent:
            reasons.append(f"{r.mutant.name}:\n    {r.detail}")
        killer = r.killed_by.partition("[")[2].removesuffix("]") or r.killed_by or "-"
        rows.append((r.mutant.name, "(equivalent)" if equivalent else killer,
                     "equivalent" if equivalent else r.outcome, f"{r.seconds:.1f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for i, row in enumerate(rows):
        lines.append("  ".join([row[0].ljust(widths[0]), row[1].ljust(widths[1]),
                                row[2].ljust(widths[2]), row[3].rjust(widths[3])]).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    if reasons:
        lines += ["", "mutants not run: equivalent (no behaviour tells them apart) or out of "
                  "reach (only a server or object the suite cannot have would), and why:",
                  *reasons]
    counts = {k: sum(r.outcome == k for r in results) for k in ("caught", "escaped", "error")}
    counts["equivalent"] = sum(r.outcome == "todo" and not r.detail.startswith("out of reach")
                               for r in results)
    counts["out of reach"] = sum(r.outcome == "todo" and r.detail.startswith("out of reach")
                                 for r in results)
    return "\n".join(lines), counts


def machine() -> str:
    """The machine a run's figures come from, for the record."""
    return (f"{platform.node()}: {os.cpu_count()} cores, {platform.machine()}, "
            f"Python {platform.python_version()}, {platform.platform(terse=True)}")
