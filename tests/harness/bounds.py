"""Availability bounds: how late may something the rules want happen (a node back, a
failover, a handover, a command that gives up)? The one place such a bound is made.

A bound is `nominal + allowance`: the nominal time the rules give (W after the last
renewal, the stop timeout, a connect timeout, ...) plus an allowance for the machine's
load, derived from the figures tests/harness/loadprobe.py measured (the `load`
fixture measures them while the test runs; `measure()` at one moment):

    allowance = max(floor, base + spawns * spawn + turns * sched_delay_p99)

`spawns` counts the interpreters started on the way (the guard imports the supervisor
package, about two bare starts, and the stand-in node is one: `NODE_START_SPAWNS`),
`turns` the event-loop turns, thread wake-ups and polls (each may be as late as the
scheduling delay), `base` a few database round trips. `floor` is the fixed slack the
test used before the bound was derived: an allowance is never tighter than that, so a
quiet machine checks what it always did and a busy one does not fail for its load.
This is how the chaos suite's checker derives its own (tests/chaos/load.py,
`availability_allowance`, `kill_allowance`).

Safety bounds never come from here: never two nodes and no start before t + W are
exact, whatever the load. The one timing of a kill, a node dead by t + W - M, is a
timer's: `kill_within` allows it the worst wake-up lateness measured (never below the
test's fixed slack), which the margin M absorbs before t + W. A wait's own timeout
(how long to wait before giving up: `GIVE_UP`) is not a bound either: `wait_within`
waits that long and then checks the bound itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.harness.loadprobe import Load, LoadWatch
from tests.harness.proc import wait_until

#: How long a wait for something the rules want gives up after (not a bound).
GIVE_UP = 30.0
#: Interpreter starts on the way to a new node: the guard (it imports the supervisor
#: package: about two bare starts) and the stand-in node.
NODE_START_SPAWNS = 3


def _figures(load: Load | LoadWatch) -> Load:
    return load.load() if isinstance(load, LoadWatch) else load


def allowance(load: Load | LoadWatch, *, spawns: int = NODE_START_SPAWNS, base: float = 0.5,
              turns: int = 50, floor: float = 0.0) -> float:
    """Slack for a path that starts `spawns` interpreters and takes `turns` wake-ups."""
    f = _figures(load)
    return max(floor, base + spawns * f.spawn + turns * f.sched_delay_p99)


def within(nominal: float, load: Load | LoadWatch, *, floor: float = 0.0,
           spawns: int = NODE_START_SPAWNS, base: float = 0.5, turns: int = 50) -> float:
    """The bound: `nominal` plus the allowance for the load."""
    return nominal + allowance(load, spawns=spawns, base=base, turns=turns, floor=floor)


def kill_within(nominal: float, load: Load | LoadWatch, *, floor: float = 0.0) -> float:
    """The bound on a kill due at `nominal`: a timer's wake-up, which can be as late as
    the worst one measured (not only the 99th percentile), and the signal's delivery."""
    f = _figures(load)
    return nominal + max(floor, 0.05 + max(10 * f.sched_delay_p99, f.sched_delay_max))


def wait_within(predicate: Callable[[], object], nominal: float, load: Load | LoadWatch, *,
                floor: float, what: str, since: float | None = None,
                spawns: int = NODE_START_SPAWNS) -> float:
    """Wait until `predicate()` (polled every 5 ms, giving up after `GIVE_UP` s), then
    assert it came within the bound of `since` (default: now); the seconds it took."""
    start = time.monotonic() if since is None else since
    wait_until(predicate, start + GIVE_UP - time.monotonic(), interval=0.005, message=what)
    took = time.monotonic() - start
    bound = within(nominal, load, floor=floor, spawns=spawns)
    assert took < bound, (f"{what}: after {took:.3f} s, bound {bound:.3f} s "
                          f"(nominal {nominal:.3f} s; load {_figures(load)})")
    return took
