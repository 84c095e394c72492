"""The status port is not an open door: the token on /status and /metrics, the internal
address, and what a hostile client can cost (unknown paths, oversized requests, bodies,
slow clients, floods of connections), over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from supervisor.observe.http import HealthServer, StatusView, authorized
from supervisor.observe.metrics import Metrics
from supervisor.observe.server import Limits
from tests.harness.aio import run
from tests.harness.proc import wait_until

pytestmark = pytest.mark.timeout(30)

TOKEN = "0123456789abcdef0123456789abcdef"


def view() -> StatusView:
    return StatusView(state="active", machine_name="hostA", holder="hostA", epoch=7,
                      node_pid=4242, lease_held=True, node_running=True, lease_enabled=True,
                      last_loop_turn=time.monotonic(), extra={"restarts": 2})


def raw(port: int, request: bytes, timeout: float = 5.0) -> bytes:
    """Send `request` on a fresh connection and read the whole answer (until EOF)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        if request:
            sock.sendall(request)
        return read_all(sock)


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def get(port: int, path: str, token: str | None = None, method: str = "GET") -> tuple[int, bytes]:
    """(status, whole answer) of one HTTP/1.0 request."""
    auth = f"Authorization: Bearer {token}\r\n" if token is not None else ""
    answer = raw(port, f"{method} {path} HTTP/1.0\r\nHost: x\r\n{auth}\r\n".encode())
    return status_of(answer), answer


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1."), answer[:80]
    return int(answer.split(b" ", 2)[1])


@contextlib.contextmanager
def serving(**kw: object) -> Iterator[HealthServer]:
    kw.setdefault("registry", Metrics(machine_name="hostA").registry)
    srv = HealthServer("127.0.0.1", 0, liveness_timeout=5.0, **kw)  # type: ignore[arg-type]
    srv.start()
    srv.update(view())
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def server() -> Iterator[HealthServer]:
    with serving(limits=Limits(request_timeout=1.0)) as srv:
        yield srv


@pytest.fixture
def guarded() -> Iterator[HealthServer]:
    with serving(token=TOKEN) as srv:
        yield srv


# --------------------------------------------------------------------------- the token


def test_probes_stay_open_with_a_token(guarded: HealthServer) -> None:
    for path in ("/health", "/readiness", "/liveness"):
        assert get(guarded.port, path)[0] == 200, path


@pytest.mark.parametrize("path", ["/status", "/metrics"])
def test_internals_need_the_token(guarded: HealthServer, path: str) -> None:
    status, answer = get(guarded.port, path)
    assert status == 401
    assert b'WWW-Authenticate: Bearer realm="corda-ha-supervisor"\r\n' in answer
    assert b"machine_name" not in answer and b"corda_ha" not in answer
    status, answer = get(guarded.port, path, token=TOKEN[:-1] + "X")
    assert status == 401
    assert b'error="invalid_token"' in answer
    assert get(guarded.port, path, token=TOKEN + "0")[0] == 401  # longer: still wrong
    assert get(guarded.port, path, method="HEAD")[0] == 401
    status, answer = get(guarded.port, path, token=TOKEN)
    assert status == 200
    assert (b'"machine_name": "hostA"' if path == "/status" else b"corda_ha_") in answer


def test_other_schemes_are_refused(guarded: HealthServer) -> None:
    basic = raw(guarded.port, b"GET /status HTTP/1.0\r\nAuthorization: Basic "
                              b"dXNlcjowMTIzNDU2Nzg5YWJjZGVm\r\n\r\n")
    assert status_of(basic) == 401
    assert status_of(raw(guarded.port, f"GET /status HTTP/1.0\r\nAuthorization: "
                                       f"{TOKEN}\r\n\r\n".encode())) == 401


def test_authorized() -> None:
    assert authorized(f"Bearer {TOKEN}", TOKEN)
    assert authorized(f"bearer  {TOKEN} ", TOKEN)
    for header in (None, "", "Bearer", f"Basic {TOKEN}", f"Bearer {TOKEN[:-1]}",
                   f"Bearer {TOKEN}x", TOKEN):
        assert not authorized(header, TOKEN), header


