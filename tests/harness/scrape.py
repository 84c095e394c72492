"""A Prometheus stand-in for tests: scrape supervisors' `/metrics` at a fixed interval
and keep the samples as Prometheus would store them, to replay them through the alert
rules with `promtool test rules` (tests/harness/promtool.py).

`Recorder(interval)` scrapes, from a thread of its own, every target added with
`add(name, port)` once per `interval` seconds (a step). Each target's samples get the
labels Prometheus adds, `instance` (the target's name) and `job` (`JOB`); only the
supervisor's own series (`corda_ha_*`, without the `_created` ones) are kept, plus
`up` (1 when the scrape answered, else 0). As in Prometheus, a series that was there
at the last scrape and is not now (the scrape failed, or the series went away) gets a
staleness marker, and nothing after it until it is seen again.

`step()` is the index of the next step (to mark when the test did something);
`lateness()` how late the ticks were (a loaded machine scrapes late; the test says so
when an expectation depends on the sampling).

`series(scale)` gives the samples as promtool input series: one string of values per
series, a value per step (`_` before a series is first seen, `stale` for a staleness
marker). `scale` stretches time: a test run at the lab timing (W = 2 s) is replayed
against rules written for W = 40 s with `scale = 20`; every `*_seconds` value is
multiplied by it, and the caller gives promtool `interval * scale` as the step.
"""

from __future__ import annotations

import math
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

#: The scrape job's name (the alert rules select `up{job="corda-ha"}`).
JOB = "corda-ha"
#: Only these series are kept.
PREFIX = "corda_ha_"

Labels = tuple[tuple[str, str], ...]
SeriesKey = tuple[str, Labels]
STALE = "stale"  # a staleness marker (what Prometheus writes when a series goes away)


def scrape(port: int, timeout: float) -> dict[SeriesKey, float] | None:
    """One scrape of 127.0.0.1:`port`/metrics: the supervisor's samples, or None when
    it did not answer 200 within `timeout` (as Prometheus: the target is down)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                    timeout=timeout) as r:
            if r.status != 200:
                return None
            text = r.read().decode()
    except (OSError, urllib.error.URLError):
        return None
    samples: dict[SeriesKey, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith(PREFIX) and not s.name.endswith("_created"):
                samples[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return samples


@dataclass
class Recorder:
    """See the module docstring. Use as a context manager (the thread stops at exit)."""

    interval: float
    timeout: float = 0.5  # of one scrape (Prometheus: scrape_timeout)
    targets: dict[str, int] = field(default_factory=dict)
    # per step: (target -> samples, or None when the scrape failed)
    steps: list[dict[str, dict[SeriesKey, float] | None]] = field(default_factory=list)
    late: list[float] = field(default_factory=list)  # seconds each tick started late
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def add(self, name: str, port: int) -> None:
        """Scrape 127.0.0.1:`port` as instance `name` from the next step on."""
        with self._lock:
            self.targets[name] = port

    def start(self) -> Recorder:
        """Start scraping (once: a second call changes nothing)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> Recorder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def step(self) -> int:
        """The index of the next step to be recorded."""
        with self._lock:
            return len(self.steps)

    def wait_steps(self, n: int, timeout: float = 60.0) -> None:
        """Return once `n` more steps were recorded (the recorder's own pace)."""
        goal = self.step() + n
        deadline = time.monotonic() + timeout
        while self.step() < goal:
            assert time.monotonic() < deadline, f"recorder stalled before step {goal}"
            self._stop.wait(self.interval / 4)

    def lateness(self) -> float:
        """The latest a tick started, in seconds."""
        with self._lock:
            return max(self.late, default=0.0)

    def _run(self) -> None:
        due = time.monotonic()
        while not self._stop.is_set():
            self.late.append(max(0.0, time.monotonic() - due))
            with self._lock:
                targets = dict(self.targets)
            got = {name: scrape(port, self.timeout) for name, port in targets.items()}
            with self._lock:
                self.steps.append(got)
            due += self.interval
            self._stop.wait(max(0.0, due - time.monotonic()))

    # ------------------------------------------------------------ as promtool input

    def values(self, scale: float = 1.0) -> dict[SeriesKey, list[float | str | None]]:
        """Every series (labels `instance` and `job` added) -> one value per step: a
        number, `STALE`, or None (no sample)."""
        with self._lock:
            steps = list(self.steps)
        out: dict[SeriesKey, list[float | str | None]] = {}
        for i, step in enumerate(steps):
            for name, samples in step.items():
                up = ("up", (("instance", name), ("job", JOB)))
                out.setdefault(up, [None] * len(steps))[i] = 0.0 if samples is None else 1.0
                for (metric, labels), v in (samples or {}).items():
                    key = (metric, tuple(sorted((*labels, ("instance", name), ("job", JOB)))))
                    out.setdefault(key, [None] * len(steps))[i] = \
                        v * scale if metric.endswith("_seconds") else v
        for row in out.values():  # a series gone since the step before: a marker
            for i in range(1, len(row)):
                if row[i] is None and row[i - 1] not in (None, STALE):
                    row[i] = STALE
        return out

    def series(self, scale: float = 1.0) -> Iterator[tuple[str, str]]:
        """(series, values) in promtool's notation, runs folded (`1+0x4`, `_x3`)."""
        for (metric, labels), row in sorted(self.values(scale).items()):
            selector = metric + "{" + ",".join(f'{k}="{v}"' for k, v in labels) + "}"
            yield selector, fold([fmt(v) for v in row])


def fmt(value: float | str | None) -> str:
    """One value as promtool reads it."""
    if value is None:
        return "_"
    if isinstance(value, str):
        return value
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Inf" if value > 0 else "-Inf"
    return repr(round(value, 3))


def fold(tokens: list[str]) -> str:
    """Runs of one value folded: `a a a` -> `a+0x2` (a value and n more), `_ _` -> `_x2`."""
    out: list[str] = []
    i = 0
    while i < len(tokens):
        j = i
        while j + 1 < len(tokens) and tokens[j + 1] == tokens[i] and tokens[i] != STALE:
            j += 1
        run = j - i + 1
        if run == 1:
            out.append(tokens[i])
        elif tokens[i] == "_":
            out.append(f"_x{run}")
        else:
            out.append(f"{tokens[i]}+0x{run - 1}")
        i = j + 1
    return " ".join(out)
