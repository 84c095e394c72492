"""Checker for the chaos suite: turns heartbeat records into verdicts and figures.

Everything here except `load` and `load_jsonl` is pure: no database, no clock,
no files. All times are `time.monotonic()` seconds (the `mono` column), which
all processes on one machine share; `db_ts` is never used for arithmetic
(for late rows it is the flush time, not the record time).

Typical use by an episode runner::

    records = load(conn, run_id) + load_jsonl(record_dir, run_id)  # either or both
    runs = build_runs(records)                   # one NodeRun per (run_id, host, pid, epoch)
    result = check_episode(runs, fault, healthy_windows=[(t0, t1)])
    per_type.setdefault(fault.kind, []).append(result)
    ...
    rows = summarise(per_type, total=True)
    print(format_table(rows)); Path("chaos.json").write_text(to_json(rows))

Model
-----
A **record** (`Record`) is one row: host, pid, epoch, kind (`start` | `beat` |
`stop`), mono. Duplicates (the same host, pid, epoch, kind and mono, e.g. the
same record from the database and from the JSON-lines file, or a batch
re-sent after a lost commit acknowledgement) are dropped.

A **node run** (`NodeRun`) is every record of one process: key
`(run_id, host, pid, epoch)`. Its **alive set** is a union of intervals
(`segments`), half-open `[a, b)`:

- every record at time t says the node was executing at t. A `start` or `beat`
  record covers `[t, t + tolerance)` (`tolerance` defaults to one beat
  interval, 20 ms: the node may have run that long after its last beat, e.g.
  when SIGKILLed between beats); a `stop` record covers only t, and nothing
  before it reaches past it (the node writes it as the last thing before
  exiting 0);
- two consecutive records at most `max_gap` apart (default 0.5 s) are joined:
  the node is taken as alive all the time between them;
- a longer gap splits the run: between the two segments the node is counted
  as **not** alive. Such a gap means the process was not scheduled (SIGSTOP of
  a frozen host, which is always longer than W): a stopped process runs no
  code, and if it runs again its next beat is inside the other node's alive
  set and shows up as an overlap. With `max_gap=math.inf` a run is one
  interval `[first, last (+ tolerance))`.

So a missing stop record (SIGKILL, crash) costs at most `tolerance` of
pessimism, late rows change nothing (their `mono` is the record time), and
two intervals that merely touch (`[0, 1)` and `[1, 2)`) do not overlap.

Interfaces
----------
- `build_runs(records, tolerance=, max_gap=) -> list[NodeRun]`
- `overlaps(runs) -> list[Overlap]`: every maximal interval where two runs of
  the same `run_id` are both alive. `Overlap.same_host` tells a restart overlap
  on one host (two pids, which must never happen either) from a cross-host
  one. Runs of different `run_id`s are never compared.
- `availability(runs, healthy_windows) -> float` (`availability_detail` gives
  the seconds): within the merged windows (supplied by the runner: when a
  healthy host and the database were up), the share of time with exactly one
  run alive. NaN when the windows are empty.
- `failover_times(runs, faults) -> list[float | None]`: per `Fault`, seconds
  from `fault.start` to the `first` record of the earliest run that began
  after it (and no later than `fault.until`, if given); None when no run began
  (e.g. a short blackhole that the node survived; the runner decides what is
  expected).
- `check_episode(runs, faults, healthy_windows) -> EpisodeResult`
- `summarise({fault_kind: [EpisodeResult, ...]}, total=) -> list[SummaryRow]`,
  `format_table(rows) -> str`, `to_json(rows) -> str`.
- `percentile(values, q)`: linear interpolation between closest ranks
  (`q` in [0, 100]; p0 = min, p100 = max), as numpy's default.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import psycopg
from psycopg import sql

TABLE = "chaos_heartbeat"
DEFAULT_TOLERANCE = 0.02
DEFAULT_MAX_GAP = 0.5

Kind = Literal["start", "beat", "stop"]
KINDS: tuple[Kind, ...] = ("start", "beat", "stop")
Interval = tuple[float, float]


@dataclass(frozen=True)
class RunKey:
    """Identifies one node process within one chaos run."""

    run_id: str
    host: str
    pid: int
    epoch: int | None

    def sort_key(self) -> tuple[str, str, int, int]:
        return (self.run_id, self.host, self.pid, -1 if self.epoch is None else self.epoch)

    def __str__(self) -> str:
        return f"{self.host}/pid {self.pid}/epoch {self.epoch}"


@dataclass(frozen=True)
class Record:
    """One heartbeat record (a row of `chaos_heartbeat` or a JSON line)."""

    host: str
    pid: int
    epoch: int | None
    kind: Kind
    mono: float
    run_id: str = ""
    db_ts: datetime | None = None
    late: bool = False

    @property
    def key(self) -> RunKey:
        return RunKey(self.run_id, self.host, self.pid, self.epoch)


@dataclass(frozen=True)
class NodeRun:
    """All records of one node process, reduced to when it was alive."""

    key: RunKey
    first: float  # mono of the first record (start, else first beat)
    last: float  # mono of the last record (stop, else last beat)
    segments: tuple[Interval, ...]  # alive set: sorted, disjoint, half-open
    started: bool  # a start record exists
    stopped: bool  # a stop record exists (graceful exit)
    records: int
    late: int  # how many records were written late

    @property
    def host(self) -> str:
        return self.key.host

    @property
    def pid(self) -> int:
        return self.key.pid

    @property
    def epoch(self) -> int | None:
        return self.key.epoch

    @property
    def alive_from(self) -> float:
        return self.segments[0][0]

    @property
    def alive_until(self) -> float:
        return self.segments[-1][1]


@dataclass(frozen=True)
class Overlap:
    """A maximal interval during which two node runs were both alive."""

    a: RunKey
    b: RunKey
    start: float
    end: float

    @property
    def same_host(self) -> bool:
        return self.a.host == self.b.host

    @property
    def duration_ms(self) -> float:
        return (self.end - self.start) * 1000.0


@dataclass(frozen=True)
class Availability:
    """Seconds inside the healthy windows, by how many runs were alive."""

    window_s: float = 0.0
    one_s: float = 0.0
    none_s: float = 0.0
    many_s: float = 0.0

    @property
    def ratio(self) -> float:
        """Share of window time with exactly one run alive (NaN without windows)."""
        return self.one_s / self.window_s if self.window_s > 0 else math.nan

    def __add__(self, other: Availability) -> Availability:
        return Availability(self.window_s + other.window_s, self.one_s + other.one_s,
                            self.none_s + other.none_s, self.many_s + other.many_s)


@dataclass(frozen=True)
class Fault:
    """One injected fault, as the runner saw it (monotonic seconds).

    `host` is the affected host (None: all, or not host-specific). `until`
    bounds the failover search: runs beginning after it are not counted
    (None: no bound).
    """

    kind: str
    start: float
    end: float
    host: str | None = None
    until: float | None = None


@dataclass(frozen=True)
class EpisodeResult:
    """What the checker found in one episode."""

    fault: str
    overlaps: tuple[Overlap, ...] = ()
    availability: Availability = field(default_factory=Availability)
    failover: tuple[float | None, ...] = ()


@dataclass(frozen=True)
class SummaryRow:
    """One line of the summary table: all episodes of one fault kind."""

    fault: str
    episodes: int
    overlaps: int  # between hosts
    same_host_overlaps: int  # two pids on one host
    longest_overlap_ms: float  # over both kinds; 0.0 when none
    availability: float | None  # time-weighted over episodes; None without windows
    failovers: int  # faults followed by a new node run
    no_failover: int  # faults the original node survived (failover time None)
    failover_p50_s: float | None
    failover_p95_s: float | None
    failover_max_s: float | None


# ---------------------------------------------------------------- loading


def record_from_mapping(row: Mapping[str, Any]) -> Record:
    """A `Record` from a dict with the table's column names (extra keys ignored)."""
    kind = str(row["kind"])
    if kind not in KINDS:
        raise ValueError(f"unknown record kind {kind!r}")
    epoch = row.get("epoch")
    return Record(
        host=str(row["host"]),
        pid=int(row["pid"]),
        epoch=None if epoch is None else int(epoch),
        kind=kind,  # checked against KINDS above
        mono=float(row["mono"]),
        run_id=str(row.get("run_id") or ""),
        db_ts=row.get("db_ts"),
        late=bool(row.get("late", False)),
    )


