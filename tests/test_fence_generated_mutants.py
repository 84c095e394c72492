"""The generated mutants of the fence's SQL cannot rot: the generator still finds every
condition of the fence functions, their policies and Corda's lock row statements; every
mutant it makes has the scenario that kills it, or a reason; every mutant applies to its
source once; PostgreSQL accepts every one. (`python -m tests.mutants --generated` runs
them against their scenarios; too slow for every CI run.)"""

from __future__ import annotations

import ast
import os
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from supervisor.lease.fence_sql import FenceSql
from tests.harness import fencecall
from tests.harness.fencefixtures import (  # noqa: F401 (fixtures)
    expected,
    fixture_pg18,
    fixture_world15,
    fixture_world18,
    world_for,
)
from tests.harness.fenceworld import LEASE, World
from tests.harness.pgserver import PgServer
from tests.mutants.fenceapply import apply
from tests.mutants.fencecases import CORDA, SCENARIOS
from tests.mutants.fencegen import (
    SOURCES,
    FenceMutant,
    _template,
    excluded,
    generate,
    literals,
    source_literal,
    with_conditions,
)
from tests.mutants.fencekills import EQUIVALENT, OUT_OF_REACH, invalid, kills
from tests.mutants.plpgsql import parse_body, parse_sql, tokenize
from tests.mutants.runner import REPO
from tests.mutants.sqlnodes import COMPARISONS, SqlParseError, Token

pytestmark = pytest.mark.timeout(120)

GENERATED = generate()
BY_SOURCE: dict[str, list[FenceMutant]] = {}
for _m in GENERATED:
    BY_SOURCE.setdefault(_m.statement, []).append(_m)


def test_every_literal_with_a_condition_is_mutated_or_excluded_with_a_reason() -> None:
    claimed = {id(s): [lit for lit in literals(s.file) if s.find(lit)] for s in SOURCES}
    for s in SOURCES:
        assert len(claimed[id(s)]) == 1, f"{s.name}: found {len(claimed[id(s)])} times"
    mutated = {(lit.file, lit.lineno) for found in claimed.values() for lit in found}
    loose = [f"{lit.file}:{lit.lineno} {lit.template[:60]!r}" for lit in with_conditions()
             if (lit.file, lit.lineno) not in mutated and excluded(lit) is None]
    assert not loose, ("SQL with a condition that is neither mutated nor excluded: list it "
                       "in SOURCES or EXCLUDED (tests/mutants/fencegen.py): " + str(loose))


def test_every_generated_mutant_has_its_scenario_or_a_reason() -> None:
    keys = [m.key for m in GENERATED]
    assert len(keys) == len(set(keys))
    killing = kills()
    reasons = {**EQUIVALENT, **OUT_OF_REACH}
    missing = [k for k in keys if k not in killing and k not in reasons]
    assert not missing, f"mutants without a scenario (tests/mutants/fencekills.py): {missing}"
    stale = sorted((set(killing) | set(reasons)) - set(keys))
    assert not stale, f"entries for mutants the generator no longer makes: {stale}"
    assert not set(killing) & set(reasons)
    assert not set(EQUIVALENT) & set(OUT_OF_REACH)
    unknown = {s for s in killing.values() if s not in SCENARIOS and s not in CORDA}
    assert not unknown, f"no such scenario: {unknown}"
    cordarow = {k for k in keys if k.startswith(("make_takeable", "look"))}
    assert all((killing[k] in CORDA) == (k in cordarow) for k in killing)


def _between(text: str, a: int, b: int, allowed: str) -> bool:
    """Only `allowed` characters (and NOT, whitespace) between a and b."""
    return b >= a and set(text[a:b].replace("NOT", "")) <= set(allowed + " \n")


def _declared(tokens: list[Token], i: int) -> str:
    """The variable a `:=` at i assigns: the name after the last `;`, DECLARE or BEGIN."""
    j = i - 1
    while j > 0 and tokens[j - 1].text != ";" and tokens[j - 1].word not in (
            "declare", "begin", "then", "else", "loop"):
        j -= 1
    return tokens[j].text


def _exempt(tokens: list[Token], i: int) -> bool:
    """A token that looks like a condition's but is not one: an assignment (`SET col =`,
    RAISE's `ERRCODE =`), a FOR loop's IN."""
    t, before = tokens[i], tokens[i - 1] if i else None
    two_back = tokens[i - 2] if i > 1 else None
    if t.text == "=" and before is not None and before.word in ("errcode", "message"):
        return True
    return t.word == "in" and two_back is not None and two_back.word == "for"


