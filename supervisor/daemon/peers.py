"""The member table as the core sees it: every member row (read by the listener after
each refresh of this member's) turned into a `PeersSeen` event."""

from __future__ import annotations

from supervisor.core.identity import Identity
from supervisor.core.messages import Peer, PeersSeen
from supervisor.lease import MemberRow


def peers_event(rows: list[MemberRow], identity: Identity) -> PeersSeen:
    """`rows` as the core's `PeersSeen` (this supervisor's own row marked `me`)."""
    return PeersSeen(tuple(
        Peer(instance=r.member.instance, machine_name=r.member.machine_name,
             me=r.member.instance == identity.instance, fresh=r.fresh,
             can_take_over=r.member.can_take_over, priority=r.member.priority,
             nofailover=r.member.nofailover, settings=r.member.settings)
        for r in rows))
