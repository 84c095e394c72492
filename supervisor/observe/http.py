"""The HTTP endpoint: `/health`, `/status`, `/liveness`, `/metrics`.

Contract: serving HTTP never blocks the supervisor's asyncio loop. The server
runs in daemon threads (`supervisor.observe.server.BoundedServer`: at most 32
connections, each cut off 5 s after accept if its request has not arrived, bodies
and oversized heads refused) and only ever reads an immutable
`StatusView` that the loop replaces with `HealthServer.update()` (a single
reference assignment, atomic under the GIL). No lock is shared with the loop;
the only other shared state is the prometheus registry, whose metrics are
thread-safe.

The loop's age is the time since the last `update()` (by `last_loop_turn`, on
the daemon's clock, `supervisor.clock`; before the first `update()` the server's
start counts as the last turn). The loop is stale when its age is
`liveness_timeout` seconds or more: the view is then out of date and the
supervisor may have stalled.

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

`/health`, `/readiness` and `/liveness` are always open (the load balancer's).
`/status` and `/metrics` show internals: with a token they need
`Authorization: Bearer <token>` (else 401), and with an internal address they are
served only there (404 on the main one).
"""

from __future__ import annotations

import hmac
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus

import prometheus_client
from prometheus_client import CollectorRegistry

from supervisor import clock
from supervisor.observe.server import JSON, BoundedServer, Limits, Reply


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
    last_loop_turn: float  # `supervisor.clock.now()` of the loop's last turn
    extra: Mapping[str, object] = field(default_factory=dict)  # restarts, renewal age, ...
    node_ready: bool = True  # passed node.readiness (always true without one)

    @property
    def healthy(self) -> bool:
        """True when a load balancer should send traffic to this host: it holds the
        lease (or the lease is off) and its node runs and is ready."""
        if self.lease_enabled:
            return self.lease_held and self.node_running and self.node_ready
        return self.node_running and self.node_ready


