"""A throwaway PostgreSQL cluster for the test suite.

`PgServer.from_environment()` uses `CORDA_HA_TEST_DSN` when it is set (an existing
database; `stop`/`start`/`restart` are then unavailable, see `can_restart`).
Otherwise it runs `initdb` and `pg_ctl` from the system's PostgreSQL binaries
(`apt-get install postgresql`) on a free TCP port of 127.0.0.1, with trust
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
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

ENV_DSN = "CORDA_HA_TEST_DSN"
ENV_BINDIR = "CORDA_HA_PG_BINDIR"
INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found. "
    "Install them (Debian/Ubuntu: `apt-get install postgresql`), point "
    f"{ENV_BINDIR} at their directory, or set {ENV_DSN} to a libpq URI of a "
    "database the tests may use."
)

StopMode = Literal["smart", "fast", "immediate"]


class PgServerError(RuntimeError):
    """The throwaway server could not be set up or controlled."""


def find_bindir() -> str | None:
    """Directory holding `initdb` and `pg_ctl`, or None."""

    def ok(d: str | None) -> bool:
        return bool(d) and all(
            os.access(os.path.join(d or "", b), os.X_OK) for b in ("initdb", "pg_ctl", "postgres")
        )

    candidates: list[str | None] = [os.environ.get(ENV_BINDIR)]
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            candidates.append(
                subprocess.run(
                    [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
                ).stdout.strip()
            )

    def version_key(path: str) -> tuple[int, str]:
        part = path.split(os.sep)[-2]
        return (int(part), path) if part.isdigit() else (0, path)

    versioned: list[str] = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=version_key, reverse=True
    )
    candidates += versioned
    candidates += sorted(glob.glob("/usr/pgsql-*/bin"), reverse=True)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(os.path.dirname(initdb))
    for c in candidates:
        if ok(c):
            return c
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


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
        stale.destroy()


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
            return server
        bindir = find_bindir()
        if bindir is None:
            raise PgServerError(INSTALL_HINT)
        return cls.create(bindir)

    @classmethod
    def create(cls, bindir: str, env: Mapping[str, str] | None = None) -> PgServer:
        """initdb + start a cluster in a new temporary directory.

        `env`: extra environment for the server programs (initdb, pg_ctl, postgres).
        """
        run_as: str | None = None
        if os.geteuid() == 0:
            run_as = "postgres"
            try:
                pw = pwd.getpwnam(run_as)
            except KeyError:
                raise PgServerError(
                    "running as root, but there is no `postgres` user to run the server as "
                    "(installing the `postgresql` package creates it)"
                ) from None
            if shutil.which("runuser") is None:
                raise PgServerError("running as root, but `runuser` (util-linux) is missing")
        sweep_stale(bindir, run_as)
        basedir = tempfile.mkdtemp(prefix=_PREFIX)
        with open(os.path.join(basedir, "owner.pid"), "w") as f:
            f.write(str(os.getpid()))
        if run_as is not None:
            os.chown(basedir, pw.pw_uid, pw.pw_gid)
        port = free_port()
        server = cls(
            f"postgresql://postgres@127.0.0.1:{port}/postgres",
            bindir=bindir, basedir=basedir, run_as=run_as, env=env,
        )
        atexit.register(server.destroy)
        try:
            server._initdb()
            server.start()
            server.execute(f"CREATE ROLE {cls.password_user} LOGIN PASSWORD '{cls.password}'")
            server.execute(f"GRANT CREATE ON DATABASE postgres TO {cls.password_user}")
        except BaseException:
            server.destroy()
            raise
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

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run one statement as the superuser (autocommit); rows or []."""
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=10) as conn:
            cur = conn.execute(sql.encode(), params)
            return list(cur.fetchall()) if cur.description is not None else []

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

    def _initdb(self) -> None:
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
            )
        with open(os.path.join(self.datadir, "pg_hba.conf"), "w") as f:
            f.write(
                "local all all trust\n"
                f"host all {self.password_user} 127.0.0.1/32 scram-sha-256\n"
                "host all all 127.0.0.1/32 trust\n"
            )

    def _log_tail(self, n: int = 30) -> str:
        if self._basedir is None:
            return ""
        try:
            with open(os.path.join(self._basedir, "postgres.log"), errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""