@pytest.mark.parametrize("source", [s.name for s in SOURCES])
def test_the_generator_finds_every_condition(source: str) -> None:
    """On the tokens, not the tree: every comparison, IS and IN is flipped, every operand
    of AND / OR and every WHERE / ON / WHEN / IF / ELSIF / WHILE / USING / CHECK condition
    is dropped, every IF / ELSIF / WHILE / EXIT WHEN branch is never taken, every SET and
    `:=` has its mutants."""
    (src,) = [s for s in SOURCES if s.name == source]
    block = src.parse(source_literal(src).template)
    text, tokens = block.text, block.tokens
    mutants = BY_SOURCE[source]
    flips = {m.start for m in mutants if m.operator.startswith("op ")}
    drops = [m for m in mutants if m.operator in ("true", "false", "not")]
    nevers = {m.start for m in mutants if m.operator == "branch never"}
    assigned = {m.site.split(" ", 1)[1] for m in mutants  # the names assigned
                if m.site.startswith(("SET ", ":= ", "VALUES ", "DECLARE "))
                and ": " not in m.site}
    for i, t in enumerate(tokens):
        after = tokens[i + 1] if i + 1 < len(tokens) else None
        if _exempt(tokens, i):
            continue
        if t.text == "=" and i and tokens[i - 1].text in assigned:
            continue  # an UPDATE's SET
        if (t.kind == "op" and t.text in COMPARISONS) or t.word in ("is", "in"):
            start = t.start if t.word != "in" or tokens[i - 1].word != "not" \
                else tokens[i - 1].start
            assert start in flips, f"{source}: {text[t.start:t.start + 40]!r} not flipped"
        if t.kind == "kw" and t.word in ("and", "or"):
            assert any(_between(text, m.end, t.start, ")") for m in drops), (source, t)
            assert any(_between(text, t.end, m.start, "(") for m in drops), (source, t)
        opens = t.word in ("where", "when", "if", "elsif", "while", "check") or (
            t.word == "using" and after is not None and after.text == "(") or (
            t.word == "on" and after is not None and after.word != "conflict"
            and not (i > 1 and tokens[i - 2].word == "policy"))
        if opens and not (t.word == "if" and bool(i) and tokens[i - 1].word == "end"):
            assert any(_between(text, t.end, m.start, "(") for m in drops), (source, t)
        ends = bool(i) and tokens[i - 1].word == "end"  # END IF, END LOOP
        if (t.word in ("if", "elsif", "while") and not ends) \
                or (t.word == "when" and bool(i) and tokens[i - 1].word == "exit"):
            assert after is not None and after.start in nevers, (source, t)
        if t.text == ":=":
            assert _declared(tokens, i) in assigned, (source, _declared(tokens, i))
        if t.kind == "kw" and t.word == "set":
            assert any(m.site.startswith("SET ") and m.start > t.start for m in mutants)


@pytest.mark.parametrize("text", [
    "BEGIN LOOP EXIT; END LOOP; END",
    "BEGIN FOREACH x IN ARRAY a LOOP EXIT; END LOOP; END",
    "BEGIN GET DIAGNOSTICS n = ROW_COUNT; END",
    "BEGIN CASE WHEN a THEN RETURN 1; END CASE; END",
    "BEGIN RAISE NOTICE 'x'; END",
    "BEGIN IF a BETWEEN 1 AND 2 THEN RETURN 1; END IF; END",
    "BEGIN IF a LIKE 'x' THEN RETURN 1; END IF; END",
    "BEGIN IF a ~ 'x' THEN RETURN 1; END IF; END",
    "BEGIN RETURN 1; END; SELECT 1",
    "BEGIN x = 1; END",
])
def test_the_parser_refuses_what_it_does_not_know(text: str) -> None:
    with pytest.raises(SqlParseError):
        parse_body(text)


def test_the_parser_refuses_sql_it_does_not_know() -> None:
    for text in ("SELECT a FROM t WHERE a BETWEEN 1 AND 2", "SELECT a FROM t FOR NO KEY UPDATE",
                 "SELECT a FROM t WHERE a IS TRUE", "SELECT 1; SELECT 2"):
        with pytest.raises(SqlParseError):
            parse_sql(text)


@pytest.mark.parametrize("source", [s.name for s in SOURCES])
def test_every_source_has_mutants(source: str) -> None:
    assert BY_SOURCE.get(source)


def test_every_mutant_applies_once_and_changes_only_its_literal() -> None:
    """The mutant's text occurs once in its file; its replacement is one string expression
    that stands for the mutated SQL; the file with it still compiles."""
    sources = {f: (REPO / f).read_text() for f in {m.file for m in GENERATED}}
    for m in GENERATED:
        source = sources[m.file]
        assert source.count(m.literal.segment) == 1, f"{m.key}: its text no longer occurs once"
        new = m.replacement()
        assert _template(ast.parse(new, mode="eval").body, new)[0] == m.mutated, m.key
        compile(source.replace(m.literal.segment, new, 1), m.file, "exec")


# -- PostgreSQL accepts every mutant (a mutant that is a syntax error proves nothing)


