"""TLS to the lease database: a verification failure is a configuration error (exit 78),
never waited out. A PostgreSQL server of its own with `ssl = on` that admits TCP
clients only over TLS (`hostssl`), and a throwaway CA made with the `openssl` CLI.
`sslmode=verify-full` with `sslrootcert` works, and the supervisor's connections really
are TLS; a wrong CA, a host name the certificate does not carry, or a plain connection
exits 78 at start with a message naming the TLS problem (no traceback, no password); a
missing CA file is named by `check-config`; a server that drops the connection
mid-handshake is waited out, not exit 78."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from supervisor.config import load_config
from supervisor.lease import LeaseUnavailable
from supervisor.lease.startup import database_config_problem
from tests.harness import needs
from tests.harness.cli import SECRET, assert_clean, run_cli, run_to_exit
from tests.harness.cluster import cluster
from tests.harness.config import startup_config, supervisor_config
from tests.harness.paths import REPO
from tests.harness.pgbin import find_bindir, ssl_missing
from tests.harness.pgserver import ENV_DSN, PgServer
from tests.harness.proc import Reaper, wait_until

pytestmark = pytest.mark.timeout(60)


@dataclass(frozen=True)
class Certs:
    """A CA, the server's certificate (CN localhost; SAN localhost and 127.0.0.1) and
    key signed by it, and a second CA that signed nothing."""

    ca: Path
    other_ca: Path
    server_cert: Path
    server_key: Path


def make_certs(directory: Path) -> Certs:
    """Fresh EC keys and certificates (valid two days) in `directory`."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30,
                       cwd=directory, stdin=subprocess.DEVNULL)

    new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for name in ("ca", "other-ca"):
        openssl("req", "-x509", *new_key, "-keyout", f"{name}.key", "-out", f"{name}.crt",
                "-days", "2", "-subj", f"/CN=corda-ha-supervisor test {name}")
    openssl("req", *new_key, "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=localhost")
    (directory / "server.ext").write_text(
        "subjectAltName = DNS:localhost, IP:127.0.0.1\nbasicConstraints = CA:FALSE\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "server.ext")
    return Certs(directory / "ca.crt", directory / "other-ca.crt", directory / "server.crt",
                 directory / "server.key")


@dataclass(frozen=True)
class TlsDb:
    server: PgServer
    certs: Certs

    def url(self, *, ca: Path | None = None, host: str = "127.0.0.1", extra: str = "",
            user: str = "postgres") -> str:
        """A verify-full URL of the server."""
        return (f"postgresql://{user}@{host}:{self.server.port}/postgres?sslmode=verify-full"
                f"&sslrootcert={ca or self.certs.ca}{extra}")


@pytest.fixture(scope="module")
def tls_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsDb]:
    """Its own TLS-only server (never the session's), destroyed after the module."""
    bindir = find_bindir()
    if bindir is None:
        if os.environ.get(ENV_DSN):
            pytest.skip("needs PostgreSQL server binaries to run a server with ssl = on")
        pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) are needed")
    no_ssl = ssl_missing(bindir)
    if no_ssl is not None:
        pytest.skip(no_ssl)
    needs.program("openssl", "it makes the throwaway CA")
    certs = make_certs(tmp_path_factory.mktemp("tls"))
    server = PgServer.create(bindir, ssl=(str(certs.server_cert), str(certs.server_key)))
    try:
        yield TlsDb(server, certs)
    finally:
        server.destroy()


def config_error(out: str) -> str:
    """The message of the `database_config_error` record in a supervisor's JSON log."""
    for line in out.splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if record.get("event") == "database_config_error":
                return str(record["message"])
    raise AssertionError(f"no database_config_error in:\n{out}")


def test_verify_full_runs_the_node_over_tls(tmp_path: Path, tls_db: TlsDb,
                                            lease_name: str) -> None:
    plain = tls_db.server.dsn + "?sslmode=disable"
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        psycopg.connect(plain, connect_timeout=5).close()
    with cluster(tmp_path, tls_db.url(), lease_name) as c:
        a = c.add("a")
        a.start()
        a.wait_node_up(20)
        rows: list[tuple[object, ...]] = []

        def connected() -> bool:
            rows[:] = tls_db.server.execute(
                "SELECT s.ssl, s.version FROM pg_stat_activity a JOIN pg_stat_ssl s "
                "USING (pid) WHERE a.application_name = 'corda-ha-supervisor/a'")
            return bool(rows)

        wait_until(connected, 10, interval=0.05, message="the supervisor's backends")
        assert all(ssl is True and str(version).startswith("TLS") for ssl, version in rows), rows
    assert a.events("lease_acquired"), "".join(a.raw[-20:])


