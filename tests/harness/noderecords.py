"""Reading what the stand-in node (tests/harness/fake_node.py, `--record DIR`) wrote: one
JSON file per node process, `DIR/<pid>.json`, written atomically at its start (once its
SIGTERM handler is set) and again with `stop` on a graceful exit. A file that exists
is complete."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.harness.proc import wait_until


def read_record(directory: Path, pid: int) -> dict[str, Any]:
    """Node `pid`'s record, as it is now (it must exist)."""
    data: dict[str, Any] = json.loads((directory / f"{pid}.json").read_text())
    return data


def wait_record(directory: Path, pid: int, timeout: float = 5.0) -> dict[str, Any]:
    """Node `pid`'s record, waiting up to `timeout` s for the node to write it."""
    path = directory / f"{pid}.json"
    wait_until(path.exists, timeout, message=f"{path} to appear")
    return read_record(directory, pid)


def the_only_record(directory: Path, timeout: float = 10.0) -> dict[str, Any]:
    """The single record in `directory`, waiting for it (a setsid'ed or wrapped node,
    whose pid the test does not know)."""
    found: list[Path] = []

    def one() -> bool:
        found[:] = list(directory.glob("*.json"))
        return len(found) == 1

    wait_until(one, timeout, message=f"one record in {directory}")
    data: dict[str, Any] = json.loads(found[0].read_text())
    return data
