"""A process that SIGKILL cannot end (yet): frozen by the cgroup v1 freezer.

A task frozen by the v1 freezer sits in uninterruptible sleep (state D): a SIGKILL
is queued but takes effect only when it is thawed, like a process stuck in the
kernel on a dead NFS server. `frozen(pid)` freezes one process in a private v1
freezer cgroup and thaws it again on exit (then a queued SIGKILL ends it). The
test is skipped (with the reason) where no writable v1 freezer hierarchy exists.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.proc import wait_until

FREEZER = Path("/sys/fs/cgroup/freezer")


class Frozen:
    """One frozen cgroup; `thaw()` lets its processes run (and die) again."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _state(self, value: str) -> None:
        (self.path / "freezer.state").write_text(value)

    def freeze(self) -> None:
        self._state("FROZEN")
        wait_until(lambda: (self.path / "freezer.state").read_text().strip() == "FROZEN",
                   5.0, message=f"{self.path} frozen")

    def thaw(self) -> None:
        self._state("THAWED")


def _usable() -> str | None:
    if not (FREEZER / "freezer.state").exists() and not (FREEZER / "cgroup.procs").exists():
        return f"no cgroup v1 freezer at {FREEZER}"
    if not os.access(FREEZER, os.W_OK):
        return f"{FREEZER} is not writable"
    return None


@contextlib.contextmanager
def frozen(pid: int) -> Iterator[Frozen]:
    """Freeze process `pid` (state D) until the block ends or `thaw()` is called."""
    why = _usable()
    if why is not None:
        pytest.skip(why)
    path = FREEZER / f"corda-ha-test-{uuid.uuid4().hex[:12]}"
    try:
        path.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot create a v1 freezer cgroup: {exc}")
    group = Frozen(path)
    try:
        (path / "cgroup.procs").write_text(str(pid))
        group.freeze()
        yield group
    finally:
        group.thaw()
        for left in (path / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):
                (FREEZER / "cgroup.procs").write_text(left)
        with contextlib.suppress(OSError, AssertionError):
            wait_until(lambda: not (path / "cgroup.procs").read_text().split(), 5.0,
                       message=f"{path} empty")
        with contextlib.suppress(OSError):
            path.rmdir()


def state(pid: int) -> str:
    """The process state letter from /proc/<pid>/stat ("" when gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return text[text.rfind(")") + 2:].split()[0]
