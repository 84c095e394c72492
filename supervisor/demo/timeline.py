"""The demo's timeline: supervisor log records in, short human lines out.

`Timeline.feed(host, record)` takes one JSON log record of a supervisor (or a
non-JSON line as ``{"raw": ...}``), updates what is known of that host (state,
epoch, node pid, who holds the lease) and returns the lines to print, if any.
Times are seconds since the demo started, taken from the record's own
``timestamp`` (wall clock, as the supervisor logged it) when it has one.
Nothing here does I/O.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

HOST_WIDTH = 6


@dataclass
class HostView:
    """What the timeline knows of one host."""

    name: str
    supervisor_pid: int | None = None
    state: str = "stopped"
    epoch: int | None = None
    node_pid: int | None = None
    node_up_at: float | None = None  # demo seconds of the last node_started
    acquired_at: float | None = None
    standby_view: tuple[object, object, bool] | None = None  # holder, epoch, could take over


@dataclass
class Timeline:
    """State and formatting shared by every line of one demo run."""

    started: float = field(default_factory=time.time)  # wall clock of the demo's t = 0
    hosts: dict[str, HostView] = field(default_factory=dict)
    holder: str | None = None  # host that holds the lease, as far as the logs tell
    holder_dead: bool = False  # its supervisor was killed: the row expires after W
    last_holder: str | None = None
    released_by: str | None = None  # the last holder released (rather than lost) it

    def host(self, name: str) -> HostView:
        return self.hosts.setdefault(name, HostView(name))

    def now(self) -> float:
        return time.time() - self.started

    def at(self, record: dict[str, Any]) -> float:
        """Demo seconds of a record: its `timestamp`, else now."""
        stamp = record.get("timestamp")
        if isinstance(stamp, str):
            try:
                return datetime.fromisoformat(stamp).timestamp() - self.started
            except ValueError:
                pass
        return self.now()

    def line(self, t: float, who: str, text: str) -> str:
        return f"{t:7.2f}s  {who:<{HOST_WIDTH}}  {text}"

    def note(self, text: str, t: float | None = None) -> str:
        """A line of the demo itself."""
        return self.line(self.now() if t is None else t, "demo", text)

    def summary(self) -> str:
        """Who holds the lease and what runs where, in one line."""
        parts = []
        for view in self.hosts.values():
            if view.node_pid is not None:
                parts.append(f"{view.name} {view.state} (node pid {view.node_pid})")
            else:
                parts.append(f"{view.name} {view.state} (no node)")
        if self.holder is None:
            holder = "lease free"
        elif self.holder_dead:
            holder = f"lease still {self.holder}'s until it expires"
        else:
            holder = f"lease: {self.holder}, epoch {self.host(self.holder).epoch}"
        return f"{holder}; " + ", ".join(parts)

    # -- records -------------------------------------------------------------------------

    def feed(self, name: str, record: dict[str, Any]) -> list[str]:
        """Update from one record of host `name`; the lines to print (maybe none)."""
        view = self.host(name)
        t = self.at(record)
        if "raw" in record:
            return [self.line(t, name, f"| {record['raw']}")]
        event = record.get("event")
        if event == "state_changed":
            view.state = str(record.get("to"))
            return []
        text = self._describe(view, str(event), record, t)
        if text is None:
            level = record.get("level")
            if level not in ("warning", "error", "critical"):
                return []
            detail = ", ".join(f"{k}={v}" for k, v in record.items()
                               if k not in ("event", "level", "logger", "timestamp"))
            text = f"{level}: {event}" + (f" ({detail[:120]})" if detail else "")
        return [self.line(t, name, text)]

    def _describe(self, view: HostView, event: str, r: dict[str, Any],
                  t: float) -> str | None:
        if event == "supervisor_started":
            view.supervisor_pid = r.get("pid")
            view.state = "standby"
            return f"supervisor started (pid {view.supervisor_pid}), contending for the lease"
        if event == "database_server_young":
            return (f"the database server is new (up {r.get('uptime')} s): takes nothing "
                    f"before it has watched it for W")
        if event == "lease_acquired":
            return self._acquired(view, r, t)
        if event == "standby_view":
            seen = (r.get("holder"), r.get("epoch"), bool(r.get("could_take_over")))
            if seen == view.standby_view:
                return None  # only the wording of the reason changed (e.g. a countdown)
            view.standby_view = seen
            held = (f"{r.get('holder')} holds epoch {r.get('epoch')}" if r.get("holder")
                    else "the lease is free")
            can = "yes" if r.get("could_take_over") else f"NO ({r.get('reason')})"
            return f"standby view: {held}; could take over: {can}"
        if event == "node_started":
            view.node_pid = r.get("pid")
            view.node_up_at = t
            return f"node up (pid {view.node_pid}, epoch {r.get('epoch')})"
        if event == "handover_requested":
            return "sees the handover request: stops its node, then releases the lease"
        if event == "node_stopping":
            return f"stopping its node ({r.get('reason')}; SIGTERM, grace {r.get('grace')} s)"
        if event == "node_exited":
            view.node_pid = None
            how = (f"exit {r.get('exit_code')}" if r.get("signal") is None
                   else f"signal {r.get('signal')}")
            if r.get("expected"):
                return f"node down ({how}, stopped)"
            return f"node CRASHED ({how}, after {r.get('runtime')} s)"
        if event == "node_restart_scheduled":
            return (f"restarts the node in {r.get('delay')} s, same epoch "
                    f"(crash {r.get('crashes')} of the window)")
        if event == "lease_released":
            if self.holder == view.name:
                self.holder = None
            self.last_holder, self.released_by = view.name, view.name
            view.epoch = None
            return f"lease released (epoch {r.get('epoch')})"
        if event == "lease_lost":
            if self.holder == view.name:
                self.holder = None
            view.epoch = None
            return "LEASE LOST: node killed"
        if event == "cooldown_started":
            return f"cools down for {r.get('seconds')} s (does not contend)"
        if event == "cooldown_ended":
            return "cooldown over: standby again"
        if event == "shutdown_requested":
            return f"{r.get('signal')}: shutting down (node first, then the lease)"
        if event == "supervisor_exiting":
            view.state = "stopped"
            return f"supervisor exited (status {r.get('code')})"
        return None

    def _acquired(self, view: HostView, r: dict[str, Any], t: float) -> str:
        """The supervisor's own account of how it got the lease (`how`,
        `previous_holder`) when it logs one, else what the timeline saw."""
        epoch = r.get("epoch")
        previous = self.holder or self.last_holder
        told, told_from = r.get("how"), r.get("previous_holder")
        if isinstance(told, str) and told != "unknown":
            how = told if not told_from or str(told_from) in told else f"{told}; from {told_from}"
        elif previous is None:
            how = "the lease was free"
        elif previous == view.name:
            how = "took its own lease back"
        elif self.holder == previous and not self.holder_dead:
            how = f"from {previous}"
        elif self.released_by == previous:
            how = f"released by {previous}"
        else:
            how = f"expired: {previous} stopped renewing, W passed"
        self.last_holder = self.holder = view.name
        self.released_by = None
        self.holder_dead = False
        view.epoch = epoch if isinstance(epoch, int) else None
        view.acquired_at = t
        view.standby_view = None
        return f"lease acquired: epoch {epoch} ({how})"

    def supervisor_killed(self, name: str) -> None:
        """The demo SIGKILLed host `name`'s supervisor: it no longer renews."""
        view = self.host(name)
        view.state = "killed"
        view.supervisor_pid = None
        if self.holder == name:
            self.holder_dead = True
            self.released_by = None

    def node_gone(self, name: str) -> None:
        view = self.host(name)
        view.node_pid = None
        view.epoch = None
