"""Debian's haproxy in front of test backends: start, ask which backend answers, reap.

`HaProxy(workdir, backends)` writes a config (the shape of config/haproxy.cfg: a TCP
frontend for P2P and, when every backend has one, for RPC; per backend host one server
line checked by ``GET /health`` on that host's health port, ``http-check expect status
200``, ``on-marked-down shutdown-sessions``) on free ports of 127.0.0.1 and runs
``haproxy -db -f <cfg>`` in its own process group. `start()` returns once the frontend
accepts connections and the first health check of every server is done (so the
servers' states are haproxy's real view, not its optimistic start-up state). `close()`
(and the context manager's exit) SIGKILLs the group and waits for it; pass a `Reaper`
to have the test's teardown do it too.

`which()` connects to the frontend and returns what the backend answered (the JVM stand-in
and `NameServer` answer with their machine name and close), or None when haproxy closed
the connection without an answer (no server up). `wait_for(name, timeout)` polls
`which()` until it returns `name` and returns the time that took (measured, not slept).
`server_states()` reads haproxy's own view (``show stat`` on its admin socket).

`NameServer` (a TCP server answering its name) and `HealthServer` (``GET /health`` with a
status the test flips between 200 and 503) are trivial backends for tests of the
harness itself.

Check timing: every server is checked every `inter_ms` (also while down or changing),
and `fall`/`rise` consecutive results change its state, so a change in /health reaches
haproxy's routing within about fall (or rise) x inter_ms plus one check's duration.
"""

from __future__ import annotations

import contextlib
import csv
import http.server
import io
import socket
import socketserver
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness import needs
from tests.harness.pgserver import free_port
from tests.harness.proc import Reaper, kill_session, wait_until


def missing() -> str | None:
    """Why haproxy cannot run here, or None."""
    return needs.missing("haproxy", "a real load balancer in front of the test backends")


def require() -> None:
    """Skip the calling test, with the reason, when haproxy is not installed."""
    reason = missing()
    if reason is not None:
        pytest.skip(reason)


@dataclass(frozen=True)
class Backend:
    """One host behind the load balancer: its node's ports and its supervisor's health port."""

    name: str
    port: int  # P2P
    health_port: int
    rpc_port: int | None = None
    host: str = "127.0.0.1"


def render_config(backends: list[Backend], *, p2p_port: int, rpc_port: int | None,
                  admin_socket: Path, inter_ms: int = 100, fall: int = 1,
                  rise: int = 1, check_timeout_ms: int = 500) -> str:
    """The haproxy config for the harness (see config/haproxy.cfg for the annotated one)."""
    servers = "".join(
        f"    server {b.name} {b.host}:{b.port} check port {b.health_port}\n" for b in backends)
    rpc_servers = "".join(
        f"    server {b.name} {b.host}:{b.rpc_port} check port {b.health_port}\n"
        for b in backends)
    text = f"""global
    maxconn 512
    stats socket {admin_socket} mode 600 level admin

defaults
    mode tcp
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    timeout check {check_timeout_ms}ms
    retries 1
    option redispatch
    default-server inter {inter_ms}ms fastinter {inter_ms}ms downinter {inter_ms}ms \
rise {rise} fall {fall} on-marked-down shutdown-sessions

frontend p2p
    bind 127.0.0.1:{p2p_port}
    default_backend corda_p2p

backend corda_p2p
    option httpchk GET /health
    http-check expect status 200
{servers}"""
    if rpc_port is not None:
        text += f"""
frontend rpc
    bind 127.0.0.1:{rpc_port}
    default_backend corda_rpc

backend corda_rpc
    option httpchk GET /health
    http-check expect status 200
{rpc_servers}"""
    return text