def test_the_token_is_never_logged(guarded: HealthServer,
                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    get(guarded.port, "/status", token=TOKEN)
    get(guarded.port, "/status", token="wrong-token-wrong-token")
    assert caplog.records  # the requests were logged (debug) ...
    assert TOKEN not in caplog.text and "wrong-token" not in caplog.text  # ... not the token


# --------------------------------------------------------------------------- internal address


def test_internal_address_serves_the_internals_alone() -> None:
    with serving(internal=("127.0.0.1", 0)) as srv:
        internal = srv.internal_port
        assert internal is not None and internal not in (0, srv.port)
        for path in ("/status", "/metrics"):
            assert get(srv.port, path)[0] == 404, path
            assert get(internal, path)[0] == 200, path
        for path in ("/health", "/readiness", "/liveness"):
            assert get(srv.port, path)[0] == 200, path
            assert get(internal, path)[0] == 200, path
        assert get(internal, "/nope")[0] == 404


def test_internal_address_with_a_token() -> None:
    with serving(internal=("127.0.0.1", 0), token=TOKEN) as srv:
        port = srv.internal_port
        assert port is not None
        assert get(port, "/status")[0] == 401
        assert get(port, "/status", token=TOKEN)[0] == 200
        assert get(srv.port, "/status", token=TOKEN)[0] == 404
        assert get(port, "/health")[0] == 200


def test_an_internal_port_in_use_fails_start_and_leaves_nothing_listening() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            main_port = probe.getsockname()[1]
        srv = HealthServer("127.0.0.1", main_port, liveness_timeout=5.0,
                           internal=("127.0.0.1", taken.getsockname()[1]))
        with pytest.raises(OSError):
            srv.start()
        with socket.socket() as again:  # the main port was released
            again.bind(("127.0.0.1", main_port))
        srv.stop()


# --------------------------------------------------------------------------- bounded serving


def test_unknown_paths_are_404(server: HealthServer) -> None:
    for path in ("/", "/nope", "/status/../etc/passwd", "/health/x", "/./health"):
        assert get(server.port, path)[0] == 404, path


def test_a_request_line_over_the_limit_is_414(server: HealthServer) -> None:
    answer = raw(server.port, b"GET /" + b"a" * 10_000 + b" HTTP/1.0\r\n\r\n")
    assert status_of(answer) == 414
    assert get(server.port, "/health")[0] == 200


@pytest.mark.parametrize("headers", [
    b"X-Big: " + b"a" * 20_000 + b"\r\n",  # one huge header
    b"".join(b"X-%d: %s\r\n" % (i, b"b" * 100) for i in range(200)),  # many of them
])
def test_headers_over_the_limit_are_431(server: HealthServer, headers: bytes) -> None:
    answer = raw(server.port, b"GET /health HTTP/1.0\r\n" + headers + b"\r\n")
    assert status_of(answer) == 431
    assert get(server.port, "/health")[0] == 200


@pytest.mark.parametrize("header", [b"Content-Length: 5", b"Transfer-Encoding: chunked"])
def test_bodies_are_refused(server: HealthServer, header: bytes) -> None:
    answer = raw(server.port, b"GET /health HTTP/1.0\r\n" + header + b"\r\n\r\nhello")
    assert status_of(answer) == 413


def test_other_methods_are_501(server: HealthServer) -> None:
    assert get(server.port, "/health", method="POST")[0] == 501
    assert get(server.port, "/health", method="DELETE")[0] == 501


def test_a_slow_client_is_cut_off_while_health_answers(server: HealthServer) -> None:
    """Headers trickled in a byte every 0.1 s: each recv is quick, but the whole request
    must have arrived 1 s (request_timeout here) after accept. /health answers meanwhile."""
    request = b"GET /health HTTP/1.0\r\nX-Slow: " + b"s" * 100 + b"\r\n\r\n"
    outcome: dict[str, float | bytes] = {}

    def trickle() -> None:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            started = time.monotonic()
            try:
                for byte in request:
                    sock.sendall(bytes([byte]))
                    time.sleep(0.1)  # the client's pace, not synchronisation
            except OSError:
                pass  # cut off while sending
            outcome["answer"] = read_all(sock)
            outcome["after"] = time.monotonic() - started

    slow = threading.Thread(target=trickle, daemon=True)
    slow.start()
    answered = 0
    while slow.is_alive():
        assert get(server.port, "/health")[0] == 200
        answered += 1
        slow.join(0.05)
    assert answered > 5
    print(f"slow client cut off after {outcome['after']:.2f} s; /health answered {answered} "
          "times meanwhile")
    assert outcome["answer"] == b""  # closed, no answer
    assert 0.9 <= float(outcome["after"]) < 1.0 + 0.2 + 1.0  # + one trickle step + slack


def test_a_client_that_sends_nothing_is_cut_off(server: HealthServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        started = time.monotonic()
        assert read_all(sock) == b""
        took = time.monotonic() - started
    assert 0.9 <= took < 2.0


def test_the_default_limits() -> None:
    limits = Limits()
    assert limits.request_timeout == 5.0 and limits.write_timeout == 5.0
    assert limits.max_connections == 32
    assert limits.max_request_line <= 8192 and limits.max_header_bytes <= 16384


def test_connections_over_the_cap_get_503_and_the_server_recovers() -> None:
    with serving(limits=Limits(max_connections=4, request_timeout=20.0)) as srv:
        idle = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(4)]
        try:
            # the four hold every slot (accepted in order, before the fifth)
            answer = raw(srv.port, b"")
            assert status_of(answer) == 503 and b"Retry-After: 1\r\n" in answer
        finally:
            for sock in idle:
                sock.close()
        wait_until(lambda: get(srv.port, "/health")[0] == 200, 5,
                   message="/health answers again once the idle clients left")


def test_a_flood_of_connections_costs_bounded_threads_and_never_stalls_the_loop() -> None:
    """200 connections at once, half of them idle: every client gets an answer or is
    closed promptly, the handler threads stay under the cap, and an asyncio loop in this
    process keeps turning."""
    cap = 8
    with serving(limits=Limits(max_connections=cap, request_timeout=1.0)) as srv:
        peak = 0

        def handlers() -> int:
            return sum("process_request_thread" in t.name for t in threading.enumerate())

        async def flood() -> tuple[list[int | None], float]:
            nonlocal peak
            worst, last, done = 0.0, time.monotonic(), False

            async def ticker() -> None:
                nonlocal worst, last, peak
                while not done:
                    await asyncio.sleep(0.01)
                    now = time.monotonic()
                    worst, last = max(worst, now - last), now
                    srv.update(view())  # as the supervisor's loop does
                    peak = max(peak, handlers())

            def client(i: int) -> int | None:
                try:
                    answer = raw(srv.port, b"" if i % 2 else b"GET /health HTTP/1.0\r\n\r\n")
                except OSError:
                    return None
                return status_of(answer) if answer else 0

            asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(64))
            task = asyncio.create_task(ticker())
            statuses = await asyncio.gather(*(asyncio.to_thread(client, i)
                                              for i in range(200)))
            done = True
            await task
            return statuses, worst

        statuses, worst = run(flood())
        counts = {s: statuses.count(s) for s in set(statuses)}
        print(f"flood: answers {counts}; peak handler threads {peak}; worst loop gap "
              f"{worst * 1000:.0f} ms")
        assert set(statuses) <= {200, 503, 0, None}
        assert counts.get(200, 0) > 0 and counts.get(503, 0) > 0
        assert 0 < peak <= cap
        assert worst < 1.0  # far under the 5 s after which /liveness would fail
        srv.update(view())
        wait_until(lambda: get(srv.port, "/health")[0] == 200, 5)
