"""Every condition of the database fence's SQL decides a scenario of its own.

Each scenario of `tests/mutants/fencecases.py` runs (`tests/harness/fencecall.py`) in the world of
`tests/harness/fenceworld.py` (two pairs in one lease table, installed exactly as
`corda-ha-supervisor schema` prints it, the database clock held at T0): the DBA's
changes, one call of a fence function as
the supervisor's least-privilege role (or of `bind` as the DBA), and what it answered
and left (every node role's LOGIN, every binding row, the sessions it ended, on
PostgreSQL 16+ which roles the fencer administers), all in a transaction rolled back
afterwards. Corda's lock row scenarios run the store's statements (`cordarow.py`) in a
schema of their own whose `clock_timestamp()` reads T0.

`python -m tests.mutants --generated` runs each generated mutant of that SQL against
the scenario that must kill it (`tests/mutants/fencekills.py`).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from tests.harness import fencecall
from tests.harness.fencefixtures import (  # noqa: F401 (fixtures)
    expected,
    fixture_pg18,
    fixture_world15,
    fixture_world18,
    world_for,
)
from tests.harness.fenceworld import T0, World
from tests.harness.pgserver import PgServer
from tests.mutants.fencecases import CORDA, SCENARIOS

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario(name: str, request: pytest.FixtureRequest) -> None:
    sc = SCENARIOS[name]
    w = world_for(request, name, sc)
    seen = fencecall.run_wait(w, sc) if sc.wait else fencecall.run(w, sc)
    want = expected(w, sc)
    assert seen.outcome == want.outcome, f"{name}: {sc.call} answered {seen.outcome!r}"
    assert seen == want, f"{name}: what {sc.call} left"


# ---------------------------------------------------------------- Corda's lock row


@pytest.mark.parametrize("name", list(CORDA))
def test_corda_row(name: str, pg_server: PgServer) -> None:
    """Corda's row (Corda's own table shape) as the holder of our lease finds it, in a
    schema of its own whose `clock_timestamp()` (first on the search_path) reads T0."""
    sc = CORDA[name]
    answer, after = fencecall.run_corda(pg_server, sc)
    assert answer == sc.expect, f"{name}: {sc.call} answered {answer!r}"
    assert after == {r[0]: r[2] for r in sc.rows} | sc.after, f"{name}: Corda's rows after"


def test_world_clock_is_held_and_moved_by_its_script(world15: World, tmp_path: Path) -> None:
    """The scripted clock: T0 from the first read, T0 + 1 s from the third, and the
    statement of a read run by it."""
    with psycopg.connect(world15.db.dsn, autocommit=True) as conn, \
            conn.transaction(force_rollback=True):
        base = conn.execute("SELECT nextval('corda_ha_test_clock.reads')").fetchone()[0]  # type: ignore[index]
        for after, t, run in ((0, T0, None), (2, T0 + timedelta(seconds=1),
                                              "CREATE TEMP TABLE moved ()")):
            conn.execute("INSERT INTO corda_ha_test_clock.script VALUES (%s, %s, %s)",
                         (base + after, t, run))
        reads = [conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
                 for _ in range(4)]
        assert reads == [T0, T0, T0 + timedelta(seconds=1), T0 + timedelta(seconds=1)]
        assert conn.execute("SELECT to_regclass('pg_temp.moved')").fetchone() != (None,)


#: scenarios run once more by a real login, and what undoes their committed changes
REAL_LOGIN = {"ok": (), "another-supervisor": (),
              "caller-createrole": ("ALTER ROLE {sup} NOCREATEROLE",),
              "lock": ("ALTER ROLE {b} LOGIN", "UPDATE {binding} SET locked_by_epoch = NULL, "
                       "locked_at = NULL")}


@pytest.mark.parametrize("name", list(REAL_LOGIN))
def test_a_real_login_gets_what_the_scenario_gets(world15: World, name: str) -> None:
    """The scenarios call as the supervisor's role by SET SESSION AUTHORIZATION inside the
    DBA's rolled-back transaction. That role logged in for real, with the scenario's
    changes committed, gets the same answer and leaves the same state."""
    w, sc = world15, SCENARIOS[name]
    in_transaction = fencecall.run(w, sc)
    try:
        with psycopg.connect(w.db.dsn, autocommit=True) as admin:
            with admin.transaction():
                fencecall.prepare(admin, w, sc)
            text, params = fencecall.statement(w, sc)
            with psycopg.connect(w.dsn(w.role(sc.caller)), autocommit=True) as conn:
                try:
                    outcome = fencecall.shaped(w, sc, conn.execute(text, params).fetchall())
                except psycopg.Error as e:
                    outcome = fencecall.Failed(e.sqlstate, e.diag.message_primary or "")
            seen = fencecall.observe(admin, w, {}, w.fence)
            seen.outcome = fencecall.unformatted(w, outcome)
    finally:
        with psycopg.connect(w.db.dsn, autocommit=True) as admin:
            for undo in (*REAL_LOGIN[name], "DELETE FROM {lease_table}",
                         "DELETE FROM corda_ha_test_clock.script"):
                admin.execute(w.fmt(undo).encode())
    assert seen == in_transaction
