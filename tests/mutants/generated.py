"""`python -m tests.mutants --generated`: every generated SQL mutant against its scenario.

Each mutant of `sqlgen.generate()` is applied (`runner.Mutant.apply`: the statement's
literal rewritten in the source file) to a scratch copy of the repository, and only
the scenario `sqlkills.KILLS` names for it runs there
(`tests/test_sql_predicates.py::test_scenario[<name>]`); the file is restored before
the next mutant. One scratch copy per job, one PostgreSQL for the whole run (started
here, or `CORDA_HA_TEST_DSN`). First the unmutated copy must pass every scenario.
Mutants listed in `sqlkills.EQUIVALENT` are reported with their reason, not run.
"""

from __future__ import annotations

import contextlib
import os
import platform
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.harness.pgserver import ENV_DSN, PgServer
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
    return out


@contextlib.contextmanager
def database() -> Iterator[str]:
    """A PostgreSQL for the whole run: `CORDA_HA_TEST_DSN`, or a throwaway one."""
    dsn = os.environ.get(ENV_DSN)
    if dsn:
        yield dsn
        return
    server = PgServer.from_environment()
    try:
        yield server.dsn
    finally:
        server.destroy()


def run(selected: Sequence[Mutant], *, repo: Path = REPO, jobs: int = 1,
        timeout: float = 120.0, sanity: bool = True) -> list[Result] | None:
    """Run `selected` (see the module docstring); None when the sanity run failed."""
    with database() as dsn:
        os.environ[ENV_DSN] = dsn  # the pytest runs below inherit it
        runnable = [m for m in selected if m.todo is None]
        if sanity and runnable:
            tests = [t for m in runnable for t in m.tests]
            print(f"sanity: the unmutated copy runs {len(set(tests))} scenarios ...", flush=True)
            check = sanity_run(tests, repo=repo, timeout=max(timeout, 600.0))
            if check.returncode != 0:
                print(check.output[-6000:])
                print(f"sanity: FAILED ({check.summary or check.returncode})", flush=True)
                return None
            print(f"sanity: passed in {check.seconds:.1f} s ({check.summary})", flush=True)
        with tempfile.TemporaryDirectory(prefix="mut-sql-") as tmp:
            copies = [scratch_copy(repo, Path(tmp) / f"repo{i}") for i in range(jobs)]
            free = list(copies)
            lock = threading.Lock()

            def one(m: Mutant) -> Result:
                if m.todo is not None:
                    return Result(m, "todo", 0.0, detail=m.todo)
                with lock:
                    root = free.pop()
                try:
                    return _in_copy(m, root, timeout)
                finally:
                    with lock:
                        free.append(root)

            def report(m: Mutant) -> Result:
                r = one(m)
                label = "equiv" if r.outcome == "todo" else r.outcome
                print(f"{label:8} {m.name} ({r.seconds:.1f} s) {r.killed_by}", flush=True)
                if r.outcome in ("escaped", "error"):
                    print(f"--- {m.name}: {r.detail}\n{r.output}\n---", flush=True)
                return r

            with ThreadPoolExecutor(max_workers=jobs) as pool:
                return list(pool.map(report, selected))


def _in_copy(m: Mutant, root: Path, timeout: float) -> Result:
    """Apply `m` to the copy at `root`, run its scenario, restore the file."""
    start = time.monotonic()
    path = root / m.file
    original = path.read_text()
    try:
        try:
            m.apply(root)
        except MutantError as e:
            return Result(m, "error", time.monotonic() - start, detail=str(e).splitlines()[0],
                          output=str(e))
        return judge(m, run_tests(root, m.tests, timeout))
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
            reasons.append(f"{r.mutant.name}:\n    {r.detail.removeprefix('equivalent: ')}")
        killer = r.killed_by.removeprefix(CASE_TEST).strip("[]") or "-"
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
        lines += ["", "equivalent mutants, and why no behaviour tells them apart:", *reasons]
    counts = {k: sum(r.outcome == k for r in results) for k in ("caught", "escaped", "error")}
    counts["equivalent"] = sum(r.outcome == "todo" for r in results)
    return "\n".join(lines), counts


def machine() -> str:
    """The machine a run's figures come from, for the record."""
    return (f"{platform.node()}: {os.cpu_count()} cores, {platform.machine()}, "
            f"Python {platform.python_version()}, {platform.platform(terse=True)}")
