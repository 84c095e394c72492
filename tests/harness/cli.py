"""Running the supervisor's command line to completion: `run_cli` (any subcommand, output
captured), `holders` (the lease's holders as `history --json` lists them) and
`run_to_exit` (the daemon, `run --config`, until it exits by itself); `assert_clean`
checks what a failing start printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.harness.paths import REPO
from tests.harness.proc import Reaper

#: A password the tests give, which no output may show.
SECRET = "Wr0ng-pass-x7"


def run_cli(*args: str, timeout: float = 60.0,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m supervisor ARGS...` to completion; stdout and stderr captured."""
    full_env = dict(os.environ, PYTHONPATH=str(REPO))
    full_env.pop("NOTIFY_SOCKET", None)
    if env:
        full_env.update(env)
    return subprocess.run([sys.executable, "-m", "supervisor", *args], capture_output=True,
                          text=True, timeout=timeout, env=full_env, cwd=REPO,
                          stdin=subprocess.DEVNULL)


def holders(config: Path) -> list[str]:
    """The holders of the lease's acquisitions, newest first (`history --json`)."""
    out = run_cli("history", "--json", "--config", str(config))
    assert out.returncode == 0, out
    return [h["holder"] for h in json.loads(out.stdout)]


def run_to_exit(reaper: Reaper, path: Path, timeout: float = 30) -> tuple[int, str]:
    """`python -m supervisor run --config PATH` until it exits: (status, its output)."""
    proc = reaper.popen([sys.executable, "-m", "supervisor", "run", "--config", str(path)],
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def assert_clean(out: str) -> None:
    """No traceback and no `SECRET` in the output."""
    assert "Traceback" not in out, out
    assert SECRET not in out
