"""How busy is this machine right now? Timing allowances for end-to-end tests.

A timing bound in an end-to-end test (failover within W + x) must hold on a busy
2-core CI machine without being loosened for everybody. So the slack `x` is
derived from what the machine does at the moment: how late a sleeping thread
wakes up (scheduling delay) and how long a Python interpreter takes to start
(the guard and the stand-in node are Python processes). Safety assertions (no
overlap) never use these: they are exact.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Load:
    sched_delay_p99: float  # seconds a 2 ms sleep overshoots, 99th percentile
    spawn: float  # seconds to start and finish `python -c pass`, median of 3

    def allowance(self, *, spawns: int = 2, base: float = 0.5) -> float:
        """Slack for a path that starts `spawns` interpreters and turns a few event loops."""
        return base + spawns * self.spawn + 50 * self.sched_delay_p99


def measure(samples: int = 100) -> Load:
    """Takes about half a second."""
    overshoot = []
    for _ in range(samples):
        t0 = time.perf_counter()
        time.sleep(0.002)
        overshoot.append(time.perf_counter() - t0 - 0.002)
    overshoot.sort()
    spawns = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True, timeout=60)
        spawns.append(time.perf_counter() - t0)
    return Load(sched_delay_p99=overshoot[int(0.99 * (len(overshoot) - 1))],
                spawn=statistics.median(spawns))