def ask(host: str, port: int, timeout: float = 2.0) -> str | None:
    """Connect, read until the peer closes; the answer's first line, or None when the
    connection was closed (or reset, or refused) without an answer."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            data = b""
            while True:
                chunk = s.recv(256)
                if not chunk:
                    break
                data += chunk
    except OSError:  # refused, reset, timed out
        return None
    text = data.decode(errors="replace").strip()
    return text.splitlines()[0] if text else None


class HaProxy:
    """A haproxy process for a test; see the module docstring."""

    def __init__(self, workdir: Path, backends: list[Backend], *, inter_ms: int = 100,
                 fall: int = 1, rise: int = 1, reaper: Reaper | None = None) -> None:
        self.workdir = workdir
        self.backends = backends
        self.inter_ms = inter_ms
        self.fall = fall
        self.rise = rise
        self.reaper = reaper
        self.p2p_port = free_port()
        self.rpc_port = free_port() if all(b.rpc_port for b in backends) else None
        self.config_path = workdir / "haproxy.cfg"
        self.admin_socket = workdir / "haproxy.sock"
        self.log_path = workdir / "haproxy.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def render(self) -> str:
        """The config text (a subclass in front of other backends renders its own)."""
        return render_config(
            self.backends, p2p_port=self.p2p_port, rpc_port=self.rpc_port,
            admin_socket=self.admin_socket, inter_ms=self.inter_ms, fall=self.fall,
            rise=self.rise)

    def start(self, timeout: float = 15.0) -> HaProxy:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.render())
        args = ["haproxy", "-db", "-f", str(self.config_path)]
        with open(self.log_path, "ab") as log:
            if self.reaper is not None:
                self.proc = self.reaper.popen(args, stdin=subprocess.DEVNULL, stdout=log,
                                              stderr=subprocess.STDOUT)
            else:
                self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log,
                                             stderr=subprocess.STDOUT, start_new_session=True)

        def checked() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"haproxy exited {self.proc.returncode}:\n{self.log()}")
            try:
                stats = self.stats()
            except OSError:
                return False
            # every server has had its first check (no "initial" state left)
            return bool(stats) and all(r.get("check_status", "").lstrip("* ") not in ("", "INI")
                                       for r in stats if r["svname"] not in
                                       ("FRONTEND", "BACKEND"))

        try:
            wait_until(checked, timeout, interval=0.02, message="haproxy up and checked")
        except BaseException:
            self.close()
            raise
        return self

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")
        return ""

    def close(self) -> None:
        """SIGKILL haproxy's process group and wait for it. Idempotent."""
        proc = self.proc
        if proc is None:
            return
        kill_session(proc)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)

    def __enter__(self) -> HaProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- haproxy's own view -------------------------------------------------------------

    def command(self, line: str, timeout: float = 2.0) -> str:
        """One command on the admin socket; its answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(self.admin_socket))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def stats(self) -> list[dict[str, Any]]:
        """`show stat` as dicts (pxname, svname, status, check_status, ...)."""
        text = self.command("show stat")
        if text.startswith("# "):
            text = text[2:]
        return list(csv.DictReader(io.StringIO(text)))

    def server_states(self, backend: str = "corda_p2p") -> dict[str, str]:
        """Server name -> status ("UP", "DOWN", "UP 1/2", ...) in `backend`."""
        return {r["svname"]: r["status"] for r in self.stats()
                if r["pxname"] == backend and r["svname"] not in ("FRONTEND", "BACKEND")}

    # -- what a client sees ---------------------------------------------------------------

    def which(self, frontend: str = "p2p", timeout: float = 2.0) -> str | None:
        """The name of the backend that answers a new connection to `frontend`, or None."""
        port = self.p2p_port if frontend == "p2p" else self.rpc_port
        assert port is not None, f"no {frontend} frontend"
        return ask("127.0.0.1", port, timeout)

    def wait_for(self, name: str | None, timeout: float, frontend: str = "p2p",
                 interval: float = 0.005) -> float:
        """Poll `which()` until it answers `name`; the seconds that took. AssertionError
        (with the last answer and haproxy's view) after `timeout`."""
        t0 = time.monotonic()
        last: str | None = "<never asked>"
        while True:
            last = self.which(frontend, timeout=min(2.0, max(0.2, timeout)))
            elapsed = time.monotonic() - t0
            if last == name:
                return elapsed
            if elapsed >= timeout:
                raise AssertionError(f"haproxy {frontend}: no answer from {name!r} within "
                                     f"{timeout:.2f}s (last: {last!r}; states: "
                                     f"{self.server_states()})")
            time.sleep(interval)


# -- trivial backends for the harness's own tests ------------------------------------------


class _QuietErrors:
    """Mixin: a peer that resets the connection (haproxy ends its checks with a RST
    once it has the status line) is not an error worth a traceback."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class _TCPServer(_QuietErrors, socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


class _HTTPServer(_QuietErrors, http.server.ThreadingHTTPServer):
    daemon_threads = True


class NameServer:
    """A TCP server on 127.0.0.1 that answers every connection with "<name>\\n" and closes
    it (like the JVM stand-in's P2P port). Runs in a daemon thread until `close()`."""

    def __init__(self, name: str, port: int = 0) -> None:
        answer = (name + "\n").encode()

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.sendall(answer)

        self.server = _TCPServer(("127.0.0.1", port), Handler)
        self.port: int = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class HealthServer:
    """``GET /health`` on 127.0.0.1 answering `status` (set it: 200 or 503). Daemon thread."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.checks = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.checks += 1
                code = owner.status if self.path == "/health" else 404
                body = b"ok\n" if code == 200 else b"no\n"
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = _HTTPServer(("127.0.0.1", 0), Handler)
        self.port: int = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