def _json(status: int, obj: Mapping[str, object],
          headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    return Reply(status, JSON, (json.dumps(obj, default=str) + "\n").encode(), headers)


PROBES = ("/health", "/readiness", "/liveness")  # always open: the load balancer's
INTERNALS = ("/status", "/metrics")  # may need the token, or the internal address
_REALM = 'Bearer realm="corda-ha-supervisor"'


def authorized(header: str | None, token: str) -> bool:
    """True when `header` is `Bearer <token>` (scheme case-insensitive); the token is
    compared in constant time (`hmac.compare_digest`)."""
    if header is None:
        return False
    scheme, _, given = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


class AddressUnavailable(OSError):
    """A bind that failed, with the address it was for: `internal` for the internal
    listener (`health.internalHost`/`internalPort`), else the main one."""

    def __init__(self, error: OSError, address: tuple[str, int], *, internal: bool) -> None:
        super().__init__(error.errno, error.strerror or str(error))
        self.address = address
        self.internal = internal


class HealthServer:
    """HTTP endpoint on `host:port` (port 0: any free port, see `port`).

    `liveness_timeout`: seconds without a loop turn after which the loop is
    stale: `/liveness` and `/health` fail. `registry`: what `/metrics` serves
    (default: prometheus_client's global registry). `token`: when set, `/status`
    and `/metrics` answer 401 (with `WWW-Authenticate: Bearer`) unless the request
    carries `Authorization: Bearer <token>`. `internal`: when set, `/status` and
    `/metrics` are served only on that second (host, port) (port 0: any free one,
    see `internal_port`), and are 404 on `host:port`; every path is served there.
    `limits`: what one connection may cost (see `supervisor.observe.server`). `start()`
    binds and serves in daemon threads, raising OSError if an address cannot be
    bound (nothing is left listening then); `stop()` returns within about a second
    and is idempotent.
    """

    def __init__(self, host: str, port: int, *, liveness_timeout: float,
                 registry: CollectorRegistry | None = None, token: str | None = None,
                 internal: tuple[str, int] | None = None,
                 limits: Limits | None = None) -> None:
        self._host = host
        self._port = port
        self._liveness_timeout = liveness_timeout
        self._registry = prometheus_client.REGISTRY if registry is None else registry
        self._token = token
        self._internal = internal
        self._limits = Limits() if limits is None else limits
        self._view: StatusView | None = None
        self._created = clock.now()
        self._servers: list[tuple[BoundedServer, threading.Thread]] = []

    @property
    def port(self) -> int:
        """The bound port once started (useful with port 0), else the configured one."""
        if self._servers:
            return int(self._servers[0][0].server_address[1])
        return self._port

    @property
    def internal_port(self) -> int | None:
        """The internal address's bound port once started, else the configured one
        (None without an internal address)."""
        if self._internal is None:
            return None
        if len(self._servers) > 1:
            return int(self._servers[1][0].server_address[1])
        return self._internal[1]

    def update(self, view: StatusView) -> None:
        """Publish a new snapshot (atomic reference swap; cheap, call every turn)."""
        self._view = view

    def start(self) -> None:
        """Bind and start serving in daemon threads. Raises `AddressUnavailable` (an
        OSError naming the address) when a bind fails; nothing stays bound."""
        if self._servers:
            return
        addresses = [((self._host, self._port), self._internal is None)]
        if self._internal is not None:
            addresses.append((self._internal, True))
        servers: list[BoundedServer] = []
        for index, (address, internals) in enumerate(addresses):
            try:
                servers.append(BoundedServer(address, self._router(internals), self._limits))
            except OSError as e:
                for server in servers:
                    server.server_close()
                raise AddressUnavailable(e, address, internal=index == 1) from e
        self._created = clock.now()
        for server in servers:
            thread = threading.Thread(target=server.serve_forever,
                                      kwargs={"poll_interval": 0.1},
                                      name="health-http", daemon=True)
            self._servers.append((server, thread))
            thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Stop serving and close the sockets; waits at most about `timeout` seconds."""
        servers, self._servers = self._servers, []
        stoppers = []
        for server, _ in servers:
            # shutdown() waits for serve_forever to notice; bound that wait.
            stopper = threading.Thread(target=server.shutdown, name="health-http-stop",
                                       daemon=True)
            stopper.start()
            stoppers.append(stopper)
        deadline = time.monotonic() + timeout
        for stopper in stoppers:
            stopper.join(max(0.0, deadline - time.monotonic()))
        for server, thread in servers:
            thread.join(max(0.0, min(timeout / 2, deadline - time.monotonic())))
            server.server_close()

    # -- rendering (runs in handler threads) -----------------------------

    def _router(self, internals: bool) -> Callable[[str, str | None], Reply]:
        """The route of one listener: with `internals` false, /status and /metrics are 404."""
        def route(path: str, authorization: str | None) -> Reply:
            if path in INTERNALS:
                if not internals:
                    return _json(HTTPStatus.NOT_FOUND, {"error": "not found", "path": path})
                if self._token is not None and not authorized(authorization, self._token):
                    challenge = _REALM if authorization is None else \
                        _REALM + ', error="invalid_token"'
                    return _json(HTTPStatus.UNAUTHORIZED, {"error": "unauthorized"},
                                 (("WWW-Authenticate", challenge),))
            return self._render(path)
        return route

    def _render(self, path: str) -> Reply:
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
            return Reply(HTTPStatus.OK, prometheus_client.CONTENT_TYPE_LATEST,
                         prometheus_client.generate_latest(self._registry))
        return _json(HTTPStatus.NOT_FOUND, {"error": "not found", "path": path})

    def _loop_age(self, view: StatusView | None) -> tuple[float, bool]:
        """(age in seconds, stale) of the loop as of `view`."""
        last = self._created if view is None else view.last_loop_turn
        age = max(0.0, clock.now() - last)
        return age, age >= self._liveness_timeout

    def _health(self, view: StatusView | None) -> Reply:
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

    def _status(self, view: StatusView | None) -> Reply:
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

    def _readiness(self, view: StatusView | None) -> Reply:
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

    def _liveness(self, view: StatusView | None) -> Reply:
        age, stale = self._loop_age(view)
        return _json(HTTPStatus.SERVICE_UNAVAILABLE if stale else HTTPStatus.OK,
                     {"alive": not stale, "loop_age_seconds": round(age, 3),
                      "timeout_seconds": self._liveness_timeout})
