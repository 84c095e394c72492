"""HealthServer over real HTTP (urllib, port 0) and the Metrics registry it serves."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace

import pytest

from supervisor.observe.http import HealthServer, StatusView
from supervisor.observe.metrics import Metrics
from tests.harness.aio import run

pytestmark = pytest.mark.timeout(20)


def view(**kw: object) -> StatusView:
    base: dict[str, object] = dict(
        state="active", machine_name="hostA", holder="hostA", epoch=7, node_pid=4242,
        lease_held=True, node_running=True, lease_enabled=True,
        last_loop_turn=time.monotonic(), extra={"restarts": 2, "last_renewal_age": 0.4},
    )
    base.update(kw)
    return StatusView(**base)  # type: ignore[arg-type]


def fetch(server: HealthServer, path: str,
          method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, dict(err.headers), err.read()


def get_json(server: HealthServer, path: str) -> tuple[int, dict[str, object]]:
    status, headers, body = fetch(server, path)
    assert headers["Content-Type"] == "application/json"
    return status, json.loads(body)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(machine_name="hostA")


@pytest.fixture
def server(metrics: Metrics) -> Iterator[HealthServer]:
    srv = HealthServer("127.0.0.1", 0, liveness_timeout=5.0, registry=metrics.registry)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_port_zero_gets_a_real_port(server: HealthServer) -> None:
    assert server.port > 0


def test_before_first_update(server: HealthServer) -> None:
    assert get_json(server, "/health")[0] == 503
    status, body = get_json(server, "/status")
    assert (status, body["state"]) == (503, "starting")
    assert get_json(server, "/liveness")[0] == 200  # start-up grace


def test_health_active_holder(server: HealthServer) -> None:
    server.update(view())
    status, body = get_json(server, "/health")
    assert status == 200
    assert body["healthy"] is True
    assert body["epoch"] == 7


@pytest.mark.parametrize(
    ("lease_enabled", "lease_held", "node_running", "expected"),
    [
        (True, True, True, 200),
        (True, True, False, 503),   # backoff: holds the lease, node crashed
        (True, False, True, 503),   # lease lost, node still being killed
        (True, False, False, 503),  # standby
        (False, False, True, 200),  # disabled: plain supervision
        (False, False, False, 503),
    ],
)
def test_health_matrix(server: HealthServer, lease_enabled: bool, lease_held: bool,
                       node_running: bool, expected: int) -> None:
    server.update(view(lease_enabled=lease_enabled, lease_held=lease_held,
                       node_running=node_running))
    assert get_json(server, "/health")[0] == expected


def test_status_fields(server: HealthServer) -> None:
    server.update(view(state="standby", holder="hostB", epoch=9, node_pid=None,
                       lease_held=False, node_running=False))
    status, body = get_json(server, "/status")
    assert status == 200
    assert body["state"] == "standby"
    assert body["machine_name"] == "hostA"
    assert body["holder"] == "hostB"
    assert body["epoch"] == 9
    assert body["node_pid"] is None
    assert body["lease_held"] is False
    assert body["node_running"] is False
    assert body["restarts"] == 2
    assert body["last_renewal_age"] == 0.4
    assert isinstance(body["loop_age_seconds"], float)


def test_status_extra_cannot_override_core_fields(server: HealthServer) -> None:
    server.update(view(extra={"state": "bogus", "when": object()}))
    status, body = get_json(server, "/status")
    assert status == 200
    assert body["state"] == "active"
    assert isinstance(body["when"], str)  # non-JSON values are stringified, not a 500


def test_liveness_follows_loop_turns() -> None:
    srv = HealthServer("127.0.0.1", 0, liveness_timeout=0.3)
    srv.start()
    try:
        srv.update(view(last_loop_turn=time.monotonic()))
        assert get_json(srv, "/liveness")[0] == 200
        time.sleep(0.4)  # the loop "hangs"
        status, body = get_json(srv, "/liveness")
        assert status == 503
        assert body["alive"] is False
        srv.update(view(last_loop_turn=time.monotonic()))
        assert get_json(srv, "/liveness")[0] == 200
    finally:
        srv.stop()


def test_a_stale_loop_fails_health_and_liveness(server: HealthServer) -> None:
    """A holder whose node runs but whose loop stopped turning (liveness_timeout
    5 s; the view is 10 s old) gets no traffic and fails liveness."""
    server.update(view(last_loop_turn=time.monotonic() - 10.0))
    status, body = get_json(server, "/health")
    assert status == 503
    assert body["healthy"] is False and body["loop_stale"] is True
    assert 10.0 <= float(body["loop_age_seconds"]) < 60.0  # type: ignore[arg-type]
    assert body["lease_held"] is True and body["node_running"] is True  # as last seen
    status, body = get_json(server, "/liveness")
    assert (status, body["alive"]) == (503, False)
    assert 10.0 <= float(body["loop_age_seconds"]) < 60.0  # type: ignore[arg-type]
    status, body = get_json(server, "/status")
    assert status == 200  # /status still describes the (old) view
    assert body["healthy"] is False and body["loop_stale"] is True
    assert fetch(server, "/health", method="HEAD")[0] == 503
    # Just inside the timeout: fine; the loop turning again makes it healthy again.
    server.update(view(last_loop_turn=time.monotonic() - 4.0))
    assert get_json(server, "/health")[0] == 200
    assert get_json(server, "/liveness")[0] == 200
    server.update(view(last_loop_turn=time.monotonic()))
    status, body = get_json(server, "/health")
    assert status == 200
    assert body["loop_stale"] is False and float(body["loop_age_seconds"]) < 5.0  # type: ignore[arg-type]


@pytest.mark.parametrize(("kw", "ready"), [
    ({}, True),  # the holder with its node up
    ({"lease_held": False, "node_running": False, "state": "standby",
      "extra": {"can_take_over": True, "can_take_over_reason": "standby, database reachable"}},
     True),
    ({"lease_held": False, "node_running": False, "state": "standby",
      "extra": {"can_take_over": False, "can_take_over_reason": "database unreachable: x"}},
     False),
    ({"lease_held": False, "node_running": False, "state": "cooldown",
      "extra": {"can_take_over": False, "can_take_over_reason": "state is cooldown"}}, False),
    ({"lease_held": True, "node_running": False, "state": "backoff",
      "extra": {"can_take_over": False, "can_take_over_reason": "this host holds the lease"}},
     False),
    ({"last_loop_turn": time.monotonic() - 10.0}, False),  # a stale loop is never ready
    ({"lease_enabled": False, "lease_held": False, "state": "disabled"}, True),
])
def test_readiness(server: HealthServer, kw: dict[str, object], ready: bool) -> None:
    server.update(view(**kw))
    status, body = get_json(server, "/readiness")
    assert (status, body["ready"]) == ((200, True) if ready else (503, False))
    assert body["reason"]


def test_readiness_before_first_update(server: HealthServer) -> None:
    assert get_json(server, "/readiness")[0] == 503


def test_metrics(server: HealthServer, metrics: Metrics) -> None:
    v = view(extra={"restarts": 2, "last_renewal_age": 0.4})
    metrics.lease_acquisitions_total.inc()  # the daemon counts on the exported metrics
    metrics.lease_renewals_total.inc(2)
    metrics.lease_renewal_failures_total.inc()
    metrics.update(v)
    server.update(v)
    status, headers, body = fetch(server, "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    for line in [
        'corda_ha_state{corda_ha_state="active"} 1.0',
        'corda_ha_state{corda_ha_state="standby"} 0.0',
        "corda_ha_lease_held 1.0",
        "corda_ha_epoch 7.0",
        "corda_ha_node_running 1.0",
        "corda_ha_node_restarts_total 2.0",
        "corda_ha_lease_renewals_total 2.0",
        "corda_ha_lease_renewal_failures_total 1.0",
        "corda_ha_lease_acquisitions_total 1.0",
        'corda_ha_supervisor_info{machine_name="hostA"} 1.0',
    ]:
        assert line in text.splitlines(), line
    age = [ln for ln in text.splitlines() if ln.startswith("corda_ha_last_renewal_age_seconds ")]
    assert len(age) == 1 and 0.4 <= float(age[0].split()[1]) < 5.0
    assert "process_resident_memory_bytes" in text
    assert "# TYPE corda_ha_log_records_dropped_total counter" in text.splitlines()
    drops = [ln for ln in text.splitlines()
             if ln.startswith("corda_ha_log_records_dropped_total ")]
    assert len(drops) == 1 and float(drops[0].split()[1]) >= 0


def test_metrics_restart_count_from_views(metrics: Metrics) -> None:
    def restarts() -> float | None:
        return metrics.registry.get_sample_value("corda_ha_node_restarts_total")

    for n in [0, 1, 1, 3, 0, 2]:  # the core's count resets after a long run
        metrics.update(view(extra={"restarts": n}))
    assert restarts() == 5.0


def test_metrics_renewal_age_nan_until_renewed(metrics: Metrics) -> None:
    from prometheus_client import generate_latest

    text = generate_latest(metrics.registry).decode()
    assert "corda_ha_last_renewal_age_seconds NaN" in text
    assert 'corda_ha_state{corda_ha_state="starting"} 1.0' in text
    metrics.set_state("no-such-state")  # ignored, never raises
    metrics.update(view(extra={"last_renewal_age": 3.0}))
    value = metrics.registry.get_sample_value("corda_ha_last_renewal_age_seconds")
    assert value is not None and 3.0 <= value < 4.0
    metrics.update(view(state="standby", lease_held=False, extra={"last_renewal_age": 1.0}))
    text = generate_latest(metrics.registry).decode()
    assert "corda_ha_last_renewal_age_seconds NaN" in text  # not holding: no age


def test_head_has_status_and_no_body(server: HealthServer) -> None:
    server.update(view(node_running=False))
    status, headers, body = fetch(server, "/health", method="HEAD")
    assert status == 503
    assert body == b""
    assert int(headers["Content-Length"]) > 0
    status, _, body = fetch(server, "/status", method="HEAD")
    assert (status, body) == (200, b"")
    assert fetch(server, "/metrics", method="HEAD")[0] == 200
    assert fetch(server, "/nope", method="HEAD")[0] == 404


def test_unknown_path_404(server: HealthServer) -> None:
    assert get_json(server, "/nope")[0] == 404
    assert get_json(server, "/")[0] == 404
    assert get_json(server, "/health?verbose=1")[0] == 503  # query string ignored


def test_unsupported_method(server: HealthServer) -> None:
    assert fetch(server, "/health", method="POST")[0] == 501


def test_snapshot_is_consistent_under_concurrent_updates(server: HealthServer) -> None:
    """Each response reflects one whole view, never a mix of two."""
    a = view(state="active", epoch=1, lease_held=True, node_running=True)
    b = view(state="standby", epoch=2, lease_held=False, node_running=False)
    stop = threading.Event()

    def flip() -> None:
        while not stop.is_set():
            server.update(a)
            time.sleep(0)
            server.update(b)
            time.sleep(0)

    t = threading.Thread(target=flip, daemon=True)
    t.start()
    try:
        for _ in range(100):
            status, body = get_json(server, "/status")
            assert status == 200
            expected = (a if body["epoch"] == 1 else b)
            assert body["state"] == expected.state
            assert body["lease_held"] == expected.lease_held
            assert body["node_running"] == expected.node_running
    finally:
        stop.set()
        t.join()


def test_a_stalled_client_blocks_neither_server_nor_loop(server: HealthServer) -> None:
    server.update(view())
    stalled = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(3)]
    try:
        stalled[0].sendall(b"GET /health HTTP/1.1\r\n")  # headers never finished

        async def loop_turns_while_serving() -> tuple[int, float]:
            turns = 0
            worst = 0.0

            async def ticker() -> None:
                nonlocal turns, worst
                last = time.monotonic()
                while True:
                    await asyncio.sleep(0.01)
                    now = time.monotonic()
                    worst = max(worst, now - last)
                    last = now
                    turns += 1
                    server.update(view(last_loop_turn=now))

            task = asyncio.create_task(ticker())
            statuses = [await asyncio.to_thread(lambda: fetch(server, "/health")[0])
                        for _ in range(20)]
            task.cancel()
            assert statuses == [200] * 20
            return turns, worst

        turns, worst = run(loop_turns_while_serving())
        assert turns > 0
        assert worst < 0.5
    finally:
        for s in stalled:
            s.close()


def test_stop_is_bounded_and_closes_the_port() -> None:
    srv = HealthServer("127.0.0.1", 0, liveness_timeout=5.0)
    srv.start()
    port = srv.port
    stalled = socket.create_connection(("127.0.0.1", port))
    try:
        start = time.monotonic()
        srv.stop()
        assert time.monotonic() - start < 2.0
        srv.stop()  # idempotent
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
    finally:
        stalled.close()


def test_stop_before_start_is_a_noop() -> None:
    HealthServer("127.0.0.1", 0, liveness_timeout=1.0).stop()


def test_bind_failure_raises_at_start(server: HealthServer) -> None:
    other = HealthServer("127.0.0.1", server.port, liveness_timeout=1.0)
    with pytest.raises(OSError):
        other.start()


def test_default_registry_is_global() -> None:
    srv = HealthServer("127.0.0.1", 0, liveness_timeout=1.0)
    srv.start()
    try:
        status, _, body = fetch(srv, "/metrics")
        assert status == 200
        assert b"python_info" in body
    finally:
        srv.stop()


def test_view_is_immutable() -> None:
    v = view()
    with pytest.raises(AttributeError):
        v.state = "standby"  # type: ignore[misc]
    assert replace(v, state="standby").state == "standby"


def test_ipv6_host() -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    srv = HealthServer("::1", 0, liveness_timeout=1.0)
    srv.start()
    try:
        srv.update(view())
        with urllib.request.urlopen(f"http://[::1]:{srv.port}/health", timeout=5) as resp:
            assert resp.status == 200
    finally:
        srv.stop()


def test_health_waits_for_readiness(server: HealthServer) -> None:
    """The holder whose node runs but is not ready yet (node.readiness) gets no traffic."""
    server.update(view(node_ready=False))
    status, body = get_json(server, "/health")
    assert (status, body["healthy"], body["ready"]) == (503, False, False)
    assert get_json(server, "/readiness")[0] == 503
    server.update(view(node_ready=True))
    assert get_json(server, "/health")[0] == 200
