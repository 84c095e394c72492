"""The core's one table of states and transitions (supervisor/core/transitions.py): the
table in its docstring is the table in its code, and a change the table does not allow
is refused. (Every rule's own changes of state go through it: the other core tests, the
property tests included, would fail with IllegalTransition otherwise.)"""

from __future__ import annotations

import re

import pytest

from supervisor.core import ALLOWED, IllegalTransition, State, initial_state, transitions
from supervisor.core.transitions import change


def documented() -> dict[State, set[State]]:
    """The from/to pairs of the docstring's table."""
    doc = transitions.__doc__ or ""
    table: dict[State, set[State]] = {s: set() for s in State}
    current: State | None = None
    for line in doc.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or (cells[0] and set(cells[0]) <= {"-"}):
            continue
        if cells[0] in {s.value for s in State}:
            current = State(cells[0])
        if current is not None and re.fullmatch(r"[a-z]+", cells[1] or ""):
            table[current].add(State(cells[1]))
    return table


def test_the_docstring_table_is_the_code_table() -> None:
    assert documented() == {s: set(ALLOWED[s]) for s in State}


def test_every_state_is_in_the_table_and_exited_is_the_end() -> None:
    assert set(ALLOWED) == set(State)
    assert not ALLOWED[State.EXITED]
    assert all(State.EXITED not in ALLOWED[s] for s in (State.ACTIVE, State.STANDBY))


def test_a_change_the_table_does_not_allow_is_refused() -> None:
    s = initial_state(lease_enabled=True)
    assert s.state is State.STANDBY
    change(s, State.STANDBY)  # staying is always allowed
    with pytest.raises(IllegalTransition, match="standby -> backoff"):
        change(s, State.BACKOFF)
    assert s.state is State.STANDBY
    change(s, State.ACTIVE)
    assert s.state is State.ACTIVE
