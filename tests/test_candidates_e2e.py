"""Three supervisors (a holder, two standbys) and the candidate controls, end to end
against the real PostgreSQL: the priority host takes over after a kill of the holder
(the other standby sends no acquisition at all); a `candidate.nofailover` host never
takes the lease, not even as the only standby left, and `/readiness`, `status` and
`handover --to` say why; a handover set for a time (`handover --at`) survives a
restart of the holder's supervisor and happens within one updateInterval of the time,
or is cancelled when no standby is live; members that disagree on timing are shown
in `status` and logged once, and a standby with a shorter W never takes the lease
before the holder's W. The overlap watcher runs throughout."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from datetime import timedelta

import psycopg
import pytest

from supervisor.lease.members import MEMBER_FRESH, MEMBER_INTERVAL
from tests.harness.bounds import allowance, wait_within, within
from tests.harness.candidates import (
    acquisitions_sent,
    candidate,
    local_iso,
    members_seen,
    status_json,
    status_text,
)
from tests.harness.cli import run_cli
from tests.harness.cluster import Cluster
from tests.harness.host import Host, http_get, log_seconds
from tests.harness.loadprobe import LoadWatch
from tests.harness.proc import wait_until
from tests.harness.watcher import Watcher

pytestmark = pytest.mark.timeout(240)

U, W = 1.0, 4.0  # seconds: the priority wait (one U) is well above a poll (U/2)
U_MS, W_MS = int(U * 1000), int(W * 1000)
SCHEDULE_LEAD = 30.0  # seconds from `handover --at` to the time it sets


def add(c: Cluster, name: str, conf: str = "", **kw: object) -> Host:
    kw.setdefault("update_ms", U_MS)
    kw.setdefault("wait_ms", W_MS)
    return c.add(name, extra_conf=conf, **kw)  # type: ignore[arg-type]


def start_three(c: Cluster, a_conf: str, b_conf: str, c_conf: str,
                **kw: object) -> tuple[Host, Host, Host]:
    """a first (the holder), then the standbys b and c; all three registered."""
    a = add(c, "a", a_conf, **kw.get("a", {}))  # type: ignore[arg-type]
    b = add(c, "b", b_conf, **kw.get("b", {}))  # type: ignore[arg-type]
    h = add(c, "c", c_conf, **kw.get("c", {}))  # type: ignore[arg-type]
    a.start()
    a.wait_node_up(20)
    b.start()
    h.start()
    for standby in (b, h):
        standby.wait_event("lease_seen", 20, match=lambda e: e["holder"] == "a")
    members_seen(a, {"a", "b", "c"})
    return a, b, h


def test_the_priority_host_takes_over_after_a_kill(pair: Cluster, load: LoadWatch) -> None:
    with Watcher(pair.hosts) as watch:
        a, b, h = start_three(pair, candidate(0), candidate(0), candidate(5))
        # b has seen c as a live candidate of a higher priority: it waits U more
        wait_until(lambda: b.status()[1].get("priority_wait") == U, 20, interval=0.1,
                   message="b sees c's higher priority")
        assert h.status()[1].get("priority_wait") == 0
        (node_a,) = a.live_nodes()
        killed_at = time.monotonic()
        a.signal(signal.SIGKILL)
        took = wait_within(lambda: h.live_nodes(), W, load, floor=1.0, since=killed_at,
                           what="c (priority 5) runs the node")
        # b, of a lower priority, never even tried: its wait (W + U) was not over
        b.no_event("lease_acquired", U)
        assert acquisitions_sent(b) == 0
        assert b.live_nodes() == []
        acquired = h.events("lease_acquired")[-1]
        assert acquired["how"].startswith("expired")
        print(f"priority takeover: c took over {took:.3f} s after the SIGKILL of a "
              f"(W = {W:g} s); b, priority 0, sent {acquisitions_sent(b):g} acquisitions")
        print("c:", json.dumps(acquired))
    watch.assert_never_two()
    del node_a


def test_a_nofailover_host_never_takes_the_lease(pair: Cluster, load: LoadWatch) -> None:
    with Watcher(pair.hosts) as watch:
        a, b, h = start_three(pair, candidate(0), candidate(5), candidate(9, nofailover=True))
        code, body = http_get(h.health_port(), "/readiness")
        assert code == 503 and b"candidate.nofailover = true" in body, body
        refused = run_cli("handover", "--to", "c", "--config", str(a.config_path))
        assert refused.returncode == 4, refused
        assert "candidate.nofailover = true" in refused.stderr
        assert a.live_nodes()  # untouched
        # without --to: the highest live candidate (b; c is out)
        pair.wait_member_ready("b")
        handed = run_cli("handover", "--wait", "20", "--config", str(a.config_path))
        assert handed.returncode == 0, handed
        assert "now held by b" in handed.stdout
        b.wait_node_up(20)
        a.signal(signal.SIGTERM)  # a (cooling down) leaves: c is the only standby left
        assert a.exit_code(20) == 0
        killed_at = time.monotonic()
        b.signal(signal.SIGKILL)
        # c stays out for good: 3 W past the end of b's lease
        h.no_event("lease_acquired", within(3 * W, load, spawns=0))
        assert h.live_nodes() == [] and acquisitions_sent(h) == 0
        assert time.monotonic() - killed_at > 3 * W
        text = status_text(h)
        assert "NOFAILOVER" in text and "candidate.nofailover = true" in text, text
        print("nofailover:\n" + text)
        print("c's /readiness:", http_get(h.health_port(), "/readiness"))
    watch.assert_never_two()


def test_a_scheduled_handover_survives_a_restart_and_comes_on_time(
        pair: Cluster, load: LoadWatch) -> None:
    with Watcher(pair.hosts) as watch:
        a, b, _ = start_three(pair, "", "", "")
        # the set time lies beyond the holder's restart below (a supervisor's start
        # takes seconds on a loaded machine): checked before the schedule is read back
        at, at_s = local_iso(SCHEDULE_LEAD)
        began = time.monotonic()
        out = run_cli("handover", "--at", at, "--config", str(a.config_path))
        print(f"handover --at took {time.monotonic() - began:.3f} s")
        assert out.returncode == 0, out
        assert "handover scheduled at" in status_text(b)
        # the holder's supervisor restarts: it releases, another host takes over, and
        # the schedule stays in the row for the new holder
        a.signal(signal.SIGTERM)
        assert a.exit_code(20) == 0
        holder = pair.active(within(0.0, load, floor=5.0))
        again = add(pair, "a")
        watch.hosts = pair.hosts
        again.start()
        again.wait_event("lease_seen", 20)
        text = status_text(again)
        assert time.time() < at_s, "premise: the restart ended before the set time"
        assert "handover scheduled at" in text, text
        due = holder.wait_event("handover_schedule_due", at_s - time.time() + 30)
        late = log_seconds(due) - at_s
        assert -0.05 <= late <= U + allowance(load, spawns=0), late
        wait_until(lambda: not holder.live_nodes(), 20, message="the holder's node stops")
        taker = pair.active(within(W, load, floor=5.0))
        assert taker is not holder
        print(f"scheduled handover: {holder.name} began it {late:.3f} s after the set time "
              f"(U = {U:g} s); {taker.name} took over")
        print(holder.name + ":", json.dumps(due))
        assert "handover scheduled" not in status_text(taker)

        # no live standby at the set time: cancelled, the node runs on
        for other in pair.hosts:
            if other is not taker and other.proc is not None and other.proc.poll() is None:
                other.signal(signal.SIGTERM)
                assert other.exit_code(20) == 0
        at, at_s = local_iso(MEMBER_FRESH + 2 * MEMBER_INTERVAL)
        out = run_cli("handover", "--at", at, "--config", str(taker.config_path))
        assert out.returncode == 0, out
        cancelled = taker.wait_event("handover_schedule_cancelled", at_s - time.time() + 30)
        assert cancelled["reason"] == "no live standby could take over at the set time"
        assert taker.live_nodes() and "handover scheduled" not in status_text(taker)
        print(taker.name + ":", json.dumps(cancelled))
    watch.assert_never_two()


def test_handover_cancel_takes_the_schedule_back(pair: Cluster) -> None:
    a = add(pair, "a")
    a.start()
    a.wait_node_up(20)
    at, _ = local_iso(3600)
    assert run_cli("handover", "--at", at, "--config", str(a.config_path)).returncode == 0
    assert "handover scheduled at" in status_text(a)
    out = run_cli("handover", "--cancel", "--config", str(a.config_path))
    assert out.returncode == 0 and "cancelled" in out.stdout, out
    assert "handover scheduled" not in status_text(a)
    past, _ = local_iso(-60)
    out = run_cli("handover", "--at", past, "--config", str(a.config_path))
    assert out.returncode == 4 and "has passed" in out.stderr, out
    out = run_cli("handover", "--at", "tomorrow", "--config", str(a.config_path))
    assert out.returncode == 2 and "ISO 8601" in out.stderr, out


def test_a_timing_mismatch_is_shown_and_a_shorter_w_waits_for_the_holders(
        pair: Cluster, pg_dsn: str, load: LoadWatch) -> None:
    """c holds with W = 6 s; a and b wait only W = 4 s on their own clocks. The row's
    expiry (the holder's W) keeps them out until c's W is over."""
    long_w = 6.0
    with Watcher(pair.hosts) as watch:
        holder = add(pair, "c", wait_ms=int(long_w * 1000))
        holder.start()
        holder.wait_node_up(20)
        a, b = add(pair, "a"), add(pair, "b")
        watch.hosts = pair.hosts
        a.start()
        b.start()
        for h in (a, b, holder):
            h.wait_event("timing_mismatch", 30, match=lambda e: e["mismatch"] is True)
        text = status_text(a)
        assert "TIMING MISMATCH: the members publish 2 different settings" in text, text
        view = status_json(a)
        assert view["timing"] == {"settings": 2, "mismatch": True}
        with urllib.request.urlopen(f"http://127.0.0.1:{a.health_port()}/metrics",
                                    timeout=5) as r:
            assert "corda_ha_timing_settings 2.0" in r.read().decode()
        time.sleep(2 * MEMBER_INTERVAL)  # an observation window: two more member reads
        for h in (a, b, holder):
            warned = [e for e in h.events("timing_mismatch") if e["mismatch"]]
            assert len(warned) == 1, (h.name, warned)
        print("mismatch in status:\n" + text)

        holder.signal(signal.SIGKILL)
        assert holder.exit_code(10) == -signal.SIGKILL
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT epoch, renewed_at, expires_at FROM corda_ha_lease "
                "WHERE lease_name = %s", (pair.lease_name,)).fetchone()
            assert row is not None
            epoch, renewed_at, expires_at = row
            assert expires_at - renewed_at == timedelta(seconds=long_w)
            taker = pair.active(within(long_w, load, floor=5.0))
            after = conn.execute(
                "SELECT epoch, acquired_at FROM corda_ha_lease WHERE lease_name = %s",
                (pair.lease_name,)).fetchone()
        assert after is not None and after[0] == epoch + 1
        assert after[1] > renewed_at + timedelta(seconds=long_w), (after, renewed_at)
        print(f"shorter W: {taker.name} (W = {W:g} s) took the lease "
              f"{(after[1] - renewed_at).total_seconds():.3f} s after c's last renewal "
              f"(c's W = {long_w:g} s)")
    watch.assert_never_two()
