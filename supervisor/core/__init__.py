"""The pure decision core: `step(state, event, now) -> (state, actions)`.

Owns: the states and their transitions (`transitions`: one table, one function that
refuses what it does not allow), what the core remembers (`state`), the rules
(`standby`, `holder`, `lifecycle`, on the working copy of `base`, dispatched by
`step`), the messages in and out (`messages`), the timing rule (`timing`), the lease
row as values and its observation (`row`, `observation`) and the identity values
(`identity`).

May import: the stdlib and `supervisor.config` (values) only; nothing here touches the
OS. No I/O and no clock reads: `now` is the caller's `supervisor.clock.now()` and every
effect is returned as an action for the daemon to carry out. The daemon promises that
every lease action it is given produces exactly one result event (success or
`LeaseCallFailed`) within the action's `timeout`, and that every `StartNode` is
followed by `NodeStartRefused`, or by `NodeStarted` and/or `NodeExited`.

Timing (docs/design.md, "The timing rule"; `timing`): let `t` be when the last
successful renewal (or the acquisition) was *sent*. Nobody else may take the lease
before `t + W`, so

- `term_at = t + W - M - G`: SIGTERM the node (graceful stop with the loss grace
  `G = min(S, W - M - U - R)`) and give the lease up;
- `kill_at = t + W - M`: SIGKILL the node's process group. The guard holds the
  same deadline, so the node dies on time even when this process is frozen.

Planned stops (shutdown, handover) give the node the full `S` while renewals go
on; the kill deadline still cuts them short if renewals fail.

A standby takes a held lease only after it has seen the row unchanged for W on
its own clock (`seen_since + W`) and the database agrees the row expired. When
another database server starts answering (a restart, a failover to a replica
that may have lost the last writes), it takes nothing at all, not even a free
row or its own dead predecessor's, before it has watched that server for W.
"""

from supervisor.core.messages import (
    AcquireLease,
    Action,
    Begin,
    Event,
    Exit,
    HandoverRequested,
    KillNode,
    LeaseAcquired,
    LeaseCallFailed,
    LeaseLost,
    LeaseNotAcquired,
    LeaseObserved,
    LeaseOpKind,
    LeaseReleased,
    LeaseRenewed,
    Log,
    NodeExited,
    NodeReady,
    NodeStarted,
    ObserveLease,
    PeerReleased,
    ReleaseLease,
    RenewLease,
    SeenVersion,
    SetNodeDeadline,
    ShutdownRequested,
    StartNode,
    StopNode,
    Tick,
)
from supervisor.core.state import (
    AfterStop,
    CoreState,
    NodePhase,
    Timing,
    backoff_delay,
    initial_state,
    kill_deadline,
    next_wakeup,
    takeover_readiness,
    term_deadline,
)
from supervisor.core.step import step
from supervisor.core.transitions import ALLOWED, IllegalTransition, State

__all__ = [
    "ALLOWED",
    "AcquireLease",
    "Action",
    "AfterStop",
    "Begin",
    "CoreState",
    "Event",
    "Exit",
    "HandoverRequested",
    "IllegalTransition",
    "KillNode",
    "LeaseAcquired",
    "LeaseCallFailed",
    "LeaseLost",
    "LeaseNotAcquired",
    "LeaseObserved",
    "LeaseOpKind",
    "LeaseReleased",
    "LeaseRenewed",
    "Log",
    "NodeExited",
    "NodePhase",
    "NodeReady",
    "NodeStartRefused",
    "NodeStarted",
    "ObserveLease",
    "PeerReleased",
    "ReleaseLease",
    "RenewLease",
    "SeenVersion",
    "SetNodeDeadline",
    "ShutdownRequested",
    "StartNode",
    "State",
    "StopNode",
    "Tick",
    "Timing",
    "backoff_delay",
    "initial_state",
    "kill_deadline",
    "next_wakeup",
    "step",
    "takeover_readiness",
    "term_deadline",
]
