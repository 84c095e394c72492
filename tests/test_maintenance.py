"""Maintenance commands through the database: pause / resume,
handover --to MACHINE, history. Real supervisors and PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from tests.harness.bounds import wait_within
from tests.harness.cli import run_cli
from tests.harness.cluster import Cluster, start_pair
from tests.harness.host import http_get
from tests.harness.loadprobe import LoadWatch
from tests.harness.watcher import Watcher

pytestmark = pytest.mark.timeout(120)


def cli(host: object, *args: str) -> tuple[int, str]:
    out = run_cli(*args, "--config", str(host.config_path))  # type: ignore[attr-defined]
    return out.returncode, out.stdout + out.stderr


def test_pause_leaves_the_node_alone_and_standbys_take_nothing(pair: Cluster,
                                                               load: LoadWatch) -> None:
    with Watcher(pair.hosts) as watch:
        a, b = start_pair(pair)
        watch.hosts = pair.hosts
        pair.wait_member_ready("b")
        code, out = cli(b, "pause")  # from the other host: it goes through the database
        assert code == 0 and "paused" in out
        a.wait_event("pair_paused", 5)
        b.wait_event("pair_paused", 5)
        code, out = cli(a, "status")
        assert "PAUSED" in out
        assert json.loads(http_get(b.health_port(), "/readiness")[1])["paused"] is True
        assert cli(a, "handover")[0] == 4  # refused while paused
        (node,) = a.live_nodes()
        os.kill(node, signal.SIGKILL)  # a crash during maintenance: not restarted
        a.wait_event("node_not_restarted_while_paused", 5)
        time.sleep(2.5 * 2.0)  # an observation window of 2.5 W
        assert a.live_nodes() == [] and b.live_nodes() == []
        assert not b.events("lease_acquired") and len(a.events("node_started")) == 1
        code, _ = cli(a, "resume")
        assert code == 0
        a.wait_event("pair_resumed", 5)
        wait_within(lambda: a.live_nodes(), 0.0, load, floor=5.0,
                    what="a's node restarted on resume")
    watch.assert_never_two()


def test_paused_pair_with_a_dead_holder_waits_for_resume(pair: Cluster, load: LoadWatch) -> None:
    with Watcher(pair.hosts) as watch:
        a, b = start_pair(pair)
        watch.hosts = pair.hosts
        assert cli(a, "pause")[0] == 0
        b.wait_event("pair_paused", 5)
        a.signal(signal.SIGKILL)
        time.sleep(2.5 * 2.0)  # W passed, but the pair is paused: b takes nothing
        assert not b.events("lease_acquired") and not b.live_nodes()
        assert cli(b, "resume")[0] == 0
        b.wait_event("lease_acquired", 10)
        wait_within(lambda: b.live_nodes(), 0.0, load, floor=5.0, what="b's node")
    watch.assert_never_two()


def test_handover_to_a_named_member_and_history(pair: Cluster, load: LoadWatch) -> None:
    with Watcher(pair.hosts) as watch:
        a, b = start_pair(pair)
        c = pair.add("c")
        watch.hosts = pair.hosts
        c.start()
        c.wait_event("lease_seen", 15, match=lambda e: e["holder"] == "a")
        pair.wait_member_ready("b")
        pair.wait_member_ready("c")
        assert cli(a, "handover", "--to", "nobody-here")[0] == 4
        code, out = cli(a, "handover", "--to", "c", "--wait", "15")
        assert code == 0, out
        assert "could take over: c" in out and "now held by c" in out
        wait_within(lambda: c.live_nodes(), 0.0, load, floor=5.0, what="c's node")
        assert not b.events("lease_acquired")
        code, out = cli(a, "history", "--json")
        assert code == 0, out
        rows = json.loads(out)
        assert [r["holder"] for r in rows[:2]] == ["c", "a"]
        assert rows[0]["how"] == "handed over" and rows[0]["previous_holder"] == "a"
        assert rows[1]["end_reason"] == "released" and rows[1]["held_seconds"] > 0
        assert rows[0]["ended_at"] is None
        code, out = cli(a, "history")
        assert "still held" in out and "handed over" in out
    watch.assert_never_two()
