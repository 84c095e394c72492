"""The one clock of every deadline: CLOCK_BOOTTIME, and how long a wait may be.

CLOCK_MONOTONIC stops while the machine is suspended; CLOCK_BOOTTIME does not. The
lease's time runs on in the database and on the other host while this one sleeps, so
a holder that resumes after a suspend longer than its lease must find its kill
deadline passed at once. The daemon (the pure core's `now`), the guard and the node
handle all read `now()`, and the deadlines they exchange are on this clock.

A sleep or poll timeout, though, is measured by the kernel on CLOCK_MONOTONIC: a
suspend lengthens it. So no wait for a deadline is longer than `MAX_WAIT`; after each,
the deadline is compared with `now()` again. Stdlib only: the guard imports this.
"""

from __future__ import annotations

import time

#: The longest a deadline's waiter sleeps before it reads `now()` again (seconds).
MAX_WAIT = 0.25


def now() -> float:
    """Seconds on CLOCK_BOOTTIME (counts a suspend; never jumps)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)
