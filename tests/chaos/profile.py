"""Timing profiles of the chaos suite: the supervisors' intervals and what follows.

- `lab`: U = 0.5 s, W = 2 s, stopTimeout S = 0.5 s, operationTimeout 0.4 s (the
  intervals of the other end-to-end tests).
- `corda`: U = 2 s, W = 4 s, S = 3 s, operationTimeout 1 s: Corda's documented
  updateInterval/waitInterval ratio (20000/40000) scaled down, with a stop timeout
  far longer than the time a lost lease leaves (a JVM-sized S).

Derived, exactly as the supervisor derives them (supervisor/core/timing.py `stop_graces`,
supervisor/core `Timing.from_config`; tests/chaos/test_profile.py checks they agree):
M = min(2 s, W/10); R = min(operationTimeout, (W - M - U)/2);
G = min(S, W - M - U - R). A node whose lease is being lost gets SIGTERM at
`t + W - M - G` and SIGKILL at `t + W - M` (`t`: the last successful renewal sent).

`keep_slack` is how late the renewal due at `t + U` may be answered before the
SIGTERM deadline: `W - M - G - U`. A cut-off shorter than `keep_slack` minus the
hedge interval (a stuck renewal is raced on a fresh connection this often) minus a
reconnect never costs the node; `short_cut_max` is the longest "short" cut the
suite injects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from supervisor.core.timing import StopGraces, stop_graces

RECONNECT = 0.1  # a fresh connection plus one renewal statement, on an idle machine


@dataclass(frozen=True)
class Profile:
    """One set of supervisor intervals (milliseconds, as written in the config)."""

    name: str
    update_ms: int
    wait_ms: int
    stop_ms: int
    operation_timeout_ms: int
    restart_delay: float = 1.0  # the runner's "systemd" RestartSec

    @property
    def U(self) -> float:
        return self.update_ms / 1000

    @property
    def W(self) -> float:
        return self.wait_ms / 1000

    @property
    def S(self) -> float:
        return self.stop_ms / 1000

    @property
    def M(self) -> float:
        return min(2.0, self.W / 10)

    @property
    def operation_timeout(self) -> float:
        return self.operation_timeout_ms / 1000

    @property
    def graces(self) -> StopGraces:
        return stop_graces(self.U, self.W, self.M, self.S, self.operation_timeout)

    @property
    def G(self) -> float:
        return self.graces.loss_grace

    @property
    def kill_after(self) -> float:
        """W - M: the safety deadline after the last renewal sent."""
        return self.graces.kill_after

    @property
    def term_after(self) -> float:
        """W - M - G: SIGTERM of a node whose lease is being lost."""
        return self.graces.term_after

    @property
    def poll(self) -> float:
        """How often a standby reads the row (as supervisor/core `Timing`)."""
        return max(0.05, min(self.U / 2, self.W / 4))

    @property
    def hedge(self) -> float:
        """A renewal without an answer this long is raced on a fresh connection."""
        return max(0.02, min(self.operation_timeout, self.U / 8))

    @property
    def keep_slack(self) -> float:
        """W - M - G - U: how late the renewal due at t + U may be answered."""
        return self.term_after - self.U

    @property
    def short_cut_max(self) -> float:
        """The longest cut-off the `blackhole_short` fault injects."""
        return round(self.keep_slack - self.hedge - RECONNECT, 3)

    def describe(self) -> str:
        return (f"profile {self.name}: U={self.U:g}s W={self.W:g}s stopTimeout={self.S:g}s "
                f"M={self.M:g}s operationTimeout={self.operation_timeout:g}s -> "
                f"G={self.G:g}s SIGTERM at t+{self.term_after:g}s SIGKILL at "
                f"t+{self.kill_after:g}s, keep slack {self.keep_slack:g}s")

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in self._fields().items()}

    def _fields(self) -> dict[str, Any]:
        return {"profile": self.name, "U": self.U, "W": self.W, "stopTimeout": self.S,
                "M": self.M, "operationTimeout": self.operation_timeout,
                "R": self.graces.renewal_allowance, "G": self.G,
                "term_after": self.term_after, "kill_after": self.kill_after,
                "poll": self.poll, "hedge": self.hedge, "keep_slack": self.keep_slack,
                "short_cut_max": self.short_cut_max, "restart_delay": self.restart_delay}


PROFILES: dict[str, Profile] = {
    "lab": Profile("lab", update_ms=500, wait_ms=2000, stop_ms=500, operation_timeout_ms=400),
    "corda": Profile("corda", update_ms=2000, wait_ms=4000, stop_ms=3000,
                     operation_timeout_ms=1000),
}


def profile(name: str) -> Profile:
    """The profile called `name`; ValueError when there is none."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; one of {sorted(PROFILES)}") from None
