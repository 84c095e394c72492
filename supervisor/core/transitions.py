"""The supervisor's states and the transitions between them: one table, one function.

A state says what this host is doing with the lease and its node. Every change of
state goes through `change()`, which refuses (raises `IllegalTransition`) one the
table does not allow: a rule that would move the core somewhere it must never go is
a bug that stops the core at once, not a state to carry on from. (Staying in a state
is always allowed.) Stdlib only; imports nothing of ours.

| from       | to                                | when                                       |
|------------|-----------------------------------|--------------------------------------------|
| standby    | active                            | the lease was acquired, the node starts    |
|            | stopping                          | shutdown; an acquisition that came too late|
| active     | backoff                           | the node crashed (or a start was refused)  |
|            | paused                            | the node crashed while the pair is paused  |
|            | stopping                          | handover, shutdown, lease lost or overdue, |
|            |                                   | crash loop                                 |
|            | standby                           | the run ended as asked with nothing owed   |
| backoff    | active                            | the crash restart (the lease still allows) |
|            | standby                           | the lease lost while no node ran           |
|            | stopping                          | handover, shutdown                         |
|            | disabled                          | the crash restart, lease off               |
|            | paused                            | the pair was paused before the restart     |
| paused     | active                            | `resume`: the node restarts                |
|            | standby                           | the lease lost while no node ran           |
|            | stopping                          | shutdown                                   |
| stopping   | standby                           | the node is gone and the lease given up    |
|            | cooldown                          | ... after a crash loop or a handover       |
|            | exited                            | ... on shutdown                            |
| cooldown   | standby                           | the cooldown is over                       |
|            | disabled                          | ... lease off: the node starts again       |
|            | stopping                          | shutdown                                   |
| disabled   | backoff                           | the node crashed (lease off)               |
|            | cooldown                          | crash loop (lease off)                     |
|            | stopping                          | shutdown                                   |
| exited     | (none)                            | the end                                    |
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Protocol


class State(StrEnum):
    STANDBY = "standby"  # contending: reads the row, listens for releases
    ACTIVE = "active"  # holds the lease; the node runs (or is starting)
    BACKOFF = "backoff"  # holds the lease; the node crashed, its restart is due later
    PAUSED = "paused"  # holds the lease; the node is down and stays down until `resume`
    STOPPING = "stopping"  # the node is being stopped, then the lease released
    COOLDOWN = "cooldown"  # gave the lease away (crash loop, handover): no contending
    DISABLED = "disabled"  # `on = false`: plain supervision, no lease
    EXITED = "exited"  # done: the process exits


ALLOWED: Mapping[State, frozenset[State]] = {
    State.STANDBY: frozenset({State.ACTIVE, State.STOPPING}),
    State.ACTIVE: frozenset({State.BACKOFF, State.PAUSED, State.STOPPING, State.STANDBY}),
    State.BACKOFF: frozenset({State.ACTIVE, State.PAUSED, State.STANDBY, State.STOPPING,
                              State.DISABLED}),
    State.PAUSED: frozenset({State.ACTIVE, State.STANDBY, State.STOPPING}),
    State.STOPPING: frozenset({State.STANDBY, State.COOLDOWN, State.EXITED}),
    State.COOLDOWN: frozenset({State.STANDBY, State.DISABLED, State.STOPPING}),
    State.DISABLED: frozenset({State.BACKOFF, State.COOLDOWN, State.STOPPING}),
    State.EXITED: frozenset(),
}


class IllegalTransition(Exception):
    """A rule asked for a change of state the table does not allow (a bug)."""


class HasState(Protocol):
    state: State


def change(s: HasState, to: State) -> None:
    """Move `s` to `to`, or raise `IllegalTransition` (see the table)."""
    if to is not s.state and to not in ALLOWED[s.state]:
        raise IllegalTransition(f"{s.state} -> {to} is not a transition of the core")
    s.state = to
