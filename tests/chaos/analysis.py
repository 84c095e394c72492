"""Checking one chaos episode: from heartbeat records and renewal times to violations.

`analyse(...)` is pure (no clock, no files): the runner passes the records of
[previous stable point, this stable point], what the fault reported
(`Injected`), the profile, the load measured meanwhile and, per host, the send
times of the successful renewals and acquisitions its supervisor logged.

Invariants (a violation fails the run, whatever the load):
- **overlap**: two hosts' nodes (or two pids of one host) alive at once, outside
  the frozen-VM case (`Injected.allowed_overlap`);
- **moved before W**: a host lost its lease without releasing it
  (`HolderLost`): no other host's node may begin before `t + W`, `t` its last
  renewal sent (unless the host took the lease back first: then it may release
  it to anyone); and explicit `Quiet` windows (e.g. W after a database failover);
- **outlived the lease**: a killed holder's node alive at or after `t + W`;
- **availability**: no node for longer than W plus a load-derived allowance
  (tests/chaos/load.py) while a healthy host and the database were up.

Expectations (also reported, `invariant=False`): a short cut-off or a stalled
log sink costs nothing (waived for a cut longer than the load-derived keep
limit); a killed holder's node is dead by `t + W - M` plus a load-derived
allowance; nothing runs while the database is unreachable for everyone; the
fault's own findings (`Injected.problems`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.chaos import checker
from tests.chaos.checker import EpisodeResult, Fault, NodeRun, Overlap, Record
from tests.chaos.episode import Injected
from tests.chaos.load import LoadFigures, availability_allowance, keep_limit, kill_allowance
from tests.chaos.profile import Profile

Interval = tuple[float, float]


@dataclass
class Violation:
    """One broken promise (or a fault's broken expectation)."""

    episode: int
    fault: str
    what: str
    detail: str
    at: float
    logs: dict[str, list[str]] = field(default_factory=dict)
    invariant: bool = True  # False: an expectation of the fault, not the invariant


@dataclass
class EpisodeReport:
    index: int
    fault: str
    profile: str
    host: str | None
    start: float
    end: float
    duration_s: float
    params: dict[str, Any]
    failover_s: float | None
    overlaps: int
    frozen_overlap_ms: list[float]
    longest_gap_s: float
    gap_limit_s: float
    availability: float | None
    load: dict[str, Any]
    figures: dict[str, Any]
    violations: list[Violation]
    result: EpisodeResult


def complement(windows: Sequence[Interval], covered: Sequence[Interval]) -> list[Interval]:
    """Parts of `windows` not covered by `covered` (both merged first)."""
    out: list[Interval] = []
    cov = checker.merge_intervals(covered)
    for a, b in checker.merge_intervals(windows):
        x = a
        for c, d in cov:
            if d <= x or c >= b:
                continue
            if c > x:
                out.append((x, c))
            x = max(x, d)
            if x >= b:
                break
        if x < b:
            out.append((x, b))
    return out


def alive_set(runs: Sequence[NodeRun]) -> list[Interval]:
    return checker.merge_intervals(s for r in runs for s in r.segments)


def last_renewal(sent: Sequence[float], before: float) -> float | None:
    """The latest send time in `sent` before `before`, or None."""
    return max((s for s in sent if s < before), default=None)


@dataclass
class _Check:
    index: int
    inj: Injected
    violations: list[Violation] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def add(self, what: str, detail: str, at: float, invariant: bool = True) -> None:
        self.violations.append(Violation(self.index, self.inj.kind, what, detail, at,
                                         invariant=invariant))


def _overlaps(c: _Check, ovs: Sequence[Overlap]) -> list[Overlap]:
    frozen: list[Overlap] = []
    inj = c.inj
    for o in ovs:
        allowed = inj.allowed_overlap
        if (allowed is not None and not o.same_host
                and allowed[0] in (o.a.host, o.b.host) and allowed[1] <= o.start <= allowed[2]):
            frozen.append(o)
            continue
        c.add("overlap", f"{o.a} and {o.b} both alive for {o.duration_ms:.1f} ms "
                         f"at {o.start - inj.start:+.3f}s from the fault", o.start)
    return frozen


def _holder_lost(c: _Check, runs: Sequence[NodeRun], p: Profile, load: LoadFigures,
                 renewals: Mapping[str, Sequence[float]],
                 acquisitions: Mapping[str, Sequence[float]]) -> None:
    lost = c.inj.holder_lost
    if lost is None:
        return
    t = last_renewal(renewals.get(lost.host, ()), lost.until)
    if t is None:
        c.figures["holder_t"] = None
        return
    c.figures["holder_t_before_fault_s"] = round(lost.at - t, 3)
    # Until t + W, or until the host (or a host of its machine) took the lease back
    # (an acquisition, a node run): what it does with it afterwards (a release, a
    # handover) is a new story.
    mine = (lost.host, *lost.exempt)
    own = [r.first for r in runs if r.host in mine and r.first > lost.at]
    own += [a for h in mine for a in acquisitions.get(h, ()) if a > lost.at]
    moved_by = min([t + p.W, *own])
    for r in runs:
        if r.host != lost.host and r.host not in lost.exempt and lost.at <= r.first < moved_by:
            c.add("moved before W",
                  f"{r.key} began {r.first - t:.3f}s after {lost.host}'s last renewal was "
                  f"sent, before W = {p.W:g}s", r.first)
    if not lost.killed:
        return
    limit = p.kill_after + kill_allowance(load)
    dead_after: list[float] = []
    for r in runs:
        if r.host != lost.host or not r.alive_from <= lost.at < r.alive_until:
            continue
        after = r.alive_until - t
        dead_after.append(after)
        if after >= p.W:
            c.add("outlived the lease",
                  f"{r.key} was alive {after:.3f}s after its last renewal was sent "
                  f"(the lease ends at W = {p.W:g}s)", r.alive_until)
        elif after > limit:
            c.add("killed late",
                  f"{r.key} was alive {after:.3f}s after its last renewal was sent "
                  f"(W - M = {p.kill_after:g}s, allowance {limit - p.kill_after:.3f}s)",
                  r.alive_until, invariant=False)
    if dead_after:
        c.figures["node_dead_after_t_s"] = round(max(dead_after), 3)
        c.figures["kill_limit_s"] = round(limit, 3)


def analyse(index: int, inj: Injected, begin: float, end: float, records: list[Record],
            active_before: tuple[str, int] | None, *, profile: Profile,
            load: LoadFigures, renewals: Mapping[str, Sequence[float]] | None = None,
            acquisitions: Mapping[str, Sequence[float]] | None = None,
            committed: Mapping[str, Mapping[int, Sequence[float]]] | None = None,
            unseen: Mapping[str, Sequence[tuple[float, float]]] | None = None,
            ) -> tuple[EpisodeResult, list[Violation], dict[str, Any]]:
    """Check one episode. `renewals` and `acquisitions`: per host, the send times of
    the successful renewals and acquisitions (renewals include the acquisitions)
    its supervisor logged. `committed`: per host and epoch, the send times of those
    of them the database audit shows committed (tests/chaos/durability.py); with it,
    every node run is held to the lease they gave it, but in the windows of `unseen`
    (per host: its log lines were dropped, so were the renewals it logged). Returns
    the checker's result (overlaps limited to this episode, frozen-VM ones included),
    the violations, and figures."""
    p = profile
    runs = checker.build_runs(records)
    ovs = [o for o in checker.overlaps(runs) if o.end > begin]
    windows = complement([(begin, end)], inj.unhealthy)
    fault = Fault(inj.kind, inj.start, inj.end, inj.host, until=end)
    result = EpisodeResult(fault=inj.kind, overlaps=tuple(ovs),
                           availability=checker.availability_detail(runs, windows),
                           failover=tuple(checker.failover_times(runs, [fault])))
    c = _Check(index, inj)
    frozen = _overlaps(c, ovs)
    gaps = complement(windows, alive_set(runs))
    longest = max(gaps, key=lambda g: g[1] - g[0], default=(begin, begin))
    gap_s = longest[1] - longest[0]
    gap_limit = p.W + availability_allowance(p, load)
    if gap_s > gap_limit:
        c.add("availability", f"no node for {gap_s:.3f}s (> W + {gap_limit - p.W:.3f}s, "
                              f"from the load) while a healthy host and the database were "
                              f"up, from {longest[0] - inj.start:+.3f}s after the fault",
              longest[0])
    if inj.expect_no_failover:
        limit = keep_limit(p, load)
        applies = inj.cut_s is None or inj.cut_s <= limit
        c.figures["keep_expected"] = applies
        if inj.cut_s is not None:
            c.figures["keep_limit_s"] = round(limit, 3)
        started = [r for r in runs if r.first > inj.start]
        kept = active_before is not None and any(
            r.key.host == active_before[0] and r.key.pid == active_before[1]
            and r.alive_until >= end - 0.5 for r in runs)
        if applies and (started or not kept):
            what = f"a {inj.cut_s}s cut-off" if inj.cut_s is not None else "the fault"
            c.add("expectation", f"the node did not survive {what}: new runs "
                                 f"{[str(r.key) for r in started]}", inj.start,
                  invariant=False)
    if inj.expect_all_down is not None:
        a, b = inj.expect_all_down
        up = checker.intersect(alive_set(runs), [(a, b)]) if b > a else []
        if up:
            c.add("expectation", f"a node ran while the database was unreachable for "
                                 f"everyone: {up[:3]}", up[0][0], invariant=False)
    _holder_lost(c, runs, p, load, renewals or {}, acquisitions or {})
    if committed is not None:
        _lease_covers_runs(c, runs, committed, p.W, begin, unseen or {})
    for q in inj.quiet:
        for r in runs:
            if r.host != q.exempt and q.start <= r.first < q.end:
                c.add("moved before W", f"{r.key} began {r.first - q.start:.3f}s into a "
                                        f"{q.end - q.start:.3f}s quiet window ({q.why})",
                      r.first)
    for prob in inj.problems:
        c.add(prob.what, prob.detail, prob.at, invariant=prob.invariant)
    c.figures.update(frozen_overlap_ms=[round(o.duration_ms, 1) for o in frozen],
                     longest_gap_s=round(gap_s, 3), gap_limit_s=round(gap_limit, 3))
    return result, c.violations, c.figures


def uncovered(run: NodeRun, sent: Sequence[float], w: float,
              unseen: Sequence[tuple[float, float]] = ()) -> list[tuple[float, float]]:
    """The parts of `run`'s alive set that no committed write of its epoch covers: a
    write sent at `s` lets the node run in [s, s + W) and not a moment longer. A window
    `(lo, hi)` of `unseen` covers [lo, hi + W): writes there were not logged."""
    cover = checker.merge_intervals([*((s, s + w) for s in sent),
                                     *((lo, hi + w) for lo, hi in unseen)])
    return [g for seg in run.segments for g in complement([seg], cover) if g[1] > g[0]]


def _lease_covers_runs(c: _Check, runs: Sequence[NodeRun],
                       committed: Mapping[str, Mapping[int, Sequence[float]]], w: float,
                       begin: float, unseen: Mapping[str, Sequence[tuple[float, float]]]
                       ) -> None:
    """The row never expires while its holder's node runs: every moment a node of epoch
    E runs lies within W of a committed write of E by its host (its acquisition or a
    renewal). A frozen host's node running on after its lease (`allowed_overlap`) is a
    case the database fence, not the lease, answers for; a setsid child whose
    supervisor and guard were both killed (`unsupervised`) one systemd answers for."""
    exempt = [x for x in (c.inj.allowed_overlap, c.inj.unsupervised) if x is not None]
    for r in runs:
        if r.epoch is None or r.alive_until <= begin:
            continue
        sent = committed.get(r.host, {}).get(r.epoch, [])
        for a, b in uncovered(r, sent, w, unseen.get(r.host, ())):
            if any(r.host == host and lo <= a <= hi for host, lo, hi in exempt):
                continue
            c.add("outlived its lease",
                  f"{r.key} ran {b - a:.3f}s with no committed write of epoch {r.epoch} "
                  f"within W = {w:g}s before (from {a - c.inj.start:+.3f}s after the fault)",
                  a)
            break


def availability_ratio(result: EpisodeResult) -> float | None:
    r = result.availability.ratio
    return None if math.isnan(r) else round(r, 4)
