"""The alert rules (config/prometheus-alerts.yml) replayed through `promtool test rules`
on what real supervisors exported: each test starts real supervisors on the suite's
PostgreSQL, scrapes their `/metrics` as Prometheus would while something happens (a
handover, a `kill -9` failover, a node that keeps crashing, the database cut, fencing
that cannot work, two holders of one lease), and asserts which alerts fire and which do
not, at which step. The lab runs at W = 2 s, the rules are written for W = 40 s: the
recording is replayed 20 times slower (tests/harness/promtool.py).
"""

from __future__ import annotations

import json
import os
import re
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest

from supervisor.daemon.fencer import NOT_CHECKED
from tests.harness import promtool
from tests.harness.cli import run_cli
from tests.harness.cluster import Cluster, cluster, start_pair
from tests.harness.config import supervisor_config
from tests.harness.faultproxy import FaultProxy
from tests.harness.fencedb import FenceDb
from tests.harness.host import Host, http_get
from tests.harness.pgserver import PgServer
from tests.harness.proc import wait_until
from tests.harness.promtool import Replay
from tests.harness.scrape import Recorder

pytestmark = pytest.mark.timeout(120)

#: Prometheus's usual scrape (15 s) in lab seconds, and a finer one where a short
#: window has to be seen (5 s in the rules' time).
SCRAPE = 15 / promtool.SCALE
FINE = 5 / promtool.SCALE
GIVE_UP = 30.0

NO_HOLDER, TWO_HOLDERS = "CordaHaNoHolder", "CordaHaTwoHolders"
CANNOT_TAKE_OVER, RESTARTS = "CordaHaStandbyCannotTakeOver", "CordaHaNodeRestartLoop"
COOLDOWN, RENEWALS_FAILING = "CordaHaCrashLoopCooldown", "CordaHaRenewalsFailing"
RENEWAL_LATE, FENCING = "CordaHaRenewalLate", "CordaHaFencingNotReady"
DATABASE, DOWN = "CordaHaDatabaseUnreachable", "CordaHaSupervisorDown"
ALL = {NO_HOLDER, TWO_HOLDERS, CANNOT_TAKE_OVER, RESTARTS, COOLDOWN, RENEWALS_FAILING,
       RENEWAL_LATE, FENCING, DATABASE, DOWN}


# ------------------------------------------------------------------ the file itself

def test_the_rules_pass_promtool_check_and_say_what_to_do() -> None:
    count = promtool.check_rules()
    rules = promtool.alert_rules()
    assert len(rules) == count, "tests/harness/promtool.py read fewer rules than promtool"
    assert {r.alert for r in rules} == ALL
    for r in rules:
        assert r.labels.get("severity") in ("critical", "warning"), r.alert
        assert r.annotations.get("summary") and r.annotations.get("description"), r.alert
        assert promtool.metric_names(r.expr), r.alert


def test_the_recorded_runs_replay() -> None:
    """config/prometheus-alerts.test.yml: the replays the scenarios below recorded from
    real runs, kept (no processes: the rules against real series in seconds)."""
    promtool.require()
    text = promtool.RECORDED.read_text()
    names = set(re.findall(r'^  - name: "([^"]+)"$', text, re.M))
    assert names >= {"steady, handover, failover", "crash loop", "database cut", "fencing",
                     "two holders"}, names
    out = promtool.promtool("test", "rules", str(promtool.RECORDED))
    assert out.returncode == 0, out.stdout + out.stderr


def test_metric_names_reads_what_an_expression_selects() -> None:
    """The reader the name checks rely on (here and tests/test_dashboard.py)."""
    expr = ('count by (lease) ((corda_ha_lease_held == 1) * on (instance, job) '
            'group_left (lease) corda_ha_supervisor_info{lease=~"$lease"}) > 1 '
            'unless rate(corda_ha_lease_renewals_totl[$__rate_interval] offset 5m) > 0.6e1')
    assert promtool.metric_names(expr) == {
        "corda_ha_lease_held", "corda_ha_supervisor_info", "corda_ha_lease_renewals_totl"}
    assert promtool.metric_names('max_over_time(up{job="corda-ha"}[5m]) > bool 0') == {"up"}


