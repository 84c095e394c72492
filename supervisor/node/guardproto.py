"""The guard's pipe protocol, in the one module both sides import: the guard
(`supervisor.node.guard`) speaks it, the node handle (`supervisor.node.process`) drives
it. Stdlib only (the guard imports it).

stdin, line based (UTF-8): line 1 is the spec (`spec_line`), then one command a line:

- `deadline <float>` (absolute, `supervisor.clock`; SIGKILL the node when it passes)
  or `deadline none` (clear it): `deadline_command`;
- `stop <grace>`: SIGTERM the node now, SIGKILL it after `grace` seconds or at the
  deadline, whichever is first (a later stop only shortens the grace; `stop inf`:
  SIGTERM only): `stop_command`;
- `kill`: SIGKILL the node now (`KILL`).

The status fd carries JSON lines, one event each (`event_line`, `read_event`):
`started` (pid, pgid) or `spawn_failed` (error); then an `ack` (seq, and error when the
line was ignored) for every command line once applied; then exactly one `exited`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Literal

STARTED = "started"
SPAWN_FAILED = "spawn_failed"
ACK = "ack"
EXITED = "exited"

KILL = "kill"


@dataclass(frozen=True)
class Command:
    """One parsed command line: `deadline` (value: the deadline, None to clear it),
    `stop` (value: the grace, >= 0, inf for SIGTERM only) or `kill`."""

    kind: Literal["deadline", "stop", "kill"]
    value: float | None = None


def spec_line(command: list[str], cwd: str, env: dict[str, str], deadline: float | None,
              cgroup: str | None) -> bytes:
    """Line 1: what to run, where, with which environment (never on argv: `ps` shows
    argv), its deadline (None: none yet) and the cgroup to put it in (None: none)."""
    return (json.dumps({"command": command, "cwd": cwd, "env": env, "deadline": deadline,
                        "cgroup": cgroup}) + "\n").encode()


def deadline_command(deadline: float | None) -> str:
    return "deadline none" if deadline is None else f"deadline {deadline!r}"


def stop_command(grace: float) -> str:
    return f"stop {max(0.0, grace)!r}"


def parse_command(line: str) -> Command | None:
    """The command on `line`; None for a blank line. Raises ValueError (why) for
    anything else."""
    words = line.split()
    if not words:
        return None
    if words[0] == "deadline" and len(words) == 2:
        if words[1] == "none":
            return Command("deadline", None)
        deadline = float(words[1])
        if not math.isfinite(deadline):
            raise ValueError("deadline must be finite")
        return Command("deadline", deadline)
    if words[0] == "stop" and len(words) == 2:
        grace = float(words[1])
        if math.isnan(grace):
            raise ValueError("grace must be a number")
        return Command("stop", max(0.0, grace))
    if words[0] == KILL and len(words) == 1:
        return Command("kill")
    raise ValueError("unknown command")


def event_line(**fields: Any) -> bytes:
    """One status event (fields include `event`, one of the names above)."""
    return (json.dumps(fields) + "\n").encode()


def read_event(line: str) -> dict[str, Any]:
    """One status line as a dict with an `event`; raises ValueError when it is not."""
    event = json.loads(line)
    if not isinstance(event, dict) or not isinstance(event.get("event"), str):
        raise ValueError("not a guard event")
    return event
