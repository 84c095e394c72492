"""The episode checks (tests/chaos/analysis.py) on synthetic heartbeats: the W rule,
the kill deadline, quiet windows, and which limits follow the load (and which never)."""

from __future__ import annotations

from tests.chaos.analysis import analyse
from tests.chaos.checker import Record
from tests.chaos.episode import HolderLost, Injected, Problem, Quiet
from tests.chaos.load import IDLE, LoadFigures, availability_allowance
from tests.chaos.profile import PROFILES

LAB = PROFILES["lab"]
BUSY = LoadFigures(sched_p99=0.02, sched_max=0.08, spawn=0.3, samples=40)


def beats(host: str, pid: int, epoch: int, start: float, end: float,
          interval: float = 0.015) -> list[Record]:
    out = [Record(host, pid, epoch, "start", start)]
    t = start + interval
    while t < end:
        out.append(Record(host, pid, epoch, "beat", t))
        t += interval
    return out


def check(inj: Injected, records: list[Record], *, load: LoadFigures = IDLE,
          renewals: dict[str, list[float]] | None = None, end: float = 20.0,
          before: tuple[str, int] | None = ("a", 1),
          acquisitions: dict[str, list[float]] | None = None) -> list[tuple[str, bool]]:
    _, violations, _ = analyse(0, inj, 0.0, end, records, before, profile=LAB, load=load,
                               renewals=renewals or {}, acquisitions=acquisitions)
    return [(v.what, v.invariant) for v in violations]


def test_no_other_host_before_t_plus_w() -> None:
    # a's supervisor was killed at 10.0, its last renewal was sent at 9.6
    inj = Injected("kill_supervisor", "a", 10.0, 10.0,
                   holder_lost=HolderLost("a", 10.0, 10.0, killed=False))
    early = beats("a", 1, 1, 0.0, 10.0) + beats("b", 2, 2, 11.5, 20.0)  # 9.6 + 1.9 < 9.6 + W
    assert ("moved before W", True) in check(inj, early, renewals={"a": [9.1, 9.6]})
    late = beats("a", 1, 1, 0.0, 10.0) + beats("b", 2, 2, 11.62, 20.0)
    assert check(inj, late, renewals={"a": [9.1, 9.6]}) == []
    # the load never moves this bound
    assert ("moved before W", True) in check(inj, early, load=BUSY,
                                             renewals={"a": [9.1, 9.6]})


def test_after_the_host_took_its_lease_back_it_may_release_it() -> None:
    inj = Injected("wrapper_node", "a", 10.0, 10.0,
                   holder_lost=HolderLost("a", 10.0, 10.0, killed=False))
    recs = (beats("a", 1, 1, 0.0, 10.0) + beats("a", 3, 2, 10.6, 11.0)
            + beats("b", 2, 3, 11.1, 20.0))  # a reclaimed at once, then released to b
    assert check(inj, recs, renewals={"a": [9.6]}) == []
    # a reclaimed and released again before running a node (it was being stopped)
    recs = beats("a", 1, 1, 0.0, 10.0) + beats("b", 2, 3, 10.8, 20.0)
    assert ("moved before W", True) in check(inj, recs, renewals={"a": [9.6]})
    assert check(inj, recs, renewals={"a": [9.6, 10.7]}, acquisitions={"a": [10.7]}) == []


def test_a_host_of_the_same_machine_may_reclaim_at_once() -> None:
    inj = Injected("same_machine_name", "a", 10.0, 10.0,
                   holder_lost=HolderLost("a", 10.0, 10.0, killed=False, exempt=("b",)))
    recs = beats("a", 1, 1, 0.0, 10.0) + beats("b", 2, 2, 10.6, 20.0)
    assert check(inj, recs, renewals={"a": [9.6]}) == []


def test_a_cut_off_node_must_die_by_its_deadline() -> None:
    inj = Injected("blackhole_long", "a", 10.0, 13.0,
                   holder_lost=HolderLost("a", 10.0, 13.0))
    on_time = beats("a", 1, 1, 0.0, 9.6 + 1.8) + beats("b", 2, 2, 12.0, 20.0)
    assert check(inj, on_time, renewals={"a": [9.6]}) == []
    late = beats("a", 1, 1, 0.0, 9.6 + 1.9) + beats("b", 2, 2, 12.0, 20.0)
    assert check(inj, late, renewals={"a": [9.6]}) == [("killed late", False)]
    # a busy machine may delay the kill (an expectation), never past t + W
    assert check(inj, late, load=BUSY, renewals={"a": [9.6]}) == []
    outlived = beats("a", 1, 1, 0.0, 9.6 + 2.05) + beats("b", 2, 2, 12.0, 20.0)
    assert ("outlived the lease", True) in check(inj, outlived, load=BUSY,
                                                 renewals={"a": [9.6]})


def test_renewals_after_the_heal_do_not_count() -> None:
    inj = Injected("blackhole_long", "a", 10.0, 13.0, holder_lost=HolderLost("a", 10.0, 13.0))
    recs = beats("a", 1, 1, 0.0, 9.6 + 1.8) + beats("b", 2, 2, 12.0, 20.0)
    assert check(inj, recs, renewals={"a": [9.6, 13.5]}) == []


def test_quiet_window() -> None:
    inj = Injected("lossy_failover", "a", 10.0, 13.0,
                   quiet=[Quiet("a", 10.0, 12.5, "W after the server change")])
    recs = beats("a", 1, 1, 0.0, 11.0) + beats("b", 2, 2, 12.4, 20.0)
    assert ("moved before W", True) in check(inj, recs)
    recs = beats("a", 1, 1, 0.0, 11.0) + beats("b", 2, 2, 12.5, 20.0)
    assert check(inj, recs) == []


def test_overlap_is_never_excused_by_load() -> None:
    inj = Injected("kill_node", "a", 10.0, 10.0)
    recs = beats("a", 1, 1, 0.0, 10.05) + beats("b", 2, 2, 10.0, 20.0)
    assert ("overlap", True) in check(inj, recs, load=BUSY)


def test_availability_limit_follows_the_load() -> None:
    inj = Injected("kill_supervisor", "a", 10.0, 10.0)
    recs = beats("a", 1, 1, 0.0, 10.0) + beats("b", 2, 2, 13.3, 20.0)  # 3.3 s without a node
    assert check(inj, recs) == [("availability", True)]  # idle: W + 1 s
    assert availability_allowance(LAB, BUSY) > 1.3
    assert check(inj, recs, load=BUSY) == []


def test_a_short_cut_must_keep_the_node_unless_longer_than_the_load_allows() -> None:
    recs = beats("a", 1, 1, 0.0, 10.3) + beats("b", 2, 2, 12.5, 20.0)
    inj = Injected("blackhole_short", "a", 10.0, 10.6, expect_no_failover=True, cut_s=0.6)
    assert check(inj, recs) == [("expectation", False)]
    assert check(inj, recs, load=BUSY) == []  # 0.6 s is beyond a busy machine's keep limit
    shorter = Injected("blackhole_short", "a", 10.0, 10.3, expect_no_failover=True, cut_s=0.3)
    assert check(shorter, recs, load=BUSY) == [("expectation", False)]


def test_problems_reported_by_the_fault() -> None:
    inj = Injected("wrapper_node", "a", 10.0, 10.0,
                   problems=[Problem("stray node", "pid 7 outlived its supervisor", 12.0,
                                     invariant=True)])
    recs = beats("a", 1, 1, 0.0, 20.0)
    assert check(inj, recs) == [("stray node", True)]