@pytest.mark.parametrize(("case", "expected"), [
    ("wrong CA", ["certificate verify failed", "does not verify against the CA in sslrootcert"]),
    ("wrong host name", ['does not match host name "db.example.invalid"',
                         "does not name the host that database.url connects to"]),
    ("plain connection", ["pg_hba.conf", "admits this client only over TLS",
                          "sslmode = disable"]),
])
def test_tls_failure_at_start_exits_78_naming_it(tmp_path: Path, tls_db: TlsDb, reaper: Reaper,
                                                 case: str, expected: list[str]) -> None:
    user = PgServer.password_user  # a password login: the password must never be printed
    url = {"wrong CA": tls_db.url(ca=tls_db.certs.other_ca, user=user),
           "wrong host name": tls_db.url(host="db.example.invalid", extra="&hostaddr=127.0.0.1",
                                         user=user),
           "plain connection": f"postgresql://{user}@127.0.0.1:{tls_db.server.port}/postgres"
                               "?sslmode=disable"}[case]
    path = startup_config(tmp_path, url, extra=supervisor_config(database={"password": SECRET}))
    code, out = run_to_exit(reaper, path)
    assert code == 78, out
    message = config_error(out)
    for text in expected:
        assert text in message, message
    if case != "plain connection":
        assert "TLS to the database failed" in message and "sslmode = verify-full" in message
        ca = tls_db.certs.other_ca if case == "wrong CA" else tls_db.certs.ca
        assert f"sslrootcert = {ca}" in message, message
    assert_clean(out)


def test_missing_ca_file_is_named_by_check_config_and_at_start(tmp_path: Path, tls_db: TlsDb,
                                                               reaper: Reaper) -> None:
    missing = tmp_path / "no-such-ca.crt"
    path = startup_config(tmp_path, tls_db.url(ca=missing))
    out = run_cli("check-config", "--config", str(path))
    assert out.returncode == 78, out
    assert "database.url" in out.stderr and f"sslrootcert '{missing}'" in out.stderr, out.stderr
    assert f"{path}:" in out.stderr  # file (and line) named
    code, text = run_to_exit(reaper, path)
    assert code == 78 and str(missing) in text, text
    assert_clean(text)


@contextlib.contextmanager
def tls_then_hang_up() -> Iterator[int]:
    """A TCP port whose server agrees to TLS ('S') and then closes the connection, as a
    database that stops mid-handshake does; its port."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # closed: the test is over
            with conn:
                conn.recv(8)  # SSLRequest
                conn.sendall(b"S")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() (Linux)
        listener.close()
        thread.join(5)
        assert not thread.is_alive()


def test_tls_dropped_mid_handshake_is_waited_out(tmp_path: Path, tls_db: TlsDb,
                                                reaper: Reaper) -> None:
    with tls_then_hang_up() as port:
        path = startup_config(tmp_path,
                              tls_db.url().replace(f":{tls_db.server.port}/", f":{port}/"))
        proc = reaper.popen([sys.executable, "-m", "supervisor", "run", "--config", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=REPO)
        assert proc.stdout is not None
        seen = ""
        for line in proc.stdout:
            seen += line
            if '"lease_call_failed"' in line:
                break
        # the hang-up reads as "SSL error: unexpected eof" or, when it races the
        # client's next write, "SSL SYSCALL error: Connection reset by peer"
        assert "SSL error" in seen or "SSL SYSCALL error" in seen, seen
        assert proc.poll() is None, f"a dropped TLS handshake must be waited out:\n{seen}"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, seen + out


@pytest.mark.parametrize("libpq_text", [
    "SSL error: unexpected eof while reading",
    "SSL SYSCALL error: EOF detected",
    "SSL connection has been closed unexpectedly",
    "server closed the connection unexpectedly",
])
def test_transient_tls_errors_are_not_configuration_problems(tmp_path: Path,
                                                             libpq_text: str) -> None:
    config = load_config(startup_config(tmp_path, "postgresql://db/x?sslmode=verify-full"))
    error = LeaseUnavailable(f"ensure_schema: cannot connect: OperationalError: connection "
                             f'to server at "10.0.0.5", port 5432 failed: {libpq_text}')
    assert database_config_problem(error, config) is None