# ------------------------------------------------------------------ helpers

def record(hosts: list[Host], interval: float) -> Recorder:
    """A recorder of `hosts` (scraping once entered)."""
    rec = Recorder(interval)
    for host in hosts:
        rec.add(host.name, host.health_port())
    return rec


def status(host: Host) -> dict[str, Any]:
    """`/status` of `host` ({} before its first loop turn: 503)."""
    code, body = http_get(host.health_port(), "/status")
    return dict(json.loads(body)) if code == 200 else {}


def could_take_over(host: Host) -> None:
    wait_until(lambda: status(host).get("can_take_over") is True, GIVE_UP,
               message=f"{host.name} could take over")


def replay_file(tmp_path: Path, name: str) -> Path:
    return tmp_path / f"{name}.alerts-test.yml"


def for_steps(replay: Replay, rules_seconds: float) -> int:
    """Steps until an alert with `for: rules_seconds` fires, once its condition holds,
    plus one for the scrape that shows the condition."""
    return replay.steps(rules_seconds) + 1


# ------------------------------------------------------------------ scenarios

def test_steady_state_handover_and_failover_fire_nothing_but_the_dead_supervisor(
        pair: Cluster, tmp_path: Path) -> None:
    """A steady pair, a handover (the old holder cools down 2 W, shorter than the
    standby alert's `for:`), then `kill -9` of the holder's supervisor (the lease is
    free for about W, shorter than CordaHaNoHolder's `for:`): only the dead supervisor's
    CordaHaSupervisorDown fires. Scraped every 15 s (rules' time): a handover's overlap
    of two samples saying held lasts at most one scrape, under CordaHaTwoHolders' `for:`."""
    promtool.require()
    a, b = start_pair(pair)
    could_take_over(b)
    with record([a, b], SCRAPE) as rec:
        replay = Replay(rec, "steady, handover, failover")
        rec.wait_steps(8)
        out = run_cli("handover", "--config", str(a.config_path), "--wait", "20", timeout=40)
        assert out.returncode == 0, out.stdout + out.stderr
        b.wait_node_up(GIVE_UP)
        could_take_over(a)  # a's cooldown (2 W) is over
        rec.wait_steps(4)
        killed = rec.step()
        mark = a.mark()
        os.kill(b.supervisor_pid(), signal.SIGKILL)
        a.wait_node_up(GIVE_UP, since=mark)
        rec.wait_steps(for_steps(replay, 60) + 2)
        end = rec.step() - 1
    replay.never(0, end, ALL - {DOWN})
    replay.never(0, killed, {DOWN})
    replay.firing(end, (DOWN, "b"))
    replay.run(replay_file(tmp_path, "failover"))


def test_a_node_that_keeps_crashing_fires_the_restart_alerts(
        pair: Cluster, tmp_path: Path) -> None:
    """a's node exits 0.5 s after each start: two restarts, then a crash loop (the lab's
    restart.maxCrashes = 3): a releases the lease and cools down (30 s), b takes over.
    CordaHaNodeRestartLoop fires at once, CordaHaCrashLoopCooldown and the standby alert
    for a once their `for:` is over; nothing says the pair lost its holder."""
    promtool.require()
    a = pair.add("a", ["--crash-after", "0.5"])
    b = pair.add("b")
    a.start()
    with record([a], FINE) as rec:  # from a's start: its restart counter from 0
        replay = Replay(rec, "crash loop")
        wait_until(lambda: any(v is not None for v in restarts_seen(rec, "a")), GIVE_UP,
                   message="a scrape of a answered")
        first = next(v for v in restarts_seen(rec, "a") if v is not None)
        assert first == 0.0, (
            f"the first scrape of a saw restarts {first}: it came after a's first crash "
            f"(ticks up to {rec.lateness():.3f} s late), increase() would miss one")
        a.wait_event("node_started", GIVE_UP)  # a holds the lease before b exists
        b.start()
        rec.add("b", b.health_port())
        a.wait_event("crash_loop", GIVE_UP)
        b.wait_node_up(GIVE_UP)
        looped = rec.step()
        rec.wait_steps(for_steps(replay, 180) + 4)
        end = rec.step() - 1
    assert status(a)["state"] == "cooldown"
    replay.fired(0, looped, {RESTARTS}, (RESTARTS, "a"))
    replay.firing(end, (RESTARTS, "a"), (COOLDOWN, "a"), (CANNOT_TAKE_OVER, "a"))
    replay.never(0, end, {NO_HOLDER, TWO_HOLDERS, DATABASE, DOWN, RENEWALS_FAILING,
                          RENEWAL_LATE, FENCING})
    replay.never(0, looped, {COOLDOWN, CANNOT_TAKE_OVER})
    replay.run(replay_file(tmp_path, "crash-loop"))


