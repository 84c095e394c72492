"""`python -m tests.mutants.coremut`: mutmut over the pure decision core and the timing rule.

Needs the `mutation` extra (`pip install -e '.[mutation,test]'`). Copies the repository
(`runner.scratch_copy`) into `--workdir` (default: a temporary directory, removed
after), writes mutmut's configuration there (`setup.cfg`: mutate `supervisor/core/`
(the timing rule included); run the pure tests `tests/test_core*.py`: no database, no
processes) and runs `mutmut run` in it. Prints the count per status and every
survivor with its diff; `--out FILE` writes the same report. `supervisor/node/machine.py`
(it reads /proc) is left out: the pure tests cannot run it.

Exit status: 0 when no mutant survived, 1 otherwise, 2 when mutmut could not run.
"""

from __future__ import annotations

import argparse
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from tests.mutants.runner import REPO, scratch_copy

ONLY_MUTATE = ("supervisor/core/*",)
TESTS = "tests/test_core*.py"
SETUP_CFG = """[mutmut]
source_paths =
    supervisor
only_mutate =
{only}
pytest_add_cli_args =
    -n
    0
    -p
    no:cacheprovider
pytest_add_cli_args_test_selection =
{tests}
"""


def configure(root: Path) -> list[str]:
    """Write mutmut's configuration into the copy at `root`; the test files it runs."""
    tests = sorted(str(p.relative_to(root)) for p in root.glob(TESTS))
    (root / "setup.cfg").write_text(SETUP_CFG.format(
        only="\n".join(f"    {p}" for p in ONLY_MUTATE),
        tests="\n".join(f"    {t}" for t in tests)))
    return tests


def mutmut(root: Path, *args: str, timeout: float | None = None) -> str:
    out = subprocess.run([sys.executable, "-m", "mutmut", *args], cwd=root, timeout=timeout,
                         capture_output=True, text=True, errors="replace", check=False)
    if out.returncode != 0:
        raise RuntimeError(f"mutmut {' '.join(args)} exited {out.returncode}:\n"
                           f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out.stdout


def report(root: Path, tests: list[str], seconds: float) -> tuple[str, int]:
    """The report text and the number of survivors."""
    statuses = dict(re.findall(r"^\s*(\S+): (.+)$", mutmut(root, "results", "--all", "true"),
                               re.M))
    counts = Counter(statuses.values())
    survivors = sorted(k for k, v in statuses.items() if v == "survived")
    lines = [f"command: python -m tests.mutants.coremut (mutmut run, "
             f"{_version()}) on {datetime.now(UTC):%Y-%m-%d}",
             f"machine: {platform.node()}, {platform.machine()}, "
             f"{_cores()} cores, Python {platform.python_version()}",
             f"mutated: {', '.join(ONLY_MUTATE)}", f"tests: {' '.join(tests)}",
             f"{len(statuses)} mutants: " + ", ".join(f"{n} {s}" for s, n in counts.most_common())
             + f"; {seconds:.0f} s", ""]
    for name in survivors:
        diff = mutmut(root, "show", name)
        body = [ln for ln in diff.splitlines() if ln.startswith(("-", "+"))
                and not ln.startswith(("---", "+++"))]
        lines.append(f"survived {name}")
        lines += [f"    {ln}" for ln in body]
    return "\n".join(lines) + "\n", len(survivors)


def _version() -> str:
    from importlib.metadata import version
    return f"mutmut {version('mutmut')}"


def _cores() -> int:
    import os
    return os.cpu_count() or 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.mutants.coremut", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, help="keep the copy and mutmut's results here "
                   "(a second run in the same directory only re-tests what changed)")
    p.add_argument("--out", type=Path, help="also write the report here")
    p.add_argument("--repo", type=Path, default=REPO)
    args = p.parse_args(argv)
    tmp = None
    if args.workdir is None:
        tmp = tempfile.mkdtemp(prefix="mut-core-")
        root = Path(tmp)
    else:
        root = args.workdir
    try:
        root = scratch_copy(args.repo, root)
        tests = configure(root)
        started = time.monotonic()
        try:
            mutmut(root, "run")
        except (RuntimeError, OSError) as e:
            print(e, file=sys.stderr)
            return 2
        text, survivors = report(root, tests, time.monotonic() - started)
        print(text, end="")
        if args.out:
            args.out.write_text(text)
        return 1 if survivors else 0
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
