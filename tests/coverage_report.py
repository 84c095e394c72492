"""Line and branch coverage of `supervisor/`, child processes included.

    python -m tests.coverage_report [PYTEST ARGS...]

runs ``coverage run -m pytest PYTEST ARGS`` (default: the whole suite) with the
settings of pyproject.toml (`patch = subprocess, execv`: every Python process the
tests start, i.e. supervisor daemons, guards and CLI runs, is measured too, also
across the CLI's exec of the daemon, so daemon.py, guard.py, cli.py and run.py
count), combines the data files and prints one
row per module: statements, line %, branches, branch % and coverage's combined
figure. Data goes to `.coverage-data/` (`coverage.json` there has every detail;
``coverage report -m --data-file .coverage-data/.coverage`` lists missed lines).

Processes that end by SIGKILL write no data: the end-to-end harness is told to
stop its supervisors with SIGTERM at teardown (tests/harness/cluster.py,
`GRACEFUL_TEARDOWN_ENV`), and a test that SIGKILLs a supervisor on purpose loses
that process's share. Exit status: pytest's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.harness.cluster import GRACEFUL_TEARDOWN_ENV

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / ".coverage-data"


def pct(covered: int, total: int) -> str:
    return "-" if total == 0 else f"{100.0 * covered / total:.1f}"


def table(report: dict[str, object]) -> str:
    files = report["files"]
    assert isinstance(files, dict)
    rows = [("module", "stmts", "lines %", "branches", "branches %", "total %")]
    sums = [0, 0, 0, 0]
    for name in sorted(files):
        summary = files[name]["summary"]
        stmts, covered = summary["num_statements"], summary["covered_lines"]
        branches, covered_b = summary["num_branches"], summary["covered_branches"]
        sums = [sums[0] + stmts, sums[1] + covered, sums[2] + branches, sums[3] + covered_b]
        rows.append((name, str(stmts), pct(covered, stmts), str(branches),
                     pct(covered_b, branches), f"{summary['percent_covered']:.1f}"))
    total = report["totals"]
    assert isinstance(total, dict)
    rows.append(("TOTAL", str(sums[0]), pct(sums[1], sums[0]), str(sums[2]),
                 pct(sums[3], sums[2]), f"{total['percent_covered']:.1f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for i, row in enumerate(rows):
        out.append("  ".join(c.ljust(widths[0]) if j == 0 else c.rjust(widths[j])
                             for j, c in enumerate(row)))
        if i == 0 or i == len(rows) - 2:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    shutil.rmtree(DATA, ignore_errors=True)
    DATA.mkdir()
    env = dict(os.environ)
    env["CORDA_HA_COVERAGE_FILE"] = str(DATA / ".coverage")
    env[GRACEFUL_TEARDOWN_ENV] = "1"
    env.pop("COVERAGE_PROCESS_CONFIG", None)
    env.pop("COVERAGE_PROCESS_START", None)
    coverage = [sys.executable, "-m", "coverage"]
    tests = subprocess.run([*coverage, "run", "-m", "pytest", "-n", "0", "-p", "no:cacheprovider",
                            *args],
                           cwd=REPO, env=env, check=False).returncode
    subprocess.run([*coverage, "combine", "-q"], cwd=REPO, env=env, check=True)
    subprocess.run([*coverage, "json", "-q", "-o", str(DATA / "coverage.json")], cwd=REPO,
                   env=env, check=True)
    report = json.loads((DATA / "coverage.json").read_text())
    print()
    print(table(report))
    print(f"\n(pytest exit status {tests}; details: {DATA / 'coverage.json'})")
    return tests


if __name__ == "__main__":
    sys.exit(main())
