"""Applying mutants and running their tests in a scratch copy of the repository.

Contract:
- `Mutant.apply(root)` replaces the mutant's exact search text, which must occur
  exactly once in `root / file`; otherwise `MutantError` (the catalog has rotted).
- `scratch_copy(repo, dest)` copies the files git knows about (tracked and
  untracked-but-not-ignored), or everything but caches and the venv without git.
- `run_tests(root, tests, timeout)` runs ``python -m pytest -x -q -p
  no:cacheprovider <ids>`` with `root` as working directory and `PYTHONPATH`, so
  the tests import the copy, and so do the processes they start
  (tests/harness/paths.py and supervisor/node/process.py derive `PYTHONPATH` from their
  own location; the canary mutants of the catalog check that). The run gets its own
  session and an environment tag; when it ends (or times out, bounded by
  `timeout`) every process still carrying the tag is SIGKILLed.
- `run_mutant` = fresh copy + apply + run_tests; the copy is removed after.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tests.harness.proc import kill_session

REPO = Path(__file__).resolve().parent.parent.parent
TAG_ENV = "CORDA_HA_MUTANT_RUN"
_IGNORED = shutil.ignore_patterns(".git", ".venv", "__pycache__", ".pytest_cache",
                                  ".mypy_cache", ".ruff_cache", ".hypothesis", ".coverage*",
                                  "*.egg-info")


class MutantError(Exception):
    """A mutant cannot be applied: its search text is not found exactly once."""


@dataclass(frozen=True)
class Mutant:
    """One deliberate break of one safety rule.

    `search` must occur exactly once in `file` (relative to the repository);
    it is replaced by `replace`. `tests` are pytest node ids (relative to the
    repository) of fast tests of which at least one must fail. A mutant with
    `todo` set is a placeholder (a rule whose code is not merged yet): it is
    listed and reported, never run.
    """

    name: str
    rule: str
    file: str
    search: str
    replace: str
    tests: tuple[str, ...]
    todo: str | None = None

    def apply(self, root: Path) -> None:
        path = root / self.file
        try:
            text = path.read_text()
        except OSError as e:
            raise MutantError(f"{self.name}: cannot read {self.file}: {e}") from None
        count = text.count(self.search)
        if count != 1:
            raise MutantError(
                f"{self.name}: the search text occurs {count} times in {self.file} (it must "
                f"occur exactly once; update tests/mutants/catalog.py):\n{self.search}")
        path.write_text(text.replace(self.search, self.replace, 1))


Outcome = Literal["caught", "escaped", "error", "todo"]


@dataclass(frozen=True)
class Result:
    mutant: Mutant
    outcome: Outcome
    seconds: float
    killed_by: str = ""  # the first failing test's node id
    detail: str = ""  # why it failed (or what went wrong), one line
    output: str = ""  # pytest's output (tail), for escapes and errors


def git_files(repo: Path) -> list[str] | None:
    """Tracked and untracked-but-not-ignored files, or None without git."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=repo, capture_output=True, check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return [name for name in out.decode().split("\0") if name]


def scratch_copy(repo: Path, dest: Path) -> Path:
    """Copy the repository's source files into `dest` (created); returns `dest`."""
    files = git_files(repo)
    if files is None:
        shutil.copytree(repo, dest, ignore=_IGNORED)
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    for name in files:
        src = repo / name
        if not src.is_file():  # deleted in the work tree, or a submodule
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    return dest


def tagged_pids(tag: str) -> list[int]:
    """Pids of processes whose environment carries `TAG_ENV=tag`."""
    needle = f"{TAG_ENV}={tag}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if needle in env:
            found.append(int(entry.name))
    return found


def kill_tagged(tag: str, timeout: float = 5.0) -> list[int]:
    """SIGKILL every process carrying `tag` until none is left (bounded); their pids."""
    killed: list[int] = []
    end = time.monotonic() + timeout
    while True:
        pids = tagged_pids(tag)
        if not pids or time.monotonic() >= end:
            return killed
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        time.sleep(0.05)


_FAILED = re.compile(r"^(FAILED|ERROR) (\S+\.py(?:::.+?)?)(?: - (.*))?$", re.M)
_SUMMARY = re.compile(r"^=*\s*(.*\b(passed|failed|error|errors|skipped)\b.*?)\s*=*$", re.M)


