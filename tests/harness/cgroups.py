"""cgroup v2 helpers for tests: a private parent cgroup, processes started inside one.

The `cgroup_parent` fixture is registered in tests/conftest.py.
The parent is removed at teardown, with everything in it killed first, even when
the test failed. Tests that need it are skipped where no cgroup v2 is writable.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from supervisor.node import cgroup as cgroups
from tests.harness.proc import Reaper, wait_until


def destroy(path: str, timeout: float = 5.0) -> None:
    """Kill everything in `path` (and below), wait until it is empty, remove it all."""
    if not os.path.isdir(path):
        return
    cgroups.kill(path)
    wait_until(lambda: not cgroups.populated(path), timeout,
               message=f"cgroup {path} to empty at teardown")
    cgroups.remove(path)


@pytest.fixture
def cgroup_parent() -> Iterator[str]:
    """A fresh, empty cgroup directory for this test; destroyed afterwards."""
    own = cgroups.own_cgroup_dir()
    if own is None:
        pytest.skip("no cgroup v2 hierarchy for this process")
    path = os.path.join(own, f"corda-ha-test-{uuid.uuid4().hex[:12]}")
    try:
        os.mkdir(path)
    except OSError as exc:
        pytest.skip(f"cannot create a cgroup under {own}: {exc}")
    try:
        yield path
    finally:
        destroy(path)


def spawn_in(reaper: Reaper, cgroup: str, args: Sequence[str], **kw: Any
             ) -> subprocess.Popen[Any]:
    """Start `args` inside `cgroup` (the shell joins it, then execs): no preexec_fn."""
    script = 'echo $$ > "$0/cgroup.procs" && exec "$@"'
    return reaper.popen(["/bin/sh", "-c", script, cgroup, *args], **kw)


def setsid_tree(reaper: Reaper, cgroup: str, tmp: Path) -> tuple[int, int]:
    """In `cgroup`: a leader (sh) with a setsid'ed grandchild (sleep) in another
    session. Returns (leader pid, grandchild pid); both are tracked for teardown."""
    pidfile = tmp / f"grandchild-{uuid.uuid4().hex[:6]}"
    inner = f'echo $$ > {pidfile}; exec sleep 1000'
    leader = spawn_in(reaper, cgroup, ["/bin/sh", "-c", f"setsid /bin/sh -c '{inner}' & "
                                       "exec sleep 1000"])
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 5,
               message="setsid grandchild to start")
    grandchild = int(pidfile.read_text())
    reaper.track_pid(grandchild)
    wait_until(lambda: grandchild in cgroups.procs(cgroup), 5,
               message="grandchild listed in the cgroup")
    assert os.getsid(grandchild) != os.getsid(leader.pid)
    return leader.pid, grandchild
