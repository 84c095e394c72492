"""The generated SQL mutants cannot rot: the generator still finds every predicate of the
lease store's SQL, every mutant it makes has the scenario that kills it (or a reason it
is equivalent), every mutant applies to the source and is SQL that PostgreSQL accepts.
(`python -m tests.mutants --generated` runs them; it is too slow for every CI run.)"""

from __future__ import annotations

import ast
import sys
import types
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.harness.pgserver import ENV_DSN, PgServer
from tests.mutants.generated import mutants as runner_mutants
from tests.mutants.generated import run as run_generated
from tests.mutants.generated import scenario_test
from tests.mutants.runner import REPO
from tests.mutants.sqlcases import SCENARIOS
from tests.mutants.sqlgen import (
    EXCLUDED,
    SOURCES,
    STATEMENTS,
    SqlMutant,
    generate,
    parse,
    source_statements,
)
from tests.mutants.sqlkills import EQUIVALENT, kills
from tests.mutants.sqlnodes import COMPARISONS, SqlParseError, Token
from tests.mutants.sqlparse import parse_statement

pytestmark = pytest.mark.timeout(120)

GENERATED = generate()
BY_STATEMENT: dict[str, list[SqlMutant]] = {}
for _m in GENERATED:
    BY_STATEMENT.setdefault(_m.statement, []).append(_m)


def test_every_literal_is_mutated_or_excluded_with_a_reason() -> None:
    names = [st.name for st in source_statements()]
    assert len(names) == len(set(names))
    assert sorted(names) == sorted([*STATEMENTS, *EXCLUDED]), (
        "a sql.SQL literal was added, renamed or removed: list it in STATEMENTS (and give "
        "its mutants scenarios) or in EXCLUDED with the reason (tests/mutants/sqlgen.py)")


def test_every_generated_mutant_has_its_scenario_or_is_equivalent() -> None:
    keys = [m.key for m in GENERATED]
    assert len(keys) == len(set(keys))
    killing = kills()
    missing = [k for k in keys if k not in killing and k not in EQUIVALENT]
    assert not missing, f"mutants without a scenario (tests/mutants/sqlkills.py): {missing}"
    stale = sorted((set(killing) | set(EQUIVALENT)) - set(keys))
    assert not stale, f"entries for mutants the generator no longer makes: {stale}"
    assert not set(killing) & set(EQUIVALENT)
    unknown = {s for s in killing.values() if s not in SCENARIOS}
    assert not unknown, f"no such scenario: {unknown}"


def test_every_runner_mutant_names_its_scenario_test() -> None:
    every = [m for m in runner_mutants() if m.file in SOURCES]  # the lease store's
    assert [m.name for m in every] == [m.key for m in GENERATED]
    for m in every:
        if m.todo is None:
            (test,) = m.tests
            name = test.removeprefix(scenario_test("")[:-2] + "[").removesuffix("]")
            assert name in SCENARIOS and test == scenario_test(name), test


def _tokens(statement: str) -> tuple[str, list[Token]]:
    st = next(s for s in source_statements() if s.name == statement)
    return st.text, parse(st).tokens


def _between(text: str, a: int, b: int, allowed: str) -> bool:
    return set(text[a:b]) <= set(allowed + " \n")


@pytest.mark.parametrize("statement", [s for s in STATEMENTS if s != "SERVER_ID"])
def test_the_generator_finds_every_predicate(statement: str) -> None:
    """Checked on the tokens, not the tree: every comparison and IS is flipped, every
    operand of AND / OR and every WHERE / ON / WHEN condition is dropped, every SET has
    its mutants, and a statement changed beyond the grammar fails to parse."""
    text, tokens = _tokens(statement)
    mutants = BY_STATEMENT[statement]
    flips = {m.start for m in mutants if m.operator.startswith("op ")}
    drops = [m for m in mutants if m.operator in ("true", "false", "not")]
    sets = {m.site for m in mutants if m.site.startswith(("SET ", "VALUES "))}
    for i, t in enumerate(tokens):
        after = tokens[i + 1] if i + 1 < len(tokens) else None
        if t.kind == "op" and t.text == "=" and i and tokens[i - 1].kind == "name" and (
                f"SET {tokens[i - 1].text}" in sets):
            continue  # an assignment
        if (t.kind == "op" and t.text in COMPARISONS) or t.word == "is":
            assert t.start in flips, f"{statement}: {text[t.start:t.start + 40]!r} not flipped"
        if t.kind == "kw" and t.word in ("and", "or"):
            assert any(_between(text, m.end, t.start, ")") for m in drops), (statement, t)
            assert any(_between(text, t.end, m.start, "(") for m in drops), (statement, t)
        if (t.kind == "kw" and t.word in ("where", "when")) or (
                t.word == "on" and after is not None and after.word != "conflict"):
            assert any(_between(text, t.end, m.start, "(") for m in drops), (statement, t)
        if t.kind == "kw" and t.word == "set":
            assert any(m.site.startswith("SET ") and m.start > t.start for m in mutants)


