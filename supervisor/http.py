"""The HTTP endpoint: `/health`, `/status`, `/liveness`, `/metrics`.

Contract: serving HTTP never blocks the supervisor's asyncio loop. The server
runs in daemon threads (`ThreadingHTTPServer`) and only ever reads an immutable
`StatusView` that the loop replaces with `HealthServer.update()` (a single
reference assignment, atomic under the GIL). No lock is shared with the loop;
the only other shared state is the prometheus registry, whose metrics are
thread-safe.

The loop's age is the time since the last `update()` (by `last_loop_turn`,
monotonic; before the first `update()` the server's start counts as the last
turn). The loop is stale when its age is `liveness_timeout` seconds or more:
the view is then out of date and the supervisor may have stalled.

- `GET /health`: 200 when this host should receive traffic, i.e. it holds the
  lease and its node runs (or, with the lease disabled, the node runs) and the
  loop is not stale; else 503 (so a load balancer stops routing to a host
  whose supervisor stalled). The body has `healthy`, `state`, `epoch`,
  `lease_held`, `node_running`, `loop_age_seconds`, `loop_stale`.
- `GET /status`: 200 with a JSON object (state, machine_name, holder, epoch,
  node_pid, lease_held, node_running, lease_enabled, healthy (as `/health`),
  loop_age_seconds, loop_stale, extra fields); 503 before the first `update()`.
- `GET /readiness`: 200 when this host could run the node now: the holder with its
  node up, or a standby that reaches the database and is in the contest
  (`extra["can_take_over"]`); 503 otherwise (cut off, cooling down, misconfigured,
  stale loop); body `ready`, `reason`, `state`.
- `GET /liveness`: 200 while the loop is not stale, else 503 (a hung loop);
  body `alive`, `loop_age_seconds`, `timeout_seconds`.
- `GET /metrics`: prometheus text format from the registry.
- `HEAD` on each of them: same status and headers, no body. Other paths: 404.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry

_log = logging.getLogger(__name__)

_JSON = "application/json"


@dataclass(frozen=True)
class StatusView:
    """What the loop knows, as of its last turn. Never mutated; replaced whole."""

    state: str
    machine_name: str
    holder: str | None
    epoch: int | None
    node_pid: int | None
    lease_held: bool
    node_running: bool
    lease_enabled: bool
    last_loop_turn: float  # time.monotonic() of the loop's last turn
    extra: Mapping[str, object] = field(default_factory=dict)  # restarts, renewal age, ...
    node_ready: bool = True  # passed node.readiness (always true without one)

    @property
    def healthy(self) -> bool:
        """True when a load balancer should send traffic to this host: it holds the
        lease (or the lease is off) and its node runs and is ready."""
        if self.lease_enabled:
            return self.lease_held and self.node_running and self.node_ready
        return self.node_running and self.node_ready


class _Server(ThreadingHTTPServer):
    """`host` may be IPv4 or IPv6 ("::" listens on both where the OS allows)."""

    daemon_threads = True  # a stuck client never holds up shutdown
    allow_reuse_address = True
    owner: HealthServer

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily) -> None:
        self.address_family = family  # read by TCPServer.__init__
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 5.0  # per-connection socket timeout: slow clients cannot pin a thread
    protocol_version = "HTTP/1.0"
    server_version = "corda-ha-supervisor"
    sys_version = ""

    def do_GET(self) -> None:
        self._respond(head=False)

    def do_HEAD(self) -> None:
        self._respond(head=True)

    def _respond(self, *, head: bool) -> None:
        try:
            path = self.path.split("?", 1)[0]
            status, ctype, body = self.server.owner._render(path)
        except Exception:
            _log.exception("http handler failed for %s", self.path)
            status, ctype, body = (HTTPStatus.INTERNAL_SERVER_ERROR, _JSON,
                                   b'{"error": "internal"}\n')
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if not head:
                self.wfile.write(body)
        except OSError:
            pass  # client went away

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("http %s " + format, self.client_address[0], *args)


def _json(status: int, obj: Mapping[str, object]) -> tuple[int, str, bytes]:
    return status, _JSON, (json.dumps(obj, default=str) + "\n").encode()


class HealthServer:
    """HTTP endpoint on `host:port` (port 0: any free port, see `port`).

    `liveness_timeout`: seconds without a loop turn after which the loop is
    stale: `/liveness` and `/health` fail. `registry`: what `/metrics` serves
    (default: prometheus_client's global registry). `start()` binds and serves
    in a daemon thread, raising OSError if the address cannot be bound; `stop()`
    returns within about a second and is idempotent.
    """

    def __init__(self, host: str, port: int, *, liveness_timeout: float,
                 registry: CollectorRegistry | None = None) -> None:
        self._host = host
        self._port = port
        self._liveness_timeout = liveness_timeout
        self._registry = prometheus_client.REGISTRY if registry is None else registry
        self._view: StatusView | None = None
        self._created = time.monotonic()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port once started (useful with port 0), else the configured one."""
        server = self._server
        if server is not None:
            return int(server.server_address[1])
        return self._port

    def update(self, view: StatusView) -> None:
        """Publish a new snapshot (atomic reference swap; cheap, call every turn)."""
        self._view = view

    def start(self) -> None:
        """Bind and start serving in a daemon thread. Raises OSError when the bind fails."""
        if self._server is not None:
            return
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        server = _Server((self._host, self._port), family)
        server.owner = self
        self._created = time.monotonic()
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                  name="health-http", daemon=True)
        self._server = server
        self._thread = thread
        thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Stop serving and close the socket; waits at most about `timeout` seconds."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._server = None
        self._thread = None
        # shutdown() waits for serve_forever to notice; bound that wait.
        stopper = threading.Thread(target=server.shutdown, name="health-http-stop", daemon=True)
        stopper.start()
        stopper.join(timeout)
        thread.join(max(0.0, timeout / 2))
        server.server_close()

    # -- rendering (runs in handler threads) -----------------------------

    def _render(self, path: str) -> tuple[int, str, bytes]:
        view = self._view  # one read: everything below uses the same snapshot
        if path == "/health":
            return self._health(view)
        if path == "/status":
            return self._status(view)
        if path == "/liveness":
            return self._liveness(view)
        if path == "/readiness":
            return self._readiness(view)
        if path == "/metrics":
            return (HTTPStatus.OK, prometheus_client.CONTENT_TYPE_LATEST,
                    prometheus_client.generate_latest(self._registry))
        return _json(HTTPStatus.NOT_FOUND, {"error": "not found", "path": path})

    def _loop_age(self, view: StatusView | None) -> tuple[float, bool]:
        """(age in seconds, stale) of the loop as of `view`."""
        last = self._created if view is None else view.last_loop_turn
        age = max(0.0, time.monotonic() - last)
        return age, age >= self._liveness_timeout

    def _health(self, view: StatusView | None) -> tuple[int, str, bytes]:
        age, stale = self._loop_age(view)
        if view is None:
            return _json(HTTPStatus.SERVICE_UNAVAILABLE,
                         {"healthy": False, "state": "starting",
                          "loop_age_seconds": round(age, 3), "loop_stale": stale})
        healthy = view.healthy and not stale
        body = {"healthy": healthy, "state": view.state, "epoch": view.epoch,
                "lease_held": view.lease_held, "node_running": view.node_running,
                "ready": view.node_ready,
                "loop_age_seconds": round(age, 3), "loop_stale": stale}
        return _json(HTTPStatus.OK if healthy else HTTPStatus.SERVICE_UNAVAILABLE, body)

    def _status(self, view: StatusView | None) -> tuple[int, str, bytes]:
        if view is None:
            return _json(HTTPStatus.SERVICE_UNAVAILABLE, {"state": "starting"})
        age, stale = self._loop_age(view)
        body: dict[str, object] = dict(view.extra)
        body.update(
            state=view.state,
            machine_name=view.machine_name,
            holder=view.holder,
            epoch=view.epoch,
            node_pid=view.node_pid,
            lease_held=view.lease_held,
            node_running=view.node_running,
            ready=view.node_ready,
            lease_enabled=view.lease_enabled,
            healthy=view.healthy and not stale,
            loop_age_seconds=round(age, 3),
            loop_stale=stale,
        )
        return _json(HTTPStatus.OK, body)

    def _readiness(self, view: StatusView | None) -> tuple[int, str, bytes]:
        age, stale = self._loop_age(view)
        if view is None:
            ready, reason, state = False, "starting", "starting"
        elif stale:
            ready, reason, state = False, f"loop stale for {age:.1f} s", view.state
        elif view.healthy:
            ready, reason, state = True, "holds the lease, node running", view.state
        else:
            ready = view.extra.get("can_take_over") is True
            reason = str(view.extra.get("can_take_over_reason") or
                         ("node not running" if not view.lease_enabled else view.state))
            state = view.state
        paused = bool(view is not None and view.extra.get("paused"))
        return _json(HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE,
                     {"ready": ready, "reason": reason, "state": state, "paused": paused,
                      "loop_age_seconds": round(age, 3)})

    def _liveness(self, view: StatusView | None) -> tuple[int, str, bytes]:
        age, stale = self._loop_age(view)
        return _json(HTTPStatus.SERVICE_UNAVAILABLE if stale else HTTPStatus.OK,
                     {"alive": not stale, "loop_age_seconds": round(age, 3),
                      "timeout_seconds": self._liveness_timeout})