@dataclass(frozen=True)
class PytestRun:
    returncode: int | None  # None: timed out
    seconds: float
    output: str

    @property
    def failed(self) -> list[tuple[str, str]]:
        """(node id, reason) of each failed or erroring test, in order."""
        return [(m[2], (m[3] or "").strip()) for m in _FAILED.finditer(self.output)]

    @property
    def summary(self) -> str:
        found = _SUMMARY.findall(self.output)
        return found[-1][0] if found else ""


def run_tests(root: Path, tests: Sequence[str], timeout: float, *, stop_first: bool = True,
              extra_env: dict[str, str] | None = None) -> PytestRun:
    """Run `tests` in `root` (see the module docstring); never leaves processes behind."""
    tag = uuid.uuid4().hex
    env = dict(os.environ)
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "PYTEST_ADDOPTS",
                 "COVERAGE_PROCESS_START", "COVERAGE_PROCESS_CONFIG"):
        env.pop(name, None)
    env.update(PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1", **{TAG_ENV: tag})
    env.update(extra_env or {})
    command = [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider",
               *(["-x"] if stop_first else []), *tests]
    start = time.monotonic()
    proc = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                            errors="replace", start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        kill_session(proc)
        out, _ = proc.communicate()
        code = None
        out += f"\n[tests.mutants: the run was killed after {timeout:g} s]\n"
    finally:
        kill_session(proc)
        kill_tagged(tag)
    return PytestRun(code, time.monotonic() - start, out)


def judge(mutant: Mutant, run: PytestRun) -> Result:
    """caught: a named test failed; escaped: all passed; error: anything else."""
    tail = "\n".join(run.output.splitlines()[-60:])
    if run.returncode == 0:
        return Result(mutant, "escaped", run.seconds, detail=run.summary, output=tail)
    failed = run.failed
    if run.returncode == 1 and failed:
        node, reason = failed[0]
        return Result(mutant, "caught", run.seconds, killed_by=node, detail=reason[:200])
    if run.returncode is None:
        # A hang is a detection too (pytest-timeout normally turns it into a failure first).
        return Result(mutant, "caught", run.seconds, killed_by="(timeout)",
                      detail="the tests did not finish", output=tail)
    why = {2: "interrupted or collection error", 3: "internal error", 4: "usage error",
           5: "no tests collected"}.get(run.returncode, f"exit status {run.returncode}")
    return Result(mutant, "error", run.seconds, detail=f"pytest: {why}", output=tail)


def run_mutant(mutant: Mutant, *, repo: Path = REPO, timeout: float = 300.0) -> Result:
    """Apply `mutant` to a fresh scratch copy of `repo`, run its tests, judge."""
    if mutant.todo is not None:
        return Result(mutant, "todo", 0.0, detail=mutant.todo)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mut-") as tmp:
        root = scratch_copy(repo, Path(tmp) / "repo")
        try:
            mutant.apply(root)
        except MutantError as e:
            return Result(mutant, "error", time.monotonic() - start, detail=str(e).splitlines()[0],
                          output=str(e))
        run = run_tests(root, mutant.tests, timeout)
    return judge(mutant, run)


def sanity_run(tests: Iterable[str], *, repo: Path = REPO, timeout: float = 900.0) -> PytestRun:
    """Run `tests` (deduplicated, in order) on an unmutated scratch copy, without -x."""
    unique = list(dict.fromkeys(tests))
    with tempfile.TemporaryDirectory(prefix="mut-") as tmp:
        root = scratch_copy(repo, Path(tmp) / "repo")
        return run_tests(root, unique, timeout, stop_first=False)


def table(results: Sequence[Result]) -> str:
    """A plain-text table: mutant, rule, killing test, outcome, seconds."""
    rows = [("mutant", "rule", "killed by", "result", "s")]
    for r in results:
        rows.append((r.mutant.name, r.mutant.rule, r.killed_by or "-", r.outcome,
                     f"{r.seconds:.1f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    widths[1] = min(widths[1], 70)
    lines = []
    for i, row in enumerate(rows):
        cells = [row[0].ljust(widths[0]), _clip(row[1], widths[1]).ljust(widths[1]),
                 row[2].ljust(widths[2]), row[3].ljust(widths[3]), row[4].rjust(widths[4])]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."
