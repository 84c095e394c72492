"""The report of a chaos run: per profile, the table, figures, violations, JSON."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from tests.chaos import checker
from tests.chaos.analysis import EpisodeReport, Violation
from tests.chaos.checker import EpisodeResult
from tests.chaos.profile import Profile

if TYPE_CHECKING:
    from tests.chaos.runner import Exit


@dataclass
class RunReport:
    """Every episode of one profile's run."""

    seed: int
    profile: Profile
    hosts: int
    episodes: list[EpisodeReport]
    runtime_s: float
    setup_s: float
    faketime: bool
    exits: list[Exit]
    orphans: list[str]
    replica: bool = False
    writes: str = "off"  # the nodes' database writes: off, fenced, unfenced

    @property
    def violations(self) -> list[Violation]:
        return [v for e in self.episodes for v in e.violations]

    def rows(self) -> list[checker.SummaryRow]:
        per: dict[str, list[EpisodeResult]] = {}
        for e in self.episodes:
            per.setdefault(e.fault, []).append(e.result)
        return checker.summarise(per, total=True)

    def table(self) -> str:
        return checker.format_table(self.rows())

    def short_blackhole_summary(self) -> str:
        eps = [e for e in self.episodes if e.fault == "blackhole_short"]
        if not eps:
            return ""
        lost = [e for e in eps if e.failover_s is not None]
        kept = [float(e.params["actual_s"]) for e in eps if e.failover_s is None]
        waived = sum(1 for e in eps if e.figures.get("keep_expected") is False)
        return (f"short blackhole: {len(kept)}/{len(eps)} kept the node; longest kept "
                f"{max(kept, default=0):.3f}s; shortest lost "
                f"{min((float(e.params['actual_s']) for e in lost), default='-')}; "
                f"{waived} longer than the load's keep limit (expectation waived)")

    def frozen_summary(self) -> str:
        eps = [e for e in self.episodes if e.fault.startswith("freeze_host")]
        if not eps:
            return ""
        ms = [x for e in eps for x in e.frozen_overlap_ms]
        return (f"frozen VM: {len(eps)} episodes, {len(ms)} overlaps after SIGCONT, "
                f"longest {max(ms, default=0.0):.1f} ms")

    def writes_summary(self) -> str:
        """Late writes (an old node's write after a newer node's first), per fault."""
        if self.writes == "off":
            return ""
        per: dict[str, int] = {}
        for e in self.episodes:
            per[e.fault] = per.get(e.fault, 0) + int(e.figures.get("late_writes") or 0)
        late = {k: v for k, v in per.items() if v}
        frozen = sum(1 for e in self.episodes if e.fault.startswith("freeze_host"))
        return (f"late writes ({'fencing on' if self.writes == 'fenced' else 'fencing off'}):"
                f" {sum(per.values())} in {len(self.episodes)} episodes ({frozen} frozen "
                f"hosts){': ' + ', '.join(f'{k} {v}' for k, v in late.items()) if late else ''}")

    def failover_summary(self) -> str:
        """p50/p95/max of the failover times, all faults and `kill_supervisor` alone."""
        def fig(values: Sequence[float]) -> str:
            if not values:
                return "-"
            return (f"p50 {checker.percentile(values, 50):.3f}s p95 "
                    f"{checker.percentile(values, 95):.3f}s max {max(values):.3f}s "
                    f"({len(values)})")

        every = [e.failover_s for e in self.episodes if e.failover_s is not None]
        kills = [e.failover_s for e in self.episodes
                 if e.fault == "kill_supervisor" and e.failover_s is not None]
        return f"failover: all faults {fig(every)}; kill_supervisor {fig(kills)}"

    def load_summary(self) -> str:
        if not self.episodes:
            return ""
        sched = [e.load["sched_p99"] for e in self.episodes]
        spawn = [e.load["spawn"] for e in self.episodes]
        limits = [e.gap_limit_s for e in self.episodes]
        return (f"load: scheduling delay p99 per episode {min(sched) * 1000:.1f}.."
                f"{max(sched) * 1000:.1f} ms, python start {min(spawn):.3f}..{max(spawn):.3f}s;"
                f" no-node limit W + {min(limits) - self.profile.W:.2f}.."
                f"{max(limits) - self.profile.W:.2f}s")

    def summary(self) -> str:
        """The table and the figures, as printed."""
        lines = [f"== {self.profile.describe()}", "", self.table().rstrip()]
        lines += [x for x in (self.short_blackhole_summary(), self.frozen_summary(),
                              self.writes_summary(), self.failover_summary(),
                              self.load_summary()) if x]
        lines.append(f"runtime {self.runtime_s:.0f}s (setup {self.setup_s:.1f}s), "
                     f"{len(self.episodes)} episodes, seed {self.seed}")
        unexpected = [x for x in self.exits if not x.expected]
        if unexpected:
            lines.append(f"unexpected supervisor exits: {unexpected}")
        if self.orphans:
            lines.append(f"orphan processes at the end: {self.orphans}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(checker.to_json(self.rows()))

        def ep(e: EpisodeReport) -> dict[str, Any]:
            return {"index": e.index, "fault": e.fault, "host": e.host,
                    "duration_s": round(e.duration_s, 3), "params": e.params,
                    "failover_s": e.failover_s, "overlaps": e.overlaps,
                    "frozen_overlap_ms": e.frozen_overlap_ms,
                    "longest_gap_s": e.longest_gap_s, "gap_limit_s": e.gap_limit_s,
                    "availability": e.availability, "load": e.load, "figures": e.figures,
                    "violations": [asdict(v) for v in e.violations]}

        data.update(seed=self.seed, profile=self.profile.name, hosts=self.hosts,
                    runtime_s=round(self.runtime_s, 1), setup_s=round(self.setup_s, 1),
                    faketime=self.faketime, replica=self.replica, intervals=self.profile.as_dict(),
                    machine={"cpus": os.cpu_count()},
                    summaries=[self.short_blackhole_summary(), self.frozen_summary(),
                               self.writes_summary(), self.failover_summary(),
                               self.load_summary()],
                    writes=self.writes,
                    episodes=[ep(e) for e in self.episodes],
                    supervisor_exits=[x.as_dict() for x in self.exits],
                    orphans=self.orphans)
        return data


def to_json(reports: Sequence[RunReport]) -> str:
    """Every profile's report: {"seed": S, "profiles": {name: {...}}}."""
    return json.dumps({"seed": reports[0].seed if reports else None,
                       "profiles": {r.profile.name: r.to_dict() for r in reports}},
                      indent=2, default=str)


def format_violations(reports: RunReport | Sequence[RunReport]) -> str:
    """Every violation with its seed, profile, episode and log lines."""
    out = []
    for report in [reports] if isinstance(reports, RunReport) else reports:
        for v in report.violations:
            kind = "INVARIANT" if v.invariant else "expectation"
            out.append(f"--- {kind} violation: seed {report.seed} profile "
                       f"{report.profile.name} episode {v.episode} ({v.fault}): {v.what}: "
                       f"{v.detail}")
            for host, lines in v.logs.items():
                out.append(f"  log of {host}:")
                out += [f"    {line}" for line in lines]
    return "\n".join(out)
