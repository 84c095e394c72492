"""Who contends for the lease, as plain values: a contender (`Identity`) and one process
on one machine (`ProcessRef`). Pure: `supervisor.node.machine` reads them off this
machine. Imports nothing.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProcessRef:
    """One process on one machine: a pid and its start time (None: not recorded)."""

    pid: int
    started: int | None


@dataclass(frozen=True)
class Identity:
    """One contender: the Corda `machineName`, this host, this process."""

    machine_name: str
    host: str  # gethostname(): shown to operators, never trusted
    pid: int
    instance: str  # uuid4 hex, new for every process
    machine: str = ""  # machine_identity()
    started: int | None = None  # this process's start time (clock ticks since boot)

    def same_machine(self, machine: str | None) -> bool:
        """True when `machine` (from a lease row) names this machine identity."""
        return bool(machine) and machine == self.machine
