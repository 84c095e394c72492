"""This host as a candidate among the pair's members: what the core remembers about
`candidate { nofailover, priority }`, the other members (from the member table), the
timing settings they publish and a handover set for a time (docs/design.md, "Priority
among standbys"). Values and pure functions only; imports nothing of ours but the
messages.

The rules:

- **nofailover**: this host never takes the lease (not a free row, not an expired one,
  not its own dead predecessor's).
- **priority only adds waiting**: a standby that sees `k` live candidates with a
  distinct higher priority waits `k * U` longer than the takeover rule asks (seen
  unchanged for `W + k * U`; a free row seen free for `k * U`). Never less: with equal
  priorities `k = 0` and nothing changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from supervisor.core.messages import Peer


@dataclass
class Candidacy:
    """What the core knows of this host as a candidate and of the other members."""

    nofailover: bool = False
    priority: int = 0
    peers: tuple[Peer, ...] = ()  # the member table as last read (this host included)
    settings: frozenset[tuple[object, ...]] = frozenset()  # distinct published timings
    handover_due_at: float | None = None  # a handover set for a time, on our clock
    handover_at_to: str | None = None  # ... to this member (None: the best candidate)
    settle: tuple[bool, str | None] | None = None  # (proceed, to): owed to the row


def live_candidates(peers: tuple[Peer, ...]) -> list[Peer]:
    """Other members that are fresh, could take over now and are not `nofailover`."""
    return [p for p in peers if not p.me and p.fresh and p.can_take_over and not p.nofailover]


def higher_ranks(priority: int, peers: tuple[Peer, ...]) -> int:
    """How many distinct priorities above `priority` the live candidates have."""
    return len({p.priority for p in live_candidates(peers) if p.priority > priority})


def priority_wait(c: Candidacy, update_interval: float) -> float:
    """The extra wait of this standby before a takeover: `k * U` (never negative)."""
    return higher_ranks(c.priority, c.peers) * update_interval


def best_candidate(peers: tuple[Peer, ...]) -> str | None:
    """The machineName of the one live candidate with the highest priority; None when
    there is none, or when the highest priority is shared (then any may take it)."""
    live = live_candidates(peers)
    if not live:
        return None
    top = max(p.priority for p in live)
    best = [p for p in live if p.priority == top]
    return best[0].machine_name if len(best) == 1 else None


def timing_settings(peers: tuple[Peer, ...]) -> frozenset[tuple[object, ...]]:
    """The distinct (updateInterval, waitInterval, margin, version) of the fresh members."""
    return frozenset(p.settings for p in peers if p.fresh and p.settings is not None)
