"""Shared fixtures. Keep this small: helpers live in their own modules."""

from __future__ import annotations

import compileall
import os
import time
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from supervisor.config import DatabaseConfig
from tests.harness.cluster import Cluster, cluster
from tests.harness.paths import REPO
from tests.harness.pgbin import describe_bindir, find_bindir
from tests.harness.pgserver import ENV_DSN, PgServer, PgServerError

# Hypothesis is derandomised by default, so a CI failure replays exactly: every run
# tries the same examples. HYPOTHESIS_PROFILE=explore draws new random examples (use
# it locally to search; a failure prints the seed to reproduce it).
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_configure(config: pytest.Config) -> None:
    """Compile the package and the harness to bytecode once, before any test: the
    supervisors, guards and stand-in nodes the tests start are new interpreters, and in
    a fresh clone each would otherwise compile the modules it imports while its test's
    clock runs (seconds, on a loaded machine)."""
    for package in ("supervisor", "tests/harness"):
        compileall.compile_dir(str(REPO / package), quiet=1)


def pytest_report_header() -> str:
    """Which PostgreSQL the suite's servers run (docs/testing.md: what a machine needs)."""
    if os.environ.get(ENV_DSN):
        return f"postgresql: the database of {ENV_DSN}"
    bindir = find_bindir()
    return f"postgresql: {describe_bindir(bindir) if bindir else 'none found'}"


@pytest.fixture(scope="session", autouse=True)
def one_clock() -> None:
    """The supervisor's deadlines run on CLOCK_BOOTTIME (supervisor/clock.py); the tests
    compare them with their own `time.monotonic()`. The two are one clock on a machine
    that has not been suspended since it booted; otherwise say so, not fail obscurely."""
    apart = time.clock_gettime(time.CLOCK_BOOTTIME) - time.monotonic()
    if abs(apart) > 0.05:
        pytest.fail(f"CLOCK_BOOTTIME is {apart:.3f} s ahead of CLOCK_MONOTONIC here (this "
                    "machine was suspended since boot): the tests compare the supervisor's "
                    "times with their own; run them on a machine not suspended since boot",
                    pytrace=False)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A PostgreSQL server for the whole session (see tests/harness/pgserver.py)."""
    try:
        server = PgServer.from_environment()
    except PgServerError as e:
        pytest.fail(str(e), pytrace=False)
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def pg_dsn(pg_server: PgServer) -> str:
    """libpq URI of the test database (superuser, no password)."""
    return pg_server.dsn


@pytest.fixture
def lease_name() -> str:
    """A lease name no other test uses."""
    return f"test-{uuid.uuid4().hex}"


@pytest.fixture
def db_config(pg_dsn: str, lease_name: str) -> DatabaseConfig:
    """The lease database with short timeouts, default table, this test's lease name."""
    return DatabaseConfig(
        conninfo=pg_dsn,
        user=None,
        password=None,
        schema=None,
        table="corda_ha_lease",
        lease_name=lease_name,
        connect_timeout=2,
        operation_timeout=1,
    )
from tests.harness.cgroups import cgroup_parent  # noqa: F401,E402
from tests.harness.faultproxy import proxies  # noqa: F401,E402
from tests.harness.fencedb import fdb  # noqa: F401,E402
from tests.harness.inproc import daemon_logs  # noqa: F401,E402
from tests.harness.loadprobe import load  # noqa: F401,E402
from tests.harness.proc import reaper  # noqa: F401,E402
from tests.harness.users import other_user  # noqa: F401,E402


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the item (`item.failed_call`), for fixtures that
    show more when their test failed."""
    report = yield
    if report.when == "call" and report.failed:
        item.failed_call = True  # type: ignore[attr-defined]
    return report


#: How many of each supervisor's last output lines a failed end-to-end test shows.
FAILED_TAIL_LINES = 60


def show_hosts(c: Cluster) -> None:
    """Print the tail of every host's supervisor output (shown in the failed test's
    report as its teardown output)."""
    for h in c.hosts:
        lines = h.output().splitlines()[-FAILED_TAIL_LINES:]
        print(f"---- {h.name}: the supervisor's last {len(lines)} lines")
        for line in lines:
            print(line[:400])


@pytest.fixture
def pair(request: pytest.FixtureRequest, tmp_path: Path, pg_dsn: str,
         lease_name: str) -> Iterator[Cluster]:
    """An empty cluster sharing this test's lease; everything it starts is killed after.
    When the test failed, the tail of each supervisor's output is shown."""
    with cluster(tmp_path, pg_dsn, lease_name) as c:
        yield c
        if getattr(request.node, "failed_call", False):
            show_hosts(c)