def _accepted(conn: psycopg.Connection[Any], w: World, m: FenceMutant) -> None:
    applied = apply(m, w)
    for text in applied.pre:  # a function: CREATE OR REPLACE; policies: DROP, CREATE
        conn.execute(text.encode())
    if applied.fence_sql is not None:
        conn.execute(f"SET SESSION AUTHORIZATION {w.role('sup')}".encode())
        conn.execute(applied.fence_sql(w.one.schema, w.one.table).read, {"lease": LEASE})
    if m.file.endswith("cordarow.py"):
        table = sql.Identifier(w.one.schema, "node_mutual_exclusion")
        conn.execute(sql.SQL(fencecall.CORDA_DDL).format(table))
        text = sql.SQL(m.mutated).format(table if m.statement != "make_takeable#1"
                                         else w.fence.lease_table)
        spans = [t.start for t in tokenize(m.literal.template) if t.kind == "param"]
        values = list(zip(CORDA_PARAMS[m.statement], spans, strict=True))
        new = m.mutated[m.start:m.end + len(m.mutated) - len(m.literal.template)]
        conn.execute(text, [v for v, at in values if at < m.start]  # the replaced span's
                     + [v for v, at in values if m.start <= at < m.end][:new.count("%s")]
                     + [v for v, at in values if at >= m.end])


CORDA_PARAMS = {"make_takeable#1": (LEASE, "inst-a", 5),
                "make_takeable#2": (timedelta(seconds=10),),
                "make_takeable#3": (timedelta(seconds=10), 7), "look": ()}


def test_postgresql_accepts_every_mutant(world15: World) -> None:
    """Each mutated function is created (CREATE OR REPLACE), each mutated policy made,
    each mutated statement run, all in a transaction rolled back; only an error of the
    data (a NOT NULL column given NULL) may stop it, never a syntax or type error."""
    refused = []
    with psycopg.connect(world15.db.dsn, autocommit=True, connect_timeout=10) as conn:
        for m in GENERATED:
            try:
                with conn.transaction(force_rollback=True):
                    _accepted(conn, world15, m)
            except psycopg.errors.NotNullViolation:
                pass
            except psycopg.Error as e:
                refused.append(f"{m.key}: {e.sqlstate} {e}")
    assert not refused, "\n".join(refused)


@pytest.mark.parametrize("statement", ["confirm", "lock", "end", "bind"])
def test_a_function_applied_in_process_is_the_one_schema_installs(
        world15: World, statement: str) -> None:
    """Applied in process, a function body unmutated is exactly the function `schema`
    installed (so a mutant differs from it only by its mutation)."""
    m = BY_SOURCE[statement][0]
    same = FenceMutant(m.key, m.statement, m.site, m.operator, m.file, m.literal,
                       m.literal.template, 0, 0)
    (ddl,) = apply(same, world15).pre
    fn = world15.names[f"{statement}_fn"]
    with psycopg.connect(world15.db.dsn, autocommit=True) as conn, \
            conn.transaction(force_rollback=True):
        def definition() -> str:
            row = conn.execute("SELECT pg_get_functiondef(p.oid) FROM pg_proc p WHERE "
                               "p.oid = %s::regproc", (fn,)).fetchone()
            assert row is not None
            return str(row[0])

        installed = definition()
        conn.execute(ddl.encode())
        assert definition() == installed
        conn.execute(apply(m, world15).pre[0].encode())
        assert definition() != installed


@pytest.mark.parametrize("source", [s.name for s in SOURCES])
def test_every_mutant_is_killed_by_its_scenario_in_process(
        source: str, request: pytest.FixtureRequest, pg_server: PgServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Applied in process, each mutant fails the scenario `fencekills` names for it, and
    not because it is SQL that is not valid (the generated run, on scratch copies, is the
    verdict; this keeps a generator change honest in every CI run). A call that waits is
    cancelled after 1 s here, not 5."""
    monkeypatch.setattr(fencecall, "HANG", 1.0)
    killing = kills()
    wrong = []
    for m in BY_SOURCE[source]:
        name = killing.get(m.key)
        if name is None:
            continue  # equivalent or out of reach
        if name in CORDA:
            sc = CORDA[name]
            applied = apply(m, request.getfixturevalue("world15"))
            outcome, after = fencecall.run_corda(
                pg_server, sc, take=applied.take or fencecall.make_takeable,
                look_at=applied.look or fencecall.look)
            killed = outcome != sc.expect or after != {r[0]: r[2] for r in sc.rows} | sc.after
        else:
            scenario = SCENARIOS[name]
            if scenario.wait and os.geteuid() != 0:
                continue  # a stopped backend (SIGSTOP) needs root: checked where it can be
            try:
                w = world_for(request, name, scenario)
            except pytest.skip.Exception:
                continue  # no PostgreSQL 16+ here, or a scenario of before 16 on a 16+
            if w.version >= 160000 and scenario.server != 18 and "server_version_num" in m.key:
                continue  # the version test made true is told apart only before 16
            applied = apply(m, w)
            monkeypatch.setattr(fencecall, "FenceSql", applied.fence_sql or FenceSql)
            seen = (fencecall.run_wait if scenario.wait else fencecall.run)(w, scenario,
                                                                            applied.pre)
            outcome, killed = seen.outcome, seen != expected(w, scenario)
        if not killed or invalid(m.key, repr(outcome)):
            wrong.append(f"{m.key} by {name}: {outcome!r}")
    assert not wrong, "not killed, or killed by SQL that is not valid:\n" + "\n".join(wrong)
