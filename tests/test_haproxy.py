"""A real load balancer (Debian's haproxy) sends connections only to the backend whose
/health answers 200, and switches to the other one within its check interval after a
flip (measured: the time until the answers change, not a sleep). Also: the example
config for operators is valid and has what the harness relies on."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import haproxy, jvmnode
from tests.harness.bounds import within
from tests.harness.haproxy import Backend, HaProxy, HealthServer, NameServer
from tests.harness.jvmnode import REGISTERED, NodeConf
from tests.harness.loadprobe import measure
from tests.harness.pgserver import free_port
from tests.harness.proc import Reaper, wait_until

pytestmark = pytest.mark.timeout(60)

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "haproxy.cfg"
INTER_MS = 100


@pytest.fixture(autouse=True)
def _need_haproxy() -> None:
    haproxy.require()


class Pair:
    def __init__(self) -> None:
        self.a, self.b = NameServer("a"), NameServer("b")
        self.health_a, self.health_b = HealthServer(200), HealthServer(503)

    def backends(self) -> list[Backend]:
        return [Backend("a", self.a.port, self.health_a.port),
                Backend("b", self.b.port, self.health_b.port)]

    def close(self) -> None:
        for s in (self.a, self.b, self.health_a, self.health_b):
            s.close()


@pytest.fixture
def pair() -> Iterator[Pair]:
    p = Pair()
    try:
        yield p
    finally:
        p.close()


def answers(lb: HaProxy, n: int = 20) -> set[str | None]:
    return {lb.which() for _ in range(n)}


def test_connections_go_only_to_the_healthy_backend_and_follow_a_flip(
        tmp_path: Path, reaper: Reaper, pair: Pair) -> None:
    # one check interval, one check, haproxy's turn
    bound = within(3 * INTER_MS / 1000, measure(), spawns=0)
    with HaProxy(tmp_path, pair.backends(), inter_ms=INTER_MS, reaper=reaper) as lb:
        assert lb.server_states() == {"a": "UP", "b": "DOWN"}
        assert answers(lb) == {"a"}, "a DOWN backend got a connection"

        # a's /health turns 503 (its node stops): haproxy stops sending it connections
        pair.health_a.status = 503
        leave = lb.wait_for(None, timeout=10)
        assert answers(lb, 5) == {None}, "a connection reached a backend that is not ready"

        # b's /health turns 200 (its node is ready): connections go to b
        pair.health_b.status = 200
        join = lb.wait_for("b", timeout=10)
        assert answers(lb) == {"b"}
        assert lb.server_states() == {"a": "DOWN", "b": "UP"}

        # both at once: each server's checks run on their own timer, so for up to one
        # interval both (or neither) may be UP; then only a
        pair.health_a.status, pair.health_b.status = 200, 503
        both = lb.wait_for("a", timeout=10)
        wait_until(lambda: lb.server_states() == {"a": "UP", "b": "DOWN"}, 10)
        assert answers(lb) == {"a"}
    print(f"haproxy (inter {INTER_MS} ms, rise/fall 1): a leaves {leave * 1000:.0f} ms, "
          f"b joins {join * 1000:.0f} ms, flip back to a {both * 1000:.0f} ms "
          f"(bound {bound:.2f} s)")
    for t in (leave, join, both):
        assert t <= bound, f"switch took {t:.3f}s, more than {bound:.3f}s"


def test_a_backend_marked_down_loses_its_open_connections(
        tmp_path: Path, reaper: Reaper, pair: Pair) -> None:
    """on-marked-down shutdown-sessions: a connection haproxy holds open to a backend
    that goes DOWN is closed by haproxy (peers reconnect to the new node)."""
    import socket

    silent = socket.create_server(("127.0.0.1", 0))  # accepts, never answers, never closes
    health = HealthServer(200)
    held: list[socket.socket] = []
    try:
        with HaProxy(tmp_path, [Backend("s", silent.getsockname()[1], health.port)],
                     inter_ms=INTER_MS, reaper=reaper) as lb, \
                socket.create_connection(("127.0.0.1", lb.p2p_port), timeout=5) as client:
            held.append(silent.accept()[0])  # haproxy connected through to the backend
            client.settimeout(0.3)
            with pytest.raises(TimeoutError):
                client.recv(1)  # open, silent
            health.status = 503
            client.settimeout(10)
            try:
                closed = client.recv(1) == b""
            except ConnectionResetError:
                closed = True
            assert closed, "haproxy did not close the session"
    finally:
        for s in held:
            s.close()
        silent.close()
        health.close()


def test_haproxy_is_reaped_at_close(tmp_path: Path, pair: Pair) -> None:
    lb = HaProxy(tmp_path, pair.backends(), inter_ms=INTER_MS).start()
    proc = lb.proc
    assert proc is not None and proc.poll() is None
    lb.close()
    assert proc.poll() is not None


def test_the_example_config_is_valid_and_checks_health() -> None:
    text = EXAMPLE.read_text()
    for needed in ("mode tcp", "option httpchk GET /health", "http-check expect status 200",
                   "on-marked-down shutdown-sessions", "bind :10002", "bind :10003",
                   "check port 8080", "check port 8081"):
        assert needed in text, f"config/haproxy.cfg lacks {needed!r}"
    # the harness runs what the example describes
    harness = haproxy.render_config([Backend("x", 1, 2, rpc_port=3)], p2p_port=4, rpc_port=5,
                                    admin_socket=Path("/nonexistent"))
    for needed in ("option httpchk GET /health", "http-check expect status 200",
                   "on-marked-down shutdown-sessions", "mode tcp"):
        assert needed in harness
    check = subprocess.run(["haproxy", "-c", "-f", str(EXAMPLE)], capture_output=True,
                           text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "Configuration file is valid" in check.stdout + check.stderr


def test_the_jvm_stand_in_answers_through_haproxy_on_p2p_and_rpc(
        tmp_path: Path, reaper: Reaper) -> None:
    """The harness as an end-to-end test uses it: stand-ins' P2P and RPC ports behind the
    two frontends, each host's /health deciding (here a HealthServer per host)."""
    jvmnode.require()
    health = {"a": HealthServer(200), "b": HealthServer(503)}
    try:
        backends = []
        for name in ("a", "b"):
            conf = NodeConf(machine_name=name, jdbc_url="jdbc:postgresql://unused/x",
                            mutex_on=False, p2p_port=free_port(), rpc_port=free_port())
            node = jvmnode.start(reaper, tmp_path / name, conf=conf)
            node.wait_line(REGISTERED.pattern, 30)
            assert conf.rpc_port is not None
            backends.append(Backend(name, conf.p2p_port, health[name].port,
                                    rpc_port=conf.rpc_port))
        with HaProxy(tmp_path / "lb", backends, inter_ms=INTER_MS, reaper=reaper) as lb:
            assert answers(lb) == {"a"} and {lb.which("rpc") for _ in range(5)} == {"a"}
            health["a"].status = 503
            lb.wait_for(None, timeout=10)
            health["b"].status = 200
            lb.wait_for("b", timeout=10)
            assert lb.wait_for("b", timeout=10, frontend="rpc") < 10
    finally:
        for h in health.values():
            h.close()