def load(conn: psycopg.Connection[Any], run_id: str, table: str = TABLE) -> list[Record]:
    """All records of `run_id` from the heartbeat table, in insertion order.

    Returns [] when the table does not exist yet (no node ever wrote a row).
    """
    query = sql.SQL(
        "SELECT run_id, host, pid, epoch, kind, mono, db_ts, late FROM {} "
        "WHERE run_id = %s ORDER BY id"
    ).format(sql.Identifier(table))
    try:
        with conn.cursor() as cur:
            cur.execute(query, (run_id,))
            rows = cur.fetchall()
    except psycopg.errors.UndefinedTable:
        if not conn.autocommit:
            conn.rollback()
        return []
    names = ("run_id", "host", "pid", "epoch", "kind", "mono", "db_ts", "late")
    return [record_from_mapping(dict(zip(names, row, strict=True))) for row in rows]


def load_jsonl(directory: str | Path, run_id: str | None = None) -> list[Record]:
    """All records from the `<pid>.jsonl` files that `hb_node.py --record DIR` wrote.

    A truncated last line (the node was killed mid-write) is skipped.
    """
    out: list[Record] = []
    for path in sorted(Path(directory).glob("*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                rec = record_from_mapping(json.loads(line))
            except (ValueError, KeyError, TypeError):
                continue
            if run_id is None or rec.run_id == run_id:
                out.append(rec)
    return out


# ---------------------------------------------------------------- runs


def dedupe(records: Iterable[Record]) -> list[Record]:
    """Records without duplicates (same run key, kind and mono), first one kept."""
    seen: set[tuple[RunKey, str, float]] = set()
    out: list[Record] = []
    for r in records:
        k = (r.key, r.kind, r.mono)
        if k not in seen:
            seen.add(k)
            out.append(r)
    return out


def build_runs(records: Iterable[Record], *, tolerance: float = DEFAULT_TOLERANCE,
               max_gap: float = DEFAULT_MAX_GAP) -> list[NodeRun]:
    """Group records into node runs (sorted by first record) and compute alive sets.

    See the module docstring for `tolerance` and `max_gap`.
    """
    if tolerance < 0 or max_gap < 0:
        raise ValueError("tolerance and max_gap must be >= 0")
    groups: dict[RunKey, list[Record]] = {}
    for r in dedupe(records):
        groups.setdefault(r.key, []).append(r)
    runs: list[NodeRun] = []
    for key, recs in groups.items():
        recs.sort(key=lambda r: (r.mono, KINDS.index(r.kind)))
        segments: list[list[float]] = []
        prev: float | None = None
        stop_at = max((r.mono for r in recs if r.kind == "stop"), default=math.inf)
        for r in recs:
            end = r.mono if r.kind == "stop" else r.mono + tolerance
            if r.mono <= stop_at:
                end = min(end, stop_at)  # nothing runs after the stop record
            if segments and prev is not None and (
                r.mono - prev <= max_gap or r.mono < segments[-1][1]
            ):
                segments[-1][1] = max(segments[-1][1], end)
            else:
                segments.append([r.mono, end])
            prev = r.mono
        runs.append(NodeRun(
            key=key,
            first=recs[0].mono,
            last=recs[-1].mono,
            segments=tuple((a, b) for a, b in segments),
            started=any(r.kind == "start" for r in recs),
            stopped=any(r.kind == "stop" for r in recs),
            records=len(recs),
            late=sum(r.late for r in recs),
        ))
    runs.sort(key=lambda run: (run.first, run.key.sort_key()))
    return runs


# ---------------------------------------------------------------- intervals


def merge_intervals(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted union of half-open intervals; empty ones dropped, touching ones joined."""
    out: list[Interval] = []
    for a, b in sorted(i for i in intervals if i[1] > i[0]):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def intersect(xs: Sequence[Interval], ys: Sequence[Interval]) -> list[Interval]:
    """Intersection of two sorted disjoint interval lists, as maximal intervals of
    positive length (pieces that touch are joined)."""
    pieces: list[Interval] = []
    i = j = 0
    while i < len(xs) and j < len(ys):
        a = max(xs[i][0], ys[j][0])
        b = min(xs[i][1], ys[j][1])
        if b > a:
            pieces.append((a, b))
        if xs[i][1] < ys[j][1]:
            i += 1
        else:
            j += 1
    return merge_intervals(pieces)


# ---------------------------------------------------------------- verdicts


def overlaps(runs: Sequence[NodeRun]) -> list[Overlap]:
    """Every maximal interval in which two runs (same run_id) were both alive,
    sorted by start. Check `Overlap.same_host` to tell the two kinds apart."""
    ordered = sorted(runs, key=lambda r: (r.alive_from, r.key.sort_key()))
    found: list[Overlap] = []
    for i, x in enumerate(ordered):
        for y in ordered[i + 1:]:
            if y.alive_from >= x.alive_until:
                break  # sorted by alive_from: no later run can meet x
            if x.key.run_id != y.key.run_id or x.key == y.key:
                continue
            for a, b in intersect(x.segments, y.segments):
                found.append(Overlap(x.key, y.key, a, b))
    found.sort(key=lambda o: (o.start, o.end, o.a.sort_key(), o.b.sort_key()))
    return found


def availability_detail(runs: Sequence[NodeRun],
                        healthy_windows: Iterable[Interval]) -> Availability:
    """Seconds inside the (merged) windows with none, exactly one, or several runs alive."""
    windows = merge_intervals(healthy_windows)
    if not windows:
        return Availability()
    delta: dict[float, int] = {}
    for run in runs:
        for a, b in run.segments:
            if b > a:
                delta[a] = delta.get(a, 0) + 1
                delta[b] = delta.get(b, 0) - 1
    points = sorted(set(delta) | {p for w in windows for p in w})
    window_s = one_s = none_s = many_s = 0.0
    alive = 0
    wi = 0
    for x, y in itertools.pairwise(points):
        alive += delta.get(x, 0)
        while wi < len(windows) and windows[wi][1] <= x:
            wi += 1
        if wi == len(windows):
            break
        if not windows[wi][0] <= x < windows[wi][1]:
            continue
        length = y - x  # points include window ends, so [x, y) lies inside the window
        window_s += length
        if alive == 1:
            one_s += length
        elif alive == 0:
            none_s += length
        else:
            many_s += length
    return Availability(window_s, one_s, none_s, many_s)


def availability(runs: Sequence[NodeRun], healthy_windows: Iterable[Interval]) -> float:
    """Share of time inside `healthy_windows` with exactly one run alive (NaN if none)."""
    return availability_detail(runs, healthy_windows).ratio


def failover_times(runs: Sequence[NodeRun], faults: Iterable[Fault]) -> list[float | None]:
    """Per fault: seconds from its start to the first record of the earliest run
    that began strictly after it (and not after `fault.until`); None if none did."""
    firsts = sorted(r.first for r in runs)
    out: list[float | None] = []
    for f in faults:
        after = [t for t in firsts if t > f.start and (f.until is None or t <= f.until)]
        out.append(after[0] - f.start if after else None)
    return out


def check_episode(runs: Sequence[NodeRun], faults: Fault | Sequence[Fault],
                  healthy_windows: Iterable[Interval]) -> EpisodeResult:
    """Overlaps, availability and failover times of one episode; `fault` of the
    result is the kind of the first fault."""
    fs = [faults] if isinstance(faults, Fault) else list(faults)
    if not fs:
        raise ValueError("an episode needs at least one fault")
    return EpisodeResult(
        fault=fs[0].kind,
        overlaps=tuple(overlaps(runs)),
        availability=availability_detail(runs, healthy_windows),
        failover=tuple(failover_times(runs, fs)),
    )


# ---------------------------------------------------------------- figures


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks. ValueError if empty."""
    xs = sorted(values)
    if not xs:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError("q must be within [0, 100]")
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    frac = pos - lo
    return xs[lo] + (xs[hi] - xs[lo]) * frac if frac else xs[lo]


def _row(fault: str, results: Sequence[EpisodeResult]) -> SummaryRow:
    ovs = [o for r in results for o in r.overlaps]
    avail = Availability()
    for r in results:
        avail = avail + r.availability
    times = [t for r in results for t in r.failover if t is not None]
    missing = sum(1 for r in results for t in r.failover if t is None)
    return SummaryRow(
        fault=fault,
        episodes=len(results),
        overlaps=sum(1 for o in ovs if not o.same_host),
        same_host_overlaps=sum(1 for o in ovs if o.same_host),
        longest_overlap_ms=max((o.duration_ms for o in ovs), default=0.0),
        availability=None if avail.window_s <= 0 else avail.ratio,
        failovers=len(times),
        no_failover=missing,
        failover_p50_s=percentile(times, 50) if times else None,
        failover_p95_s=percentile(times, 95) if times else None,
        failover_max_s=max(times) if times else None,
    )


def summarise(per_fault_type: Mapping[str, Sequence[EpisodeResult]], *,
              total: bool = False) -> list[SummaryRow]:
    """One row per fault kind (sorted by name), plus an `ALL` row if `total`."""
    rows = [_row(kind, results) for kind, results in sorted(per_fault_type.items())]
    if total:
        rows.append(_row("ALL", [r for rs in per_fault_type.values() for r in rs]))
    return rows


COLUMNS: tuple[tuple[str, str], ...] = (
    ("fault", "fault"),
    ("episodes", "episodes"),
    ("overlaps", "overlaps"),
    ("same_host_overlaps", "same-host"),
    ("longest_overlap_ms", "longest ms"),
    ("availability", "avail %"),
    ("failovers", "failovers"),
    ("no_failover", "none"),
    ("failover_p50_s", "p50 s"),
    ("failover_p95_s", "p95 s"),
    ("failover_max_s", "max s"),
)


def _cell(name: str, value: object) -> str:
    if value is None:
        return "-"
    if name == "availability" and isinstance(value, float):
        return f"{value * 100:.2f}"
    if name == "longest_overlap_ms" and isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def format_table(rows: Sequence[SummaryRow]) -> str:
    """A plain-text table (first column left-aligned, the rest right-aligned)."""
    header = [title for _, title in COLUMNS]
    body = [[_cell(name, getattr(row, name)) for name, _ in COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def fmt(line: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(line, widths, strict=True))).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(header), sep, *(fmt(line) for line in body)]) + "\n"


def to_json(rows: Sequence[SummaryRow]) -> str:
    """The table as JSON: {"faults": [{column: value, ...}, ...]}; NaN becomes null."""

    def clean(v: object) -> object:
        return None if isinstance(v, float) and math.isnan(v) else v

    data = [{name: clean(getattr(row, name)) for name, _ in COLUMNS} for row in rows]
    return json.dumps({"faults": data}, indent=2, allow_nan=False)
