"""Readiness: /health is 200 only on the holder whose node is ready
(a log line matched, or its port answers); a node never ready within startTimeout is a
failed start, and the crash rules move the lease to the other host."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.harness.bounds import wait_within
from tests.harness.cluster import Cluster
from tests.harness.config import seconds, supervisor_config
from tests.harness.host import http_get
from tests.harness.loadprobe import LoadWatch
from tests.harness.pgserver import free_port
from tests.harness.proc import wait_until
from tests.harness.watcher import Watcher

pytestmark = pytest.mark.timeout(90)

REGISTERED = supervisor_config(node={"readiness": {"logPattern": "started up and registered",
                                                  "startTimeout": seconds(10)}})


def health(port: int) -> int:
    return http_get(port, "/health")[0]


def test_health_waits_for_the_registered_line(pair: Cluster) -> None:
    with Watcher(pair.hosts) as watch:
        a = pair.add("a", ["--ready-after", "1.5"], extra_conf=REGISTERED)
        watch.hosts = pair.hosts
        a.start()
        pid = a.wait_node_up(15)
        port = a.health_port()
        _, body = http_get(port, "/status")
        status = json.loads(body)
        started = time.monotonic()
        assert status["node_running"] is True and status["ready"] is False
        assert health(port) == 503
        ready = a.wait_event("node_ready", 10)
        assert ready["pid"] == pid
        wait_until(lambda: health(port) == 200, 2, message="/health 200 once ready")
        assert time.monotonic() - started >= 1.0  # not before the line
        assert json.loads(http_get(port, "/status")[1])["ready"] is True
    watch.assert_never_two()


def test_readiness_by_port(pair: Cluster) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", free_port()))
    node_port = listener.getsockname()[1]
    a = pair.add("a", extra_conf=supervisor_config(
        node={"readiness": {"port": node_port, "startTimeout": seconds(20)}}))
    a.start()
    a.wait_node_up(15)
    port = a.health_port()
    time.sleep(1.0)  # an observation window: the port is closed, so not ready
    assert health(port) == 503 and not a.events("node_ready")
    listener.listen()
    try:
        a.wait_event("node_ready", 5)
        wait_until(lambda: health(port) == 200, 2, message="/health 200 once the port answers")
    finally:
        listener.close()


def test_never_ready_is_a_failed_start_and_the_lease_moves(pair: Cluster, load: LoadWatch) -> None:
    never = supervisor_config(node={"readiness": {"logPattern": "never printed",
                                                  "startTimeout": seconds(1)}})
    with Watcher(pair.hosts) as watch:
        a = pair.add("a", extra_conf=never)
        b = pair.add("b")
        watch.hosts = pair.hosts
        a.start()
        a.wait_node_up(15)
        b.start()
        a.wait_event("node_not_ready", 10)
        a.wait_event("crash_loop", 20)
        b.wait_event("lease_acquired", 10)
        wait_within(lambda: b.live_nodes(), 0.0, load, floor=5.0, what="b's node")
        exits = a.events("node_exited")
        assert exits and all(e["expected"] is False for e in exits)
    watch.assert_never_two()