def restarts_seen(rec: Recorder, instance: str) -> list[float | str | None]:
    """`instance`'s corda_ha_node_restarts_total, one value per recorded step."""
    inst = (("instance", instance), ("job", "corda-ha"))
    return rec.values().get(("corda_ha_node_restarts_total", inst), [])


def test_a_cut_database_fires_unreachable_no_holder_and_renewal_alerts(
        pair: Cluster, pg_server: PgServer, proxies: Any, tmp_path: Path) -> None:
    """Both hosts reach the database through a proxy; both are blackholed for longer
    than CordaHaNoHolder's `for:`. The holder's last renewal ages past 60 % of W - M
    before it gives the lease up (stopTimeout 100 ms: G = 0.1 s, so for 0.6 s; scraped
    every 0.25 s), its pending renewal fails at W - M; both hosts are unreachable and
    cannot take over; nobody holds the lease. Once the database is back a host takes
    over and only the renewal alerts (5 minute windows) still fire."""
    promtool.require()
    pa, pb = proxies(), proxies()
    a = pair.add("a", dsn=pg_server.dsn_via("127.0.0.1", pa.port), stop_ms=100)
    b = pair.add("b", dsn=pg_server.dsn_via("127.0.0.1", pb.port), stop_ms=100)
    a.start()
    a.wait_node_up(15)
    b.start()
    could_take_over(b)
    with record([a, b], FINE) as rec:
        replay = Replay(rec, "database cut")
        rec.wait_steps(8)
        cut = rec.step()
        mark = a.mark()
        cut_off(pa, pb, "blackhole")
        a.wait_event("lease_renewal_overdue", GIVE_UP, since=mark)
        rec.wait_steps(for_steps(replay, 120) + 12)
        back = rec.step()
        cut_off(pa, pb, "pass")
        pair.active(GIVE_UP)
        rec.wait_steps(for_steps(replay, 0) + 8)
        end = rec.step() - 1
    assert end - cut < replay.steps(300), "the renewal alerts' 5 minute window ran out"
    late = late_samples(rec, "a")
    assert late, ("no scrape saw a's last renewal older than 60 % of W - M (every "
                  f"{rec.interval} s, up to {rec.lateness():.3f} s late)")
    replay.never(0, cut, ALL)
    replay.firing(back - 1, (DATABASE, "a"), (DATABASE, "b"), (NO_HOLDER, None),
                  (CANNOT_TAKE_OVER, "a"), (CANNOT_TAKE_OVER, "b"),
                  (RENEWALS_FAILING, "a"), (RENEWAL_LATE, "a"))
    replay.firing(end, (RENEWALS_FAILING, "a"), (RENEWAL_LATE, "a"))
    replay.never(0, end, {TWO_HOLDERS, RESTARTS, COOLDOWN, FENCING, DOWN})
    replay.run(replay_file(tmp_path, "database-cut"))


def cut_off(pa: FaultProxy, pb: FaultProxy, mode: Any) -> None:
    pa.set_mode(mode)
    pb.set_mode(mode)


def late_samples(rec: Recorder, instance: str) -> list[int]:
    """Steps at which `instance` held the lease with its last renewal older than 60 %
    of W - M (what CordaHaRenewalLate looks for)."""
    values = rec.values()
    inst = (("instance", instance), ("job", "corda-ha"))

    def row(name: str) -> list[Any]:
        return values.get((name, inst), [])

    age, kill = row("corda_ha_last_renewal_age_seconds"), row("corda_ha_kill_after_seconds")
    return [i for i, (x, k) in enumerate(zip(age, kill, strict=False))
            if isinstance(x, float) and isinstance(k, float) and x > 0.6 * k]


