"""The demo's closing summary: the measured times and what was left running."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Figures:
    """Seconds measured by one demo run (None: that step did not happen)."""

    u: float
    w: float
    backoff: float
    first_start: float | None = None  # supervisors started -> first node up
    failover: float | None = None  # kill -9 of the active supervisor -> other node up
    old_node_gone: float | None = None  # kill -9 -> the killed host's node gone
    handover: float | None = None  # `handover` command started -> other node up
    crash_restart: float | None = None  # node crash -> node up again
    tour_complete: bool = False
    problems: list[str] = field(default_factory=list)
    killed: list[int] = field(default_factory=list)  # pids the final sweep had to kill
    left: list[int] | None = None  # pids alive after the final sweep (None: not run)
    removed: str | None = None  # the temporary directory, once removed

    def render(self) -> str:
        def row(label: str, value: float | None, comment: str, in_w: bool = False) -> str:
            if value is None:
                return f"  {label:<40} -        (not reached before the demo ended)"
            ratio = f" = {value / self.w:.2f} W" if in_w else ""
            return f"  {label:<40} {value:6.3f} s{ratio}  {comment}"

        lines = ["", f"Summary (measured on this machine; U = {self.u:g} s, W = {self.w:g} s)",
                 row("first start: supervisors -> node up", self.first_start,
                     "(a new database server is watched for W first)"),
                 row("failover: kill -9 -> other node up", self.failover,
                     "(waits until the lease is W old)", in_w=True),
                 row("  the killed host's node gone after", self.old_node_gone,
                     "(its guard saw the supervisor die)"),
                 row("handover: command -> other node up", self.handover,
                     "(released at once: no waiting for W)", in_w=True),
                 row("node crash -> node up again", self.crash_restart,
                     f"(restart backoff {self.backoff:g} s)")]
        lines += [f"  problem: {p}" for p in self.problems]
        if self.killed:
            lines.append(f"  SIGKILLed at the end (did not stop by themselves): pids "
                         f"{', '.join(map(str, self.killed))}")
        if self.left is None:
            lines.append("  left running: unknown (the final sweep did not run)")
        elif self.left:
            lines.append(f"  left running: pids {', '.join(map(str, self.left))} (still alive "
                         f"after SIGKILL)")
        else:
            lines.append("  left running: nothing (PostgreSQL, supervisors, guards and nodes "
                         "all gone)")
        if self.removed:
            lines.append(f"  removed {self.removed}")
        return "\n".join(lines)
