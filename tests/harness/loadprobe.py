"""How busy is this machine? The figures timing allowances are derived from
(tests/harness/bounds.py).

A timing bound in an end-to-end test (failover within W + x) must hold on a busy
2-core CI machine without being loosened for everybody. So the slack `x` is
derived from what the machine does at the moment: how late a sleeping thread
wakes up (scheduling delay) and how long a Python interpreter takes to start
(the guard and the stand-in node are Python processes). Safety assertions (no
overlap) never use these: they are exact.

- `measure()`: the load now (about half a second): 100 sleeps of 2 ms, 3 starts of
  `python -c pass`.
- `LoadWatch` (the `load` fixture, registered in tests/conftest.py): the load while a
  test runs, measured in the background as tests/chaos/load.py's `LoadMonitor` does
  for a chaos run: a sampler process of its own sleeps 2 ms again and again and
  reports every 0.25 s window's 99th percentile and worst overshoot; an interpreter
  start is timed at the start and every 2 s. `load()` gives the worst figures so far,
  so a bound checked after the fact counts the load that delayed it.
"""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class Load:
    sched_delay_p99: float  # seconds a 2 ms sleep overshoots, 99th percentile
    spawn: float  # seconds to start and finish `python -c pass`
    sched_delay_max: float = 0.0  # the longest overshoot seen


def measure(samples: int = 100) -> Load:
    """Takes about half a second."""
    overshoot = []
    for _ in range(samples):
        t0 = time.perf_counter()
        time.sleep(0.002)
        overshoot.append(time.perf_counter() - t0 - 0.002)
    overshoot.sort()
    spawns = [_spawn_time() for _ in range(3)]
    return Load(sched_delay_p99=overshoot[int(0.99 * (len(overshoot) - 1))],
                spawn=statistics.median(spawns), sched_delay_max=overshoot[-1])


def _spawn_time() -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True, timeout=60,
                   stdin=subprocess.DEVNULL)
    return time.perf_counter() - t0


#: The sampler process (LoadWatch here, tests/chaos/load.py's LoadMonitor): every 0.25 s
#: a line `<monotonic end of the window> <p99 overshoot> <worst overshoot>` (seconds).
SAMPLER = r"""
import sys, time
period, nap = 0.25, 0.002
while True:
    end = time.monotonic() + period
    late = []
    while time.monotonic() < end:
        t0 = time.perf_counter()
        time.sleep(nap)
        late.append(time.perf_counter() - t0 - nap)
    late.sort()
    p99 = late[int(0.99 * (len(late) - 1))]
    sys.stdout.write(f"{time.monotonic():.6f} {p99:.6f} {late[-1]:.6f}\n")
    sys.stdout.flush()
"""

#: An idle machine's figures: what `LoadWatch.load()` starts from.
IDLE = Load(sched_delay_p99=0.001, spawn=0.07, sched_delay_max=0.002)


class LoadWatch:
    """The load while it runs; see the module docstring."""

    def __init__(self, spawn_every: float = 2.0) -> None:
        self.spawn_every = spawn_every
        self._p99 = IDLE.sched_delay_p99
        self._max = IDLE.sched_delay_max
        self._spawn = IDLE.spawn
        self.windows = 0  # sampler windows seen
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._proc: subprocess.Popen[str] | None = None
        self._threads: list[threading.Thread] = []

    def start(self) -> LoadWatch:
        self._note_spawn(_spawn_time())
        self._proc = subprocess.Popen([sys.executable, "-c", SAMPLER], stdout=subprocess.PIPE,
                                      stdin=subprocess.DEVNULL, text=True)
        for target in (self._read, self._spawns):
            t = threading.Thread(target=target, name="load-watch", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._proc is not None:
            with contextlib.suppress(OSError):
                self._proc.kill()
            with contextlib.suppress(subprocess.SubprocessError):
                self._proc.wait(5)
        for t in self._threads:
            t.join(10)

    def load(self) -> Load:
        """The worst figures seen so far (an idle machine's before the first window)."""
        with self._lock:
            return Load(sched_delay_p99=self._p99, spawn=self._spawn,
                        sched_delay_max=self._max)

    def _note_spawn(self, seconds: float) -> None:
        with self._lock:
            self._spawn = max(self._spawn, seconds)

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                _, p99, worst = (float(x) for x in line.split())
            except ValueError:
                continue
            with self._lock:
                self._p99 = max(self._p99, p99)
                self._max = max(self._max, worst)
                self.windows += 1

    def _spawns(self) -> None:
        while not self._stop.wait(self.spawn_every):
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                self._note_spawn(_spawn_time())


@pytest.fixture
def load() -> Iterator[LoadWatch]:
    """The load while this test runs (stopped at teardown)."""
    watch = LoadWatch().start()
    try:
        yield watch
    finally:
        watch.stop()