def test_the_parser_refuses_what_it_does_not_know() -> None:
    for text in ("SELECT a FROM t WHERE a BETWEEN 1 AND 2", "SELECT a FROM t WHERE a IN (1)",
                 "SELECT a FROM t WHERE a ~ 'x'", "SELECT a FROM t WHERE a LIKE 'x'",
                 "SELECT a FROM t WHERE EXISTS (SELECT 1)", "SELECT a; SELECT b"):
        with pytest.raises(SqlParseError):
            parse_statement(text)


@pytest.mark.parametrize("statement", STATEMENTS)
def test_every_statement_has_mutants(statement: str) -> None:
    assert BY_STATEMENT.get(statement)


def mutated_source(m: SqlMutant) -> str:
    source = (REPO / m.file).read_text()
    assert source.count(m.literal) == 1, f"{m.key}: its literal no longer occurs once"
    return source.replace(m.literal, m.replacement(), 1)


def test_every_mutant_applies_once_and_changes_only_its_statement() -> None:
    for m in GENERATED:
        new = mutated_source(m)
        tree = ast.parse(new)
        texts = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
                 and isinstance(n.value, str)]
        assert m.mutated in texts, m.key


# -- PostgreSQL accepts every mutant (a mutant that is a syntax error proves nothing)

PARAMS: dict[str, Any] = dict(
    name="lease-x", holder="node-a", host="h", pid=1, machine="m", started=2, instance="i",
    w=timedelta(seconds=10), server=None, has_expected=True, e_epoch=1, e_instance=None,
    e_renewed=None, dead_pid=None, dead_started=None, epoch=1, channel="c", to=None,
    paused=True, how="released", previous=None, reason="released", limit=5,
    machine_name="node-a", machine_identity="m", state="standby", can_take_over=True,
    version="1", fresh=timedelta(seconds=6), retention=timedelta(hours=24), priority=2,
    nofailover=True, u_ms=2000, w_ms=4000, m_ms=400, proceed=True, at=None)


def _statement(module: types.ModuleType, m: SqlMutant, schema: str) -> sql.Composable:
    if m.statement.startswith("members."):
        return getattr(module.MemberSql(schema, "corda_ha_lease"),  # type: ignore[no-any-return]
                       m.statement.removeprefix("members."))
    if m.statement.startswith("schedule."):
        return getattr(module.ScheduleSql(schema, "corda_ha_lease"),  # type: ignore[no-any-return]
                       m.statement.removeprefix("schedule."))
    name = "observe" if m.statement == "SERVER_ID" else m.statement
    return getattr(module.LeaseSql(schema, "corda_ha_lease"), name)  # type: ignore[no-any-return]


def _load(m: SqlMutant) -> types.ModuleType:
    """The mutated module, loaded under a name of its own (its dataclasses need it in
    sys.modules while they are made)."""
    name = f"mutated_{m.file.replace('/', '_').removesuffix('.py')}"
    module = types.ModuleType(name)
    sys.modules[name] = module
    try:
        exec(compile(mutated_source(m), m.file, "exec"), module.__dict__)
    finally:
        del sys.modules[name]
    return module


@pytest.fixture
def lease_schema(pg_server: PgServer) -> Iterator[tuple[psycopg.Connection[Any], str]]:
    from supervisor.lease.members import MemberSql
    from supervisor.lease.sql import LeaseSql

    schema = f"gen_mutants_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        lease = LeaseSql(schema, "corda_ha_lease")
        for ddl in (lease.create_table, lease.create_history,
                    MemberSql(schema, "corda_ha_lease").create_table):
            conn.execute(ddl)
        try:
            yield conn, schema
        finally:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def test_postgresql_accepts_every_mutant(lease_schema: tuple[psycopg.Connection[Any], str]
                                         ) -> None:
    """Each mutated statement runs (and is rolled back); only a runtime error of the
    data (a NOT NULL column given NULL) may stop it, never a syntax or type error."""
    conn, schema = lease_schema
    refused = []
    for m in GENERATED:
        statement = _statement(_load(m), m, schema)
        try:
            with conn.transaction(force_rollback=True):
                conn.execute(statement, PARAMS)
        except psycopg.errors.NotNullViolation:
            pass
        except psycopg.Error as e:
            refused.append(f"{m.key}: {e.sqlstate} {e}")
    assert not refused, "\n".join(refused)


def test_a_generated_mutant_is_caught_by_its_scenario_in_a_scratch_copy(
        pg_server: PgServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end, as `python -m tests.mutants --generated --only ...` runs it: the unmutated
    copy passes the scenario, the mutated copy fails it."""
    monkeypatch.setenv(ENV_DSN, pg_server.dsn)  # restored after: run() sets it too
    key = "renew: l.expires_at > n.now [op >=]"
    (mutant,) = [m for m in runner_mutants() if m.name == key]
    results = run_generated([mutant], timeout=100)
    assert results is not None, "the unmutated copy failed the scenario"
    (r,) = results
    assert (r.outcome, r.killed_by) == ("caught", scenario_test("renew-expires-now")), r.output