def test_fencing_that_cannot_work_fires_on_that_host_only(
        pair: Cluster, fdb: FenceDb, pg_server: PgServer, tmp_path: Path) -> None:
    """b's fencing.nodeRole is a node role bound to nothing: its fencing check reports a
    problem, so (fencing.required) it cannot take over. a's fencing works."""
    promtool.require()
    unbound = fdb.node_role("c")  # dropped with the others by the fixture
    pg_server.execute(f"CREATE ROLE {unbound} LOGIN IN ROLE {fdb.group}")
    a = fenced(pair, fdb, "a", fdb.node_role("a"))
    b = fenced(pair, fdb, "b", unbound)
    a.start()
    a.wait_node_up(GIVE_UP)
    b.start()
    wait_until(lambda: (status(b).get("fencing") or {}).get("problem") not in (None, NOT_CHECKED),
               GIVE_UP, message="b's fencing check names its problem")
    assert unbound in status(b)["fencing"]["problem"]
    with record([a, b], FINE) as rec:
        replay = Replay(rec, "fencing")
        rec.wait_steps(for_steps(replay, 120) + 4)
        end = rec.step() - 1
    assert status(a)["fencing"]["problem"] is None
    replay.firing(end, (FENCING, "b"), (CANNOT_TAKE_OVER, "b"))
    replay.never(0, end, ALL - {FENCING, CANNOT_TAKE_OVER})
    replay.run(replay_file(tmp_path, "fencing"))


def fenced(pair: Cluster, fdb: FenceDb, name: str, node_role: str) -> Host:
    conf = supervisor_config(
        database={"table": fdb.table, "ownerRole": fdb.owner},
        fencing={"nodeRole": node_role, "nodeGroup": fdb.group, "fencerRole": fdb.fencer,
                 "required": True})
    return pair.add(name, dsn=fdb.dsn(fdb.supervisor), extra_conf=conf)


def both_holding(hosts: list[Host], name: str) -> tuple[Replay, int]:
    """Start `hosts`, wait until each runs its node, record them past CordaHaTwoHolders'
    `for:` (45 s); the replay and its last step."""
    for host in hosts:
        host.start()
    for host in hosts:
        host.wait_node_up(GIVE_UP)
    with record(hosts, FINE) as rec:
        replay = Replay(rec, name)
        rec.wait_steps(for_steps(replay, 45) + 4)
        end = rec.step() - 1
    return replay, end


def test_two_holders_of_one_lease_fire(pair: Cluster, tmp_path: Path) -> None:
    """a and b name the same lease but different tables (as with two databases, or a
    host left on an old primary): both hold it. CordaHaTwoHolders fires once both have
    said so for longer than its `for:`."""
    promtool.require()
    a = pair.add("a")
    b = pair.add("b", extra_conf=supervisor_config(
        database={"table": f"other_{uuid.uuid4().hex[:8]}"}))
    replay, end = both_holding([a, b], "two holders")
    replay.firing(end, (TWO_HOLDERS, None))
    replay.never(0, end, ALL - {TWO_HOLDERS})
    replay.never(0, replay.steps(45) - 1, {TWO_HOLDERS})
    replay.run(replay_file(tmp_path, "two-holders"))


def test_holders_of_two_leases_are_two_pairs(pair: Cluster, pg_dsn: str,
                                             tmp_path: Path) -> None:
    """a holds this test's lease, c another one: two pairs, one holder each, and the
    `lease` label of corda_ha_supervisor_info keeps them apart (no CordaHaTwoHolders)."""
    promtool.require()
    with cluster(tmp_path / "other", pg_dsn, f"other-{uuid.uuid4().hex}") as other:
        replay, end = both_holding([pair.add("a"), other.add("c")], "two pairs")
    leases = {dict(labels).get("lease") for (name, labels) in replay.recorder.values()
              if name == "corda_ha_supervisor_info"}
    assert leases == {pair.lease_name, other.lease_name}
    replay.never(0, end, ALL)
    replay.run(replay_file(tmp_path, "two-pairs"))
