"""How busy the machine is during a chaos run, and the timing limits that follow.

The zero-overlap rule never depends on this. Only bounds that a busy machine
stretches follow the measured load: how long the cluster may be without a node
(availability), how late after `t + W - M` a killed node's last heartbeat may
be, and below which length a short cut-off must keep the node.

`LoadMonitor` measures continuously while the run lasts, like
tests/harness/loadprobe.py `measure()` but over time:

- scheduling delay: a sampler process (its own interpreter, so the runner's
  threads do not disturb it) sleeps 2 ms again and again and reports, every
  0.25 s, the 99th percentile and the maximum of how late it woke;
- spawn time: every `spawn_every` seconds a thread times `python -c pass` to
  completion (the guard and the stand-in node are Python processes).

`LoadMonitor.window(a, b)` gives the figures for one episode (monotonic
seconds): the worst 0.25 s p99 inside it, the worst wake-up, and the slowest
spawn timed inside it or just around it. With no sample (the monitor is not
running) the figures are those of an idle machine (`IDLE`).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from tests.chaos.profile import Profile
from tests.harness.loadprobe import SAMPLER


@dataclass(frozen=True)
class LoadFigures:
    """The machine's load over one interval (seconds)."""

    sched_p99: float  # worst 0.25 s window's 99th percentile of a 2 ms sleep's overshoot
    sched_max: float  # the longest overshoot
    spawn: float  # slowest `python -c pass` start-to-exit
    samples: int  # sampler windows seen (0: no measurement, idle figures assumed)

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


IDLE = LoadFigures(sched_p99=0.001, sched_max=0.002, spawn=0.07, samples=0)


class LoadMonitor:
    """Measures the load in the background; see the module docstring."""

    def __init__(self, spawn_every: float = 2.0) -> None:
        self.spawn_every = spawn_every
        self._sched: list[tuple[float, float, float]] = []  # (mono, p99, max)
        self._spawn: list[tuple[float, float]] = []  # (mono at end, seconds)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._proc: subprocess.Popen[str] | None = None
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._proc = subprocess.Popen([sys.executable, "-c", SAMPLER], stdout=subprocess.PIPE,
                                      stdin=subprocess.DEVNULL, text=True)
        for target, name in ((self._read, "chaos-load-sched"), (self._spawns, "chaos-load-spawn")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        if self._proc is not None:
            with contextlib.suppress(OSError):
                self._proc.kill()
            with contextlib.suppress(Exception):
                self._proc.wait(5)
        for t in self._threads:
            t.join(10)

    def __enter__(self) -> LoadMonitor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                mono, p99, worst = (float(x) for x in line.split())
            except ValueError:
                continue
            with self._lock:
                self._sched.append((mono, p99, worst))

    def _spawns(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                subprocess.run([sys.executable, "-c", "pass"], check=True, timeout=60,
                               stdin=subprocess.DEVNULL)
            except (OSError, subprocess.SubprocessError):
                continue
            end = time.monotonic()
            with self._lock:
                self._spawn.append((end, end - t0))
            self._stop.wait(self.spawn_every)

    def window(self, a: float, b: float) -> LoadFigures:
        """The load between monotonic times `a` and `b` (spawns timed up to one
        `spawn_every` around it count too)."""
        with self._lock:
            sched = [(p, m) for t, p, m in self._sched if a <= t <= b + 0.25]
            pad = self.spawn_every + 1.0
            spawn = [s for t, s in self._spawn if a - pad <= t <= b + pad]
        if not sched and not spawn:
            return IDLE
        return LoadFigures(
            sched_p99=max((p for p, _ in sched), default=IDLE.sched_p99),
            sched_max=max((m for _, m in sched), default=IDLE.sched_max),
            spawn=max(spawn, default=IDLE.spawn),
            samples=len(sched))


# ------------------------------------------------------------------ limits

AVAIL_FLOOR = 1.0  # never tighter than the fixed W + 1 s the suite used before
AVAIL_BASE = 0.3  # a few database round trips and event-loop turns
SPAWNS = 3.0  # guard (imports the supervisor package, ~2 bare starts) + stand-in node
SCHED_TURNS = 30  # loop turns, thread wake-ups and polls on the way to a new node


def availability_allowance(p: Profile, load: LoadFigures) -> float:
    """How much longer than W the cluster may be without a node while a healthy
    host and the database are up: the standby's poll interval, round trips, a
    guard and a node to start, scheduling delays; at least 1 s."""
    return max(AVAIL_FLOOR, p.poll + AVAIL_BASE + SPAWNS * load.spawn
               + SCHED_TURNS * load.sched_p99)


def kill_allowance(load: LoadFigures) -> float:
    """How long after `t + W - M` a killed node's last heartbeat may be: the
    killer's timer wakes late, the kill is delivered, plus the heartbeat checker's
    tolerance (20 ms). The kill is one wake-up, which can be as late as the worst
    wake-up measured in the episode, not only its 99th percentile (a loaded CI run
    measured p99 8.9 ms and a kill 147 ms late). Only an expectation: the safety
    bound is `t + W`, exact, and never moves with the load."""
    return 0.05 + max(10 * load.sched_p99, load.sched_max)


def keep_limit(p: Profile, load: LoadFigures) -> float:
    """Cut-offs up to this long must not cost the node: the keep slack minus one
    hedge interval minus a reconnect that a busy machine makes slower."""
    return p.keep_slack - p.hedge - (0.05 + 8 * load.sched_p99)
