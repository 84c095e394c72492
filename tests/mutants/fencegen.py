"""Generated mutants of the database fence's SQL and of Corda's lock row statements.

Sources (`SOURCES`), read from the Python files that hold them, each parsed strictly
(`tests/mutants/plpgsql.py`):

- the PL/pgSQL bodies of the fence functions: `confirm` (`fence_check.CONFIRM_BODY`),
  `lock`, `end`, `bind` (`fence_sql.LOCK_BODY`, `END_BODY`, `BIND_BODY`): the literal
  passed to `dollar_quoted`, with its `@NAME@` placeholders;
- the status read of the bindings (`fence_sql.FenceSql.read`);
- the row-level security policies: `own_rows` (`ownership.OwnedTables.own_rows`: the
  condition of the supervisor role's policy on the lease, member and history tables),
  `access_policy` (that policy's USING and WITH CHECK), `self_policy` (the access
  table's), `binding_policy` (`fence_sql.fence_ddl`'s `own_rows`: the bindings the
  supervisor role may read), `fencer_policy`, `fencer_lock_policy` (the fencer's);
- Corda's lock row (`cordarow.py`): `make_takeable#1` (our lease, FOR SHARE),
  `make_takeable#2` (Corda's row, FOR UPDATE), `make_takeable#3` (its timestamp set
  back), `look`.

Every string expression of those files that holds a condition (WHERE, USING, WHEN,
CHECK, THEN) is one of them or `EXCLUDED`, with why (`tests/test_fence_generated_mutants.py`
fails otherwise). The operators are those of `sqlgen.py` (a condition TRUE, an OR
alternative FALSE, a bare boolean negated, a comparison flipped (IN and NOT IN too), a
time bound doubled, halved or dropped, a compared clock read moved by a second, an
assigned value its old value or NULL), plus two of PL/pgSQL: `branch never` (the whole
condition of an IF, ELSIF, WHILE or EXIT WHEN made FALSE: its branch never taken) and
`item dropped` (one value of an `IN (a, b)` list left out). An assignment is a `:=`
(its old value: the statement does nothing) or a DECLARE default (NULL), or an
UPDATE's SET or an INSERT's value, as in `sqlgen`. A boolean ORDER BY key made TRUE is
written `NOT FALSE` (PostgreSQL refuses a constant there); a dropped condition of
Corda's lock row statements keeps its positional parameter (`_keep_positional`).

A mutant rewrites the string expression in its source file: a body or a `sql.SQL` text
as one plain literal, an f-string as one f-string with the same fields.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from tests.mutants.plpgsql import Block, parse_body, parse_condition, parse_policy, parse_sql
from tests.mutants.runner import REPO, Mutant
from tests.mutants.sqlgen import _children, norm, sites
from tests.mutants.sqlnodes import Call, Compare, Node, Parsed, Statement, Subquery

FENCE_SQL = "supervisor/lease/fence_sql.py"
FENCE_CHECK = "supervisor/lease/fence_check.py"
OWNERSHIP = "supervisor/lease/ownership.py"
CORDAROW = "supervisor/lease/cordarow.py"
FILES = (FENCE_CHECK, FENCE_SQL, OWNERSHIP, CORDAROW)

#: what a string expression must hold to be a source or excluded: a condition
CONDITION = re.compile(r"\b(WHERE|USING|WHEN|CHECK|THEN)\b")


@dataclass(frozen=True)
class Literal:
    """One string expression of a source file: where, its source text, the text it
    stands for (an f-string's fields as `{expr}`), and whether it is an f-string."""

    file: str
    lineno: int
    segment: str
    template: str
    fstring: bool
    body_of: str | None  # the module constant whose dollar-quoted body it is
    function: str | None  # the function (def) it is in


@dataclass(frozen=True)
class Source:
    """A mutated string expression: its name, file, how to find it, how to parse it."""

    name: str
    file: str
    find: Callable[[Literal], bool]
    parse: Callable[[str], Block]


def _body(constant: str) -> Callable[[Literal], bool]:
    return lambda lit: lit.body_of == constant


def _starts(prefix: str) -> Callable[[Literal], bool]:
    return lambda lit: lit.template.startswith(prefix)


SOURCES: tuple[Source, ...] = (
    Source("confirm", FENCE_CHECK, _body("CONFIRM_BODY"), parse_body),
    Source("lock", FENCE_SQL, _body("LOCK_BODY"), parse_body),
    Source("end", FENCE_SQL, _body("END_BODY"), parse_body),
    Source("bind", FENCE_SQL, _body("BIND_BODY"), parse_body),
    Source("read", FENCE_SQL, _starts("SELECT f.node_role, f.machine_name"), parse_sql),
    Source("own_rows", OWNERSHIP, _starts("lease_name IN (SELECT a.lease_name FROM "
                                          "{q(self.access)}"), parse_condition),
    Source("access_policy", OWNERSHIP, _starts("CREATE POLICY {ACCESS_POLICY} ON {q(table)} "
                                               "USING"), parse_policy),
    Source("self_policy", OWNERSHIP, _starts("CREATE POLICY {SELF_POLICY}"), parse_policy),
    Source("binding_policy", FENCE_SQL, _starts("lease_name IN (SELECT a.lease_name FROM "
                                                "{access}"), parse_condition),
    Source("fencer_policy", FENCE_SQL, _starts("CREATE POLICY {FENCER_POLICY} "),
           parse_policy),
    Source("fencer_lock_policy", FENCE_SQL, _starts("CREATE POLICY {FENCER_LOCK_POLICY}"),
           parse_policy),
    Source("make_takeable#1", CORDAROW, _starts("SELECT 1 FROM {} WHERE lease_name"),
           parse_sql),
    Source("make_takeable#2", CORDAROW, _starts("SELECT machine_name, version"), parse_sql),
    Source("make_takeable#3", CORDAROW, _starts("UPDATE {} SET mutual_exclusion_timestamp"),
           parse_sql),
    Source("look", CORDAROW, _starts("SELECT machine_name, extract"), parse_sql),
)

#: string expressions with a condition that are not mutated, and why (by their start, or
#: "def NAME": every one in that function)
_DBA_SCRIPT = ("a DO block of the DBA's script (whether a role exists, whether a table "
               "someone else made is in the way): the script itself, not a statement the "
               "store or a fence function runs")
EXCLUDED = {
    (FENCE_SQL, "CREATE POLICY {ACCESS_POLICY} ON {binding} FOR SELECT USING ({own_rows})"):
        "its condition is `own_rows` of fence_ddl, mutated as binding_policy",
    (OWNERSHIP, "def create_role_if_missing"): _DBA_SCRIPT,
    (OWNERSHIP, "def guard_tables"): _DBA_SCRIPT,
}


def _template(node: ast.expr, source: str) -> tuple[str, bool]:
    if isinstance(node, ast.Constant):
        return str(node.value), False
    assert isinstance(node, ast.JoinedStr)
    parts = []
    for v in node.values:
        if isinstance(v, ast.Constant):
            assert "{" not in str(v.value) and "}" not in str(v.value), v.value
            parts.append(str(v.value))
        else:
            assert isinstance(v, ast.FormattedValue) and v.conversion == -1 \
                and v.format_spec is None
            parts.append("{" + (ast.get_source_segment(source, v.value) or "") + "}")
    return "".join(parts), True


def literals(file: str, repo: object = REPO) -> list[Literal]:
    """Every maximal string expression of `file` (f-strings whole, concatenations whole)."""
    return list(_literals(file, (repo / file).read_text()))  # type: ignore[operator]


@functools.lru_cache(maxsize=16)
def _literals(file: str, source: str) -> tuple[Literal, ...]:
    tree = ast.parse(source)
    bodies: dict[int, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name):
            for call in ast.walk(node.value):
                if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) \
                        and call.func.id == "dollar_quoted" and call.args:
                    bodies[id(call.args[0])] = node.targets[0].id
    inner = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
    within = {id(n): f.name for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)
              for n in ast.walk(f)}
    found = []
    for node in ast.walk(tree):
        if id(node) in inner:
            continue
        if isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant)
                                               and isinstance(node.value, str)):
            segment = ast.get_source_segment(source, node)
            assert segment is not None
            template, fstring = _template(node, source)
            found.append(Literal(file, node.lineno, segment, template, fstring,
                                 bodies.get(id(node)), within.get(id(node))))
    found.sort(key=lambda lit: lit.lineno)
    return tuple(found)


def with_conditions(repo: object = REPO) -> list[Literal]:
    """The string expressions of `FILES` that hold a condition."""
    return [lit for f in FILES for lit in literals(f, repo) if CONDITION.search(lit.template)]


def source_literal(src: Source, repo: object = REPO) -> Literal:
    (lit,) = [lit for lit in literals(src.file, repo) if src.find(lit)]
    return lit


def excluded(lit: Literal) -> str | None:
    for (file, start), why in EXCLUDED.items():
        if lit.file == file and (lit.template.startswith(start)
                                 or start == f"def {lit.function}"):
            return why
    return None


# ---------------------------------------------------------------- the mutants


@dataclass(frozen=True)
class FenceMutant:
    key: str
    statement: str
    site: str
    operator: str
    file: str
    literal: Literal
    mutated: str  # the new text (an f-string's fields as `{expr}`)
    start: int  # the replaced span of the text
    end: int

    def replacement(self) -> str:
        """The new string expression's source text."""
        text = self.mutated
        assert '"' not in text and "\\" not in text, self.key
        prefix = "f" if self.literal.fstring else ""
        quote = '"""' if "\n" in text else '"'
        return f"{prefix}{quote}{text}{quote}"


def _nodes(st: Statement) -> Iterator[Node]:
    """Every expression node of a statement, its parts and subqueries, depth first."""
    for node in [*st.roots, *st.expressions, *(a.value for a in st.assignments)]:
        yield from _below(node)
    for part in st.parts:
        yield from _nodes(part)


def _below(node: Node) -> Iterator[Node]:
    yield node
    if isinstance(node, Subquery):
        yield from _nodes(node.statement)
    for child in _children(node):
        yield from _below(child)


def _plpgsql_ops(block: Block) -> Iterator[tuple[str, str, int, int, str]]:
    """`branch never` for each branch condition, `item dropped` for each IN-list value."""
    text = block.text
    for cond in block.branches:
        yield norm(text[cond.start:cond.end]), "branch never", cond.start, cond.end, "FALSE"
    for node in _nodes(block.tree):
        if isinstance(node, Compare) and node.op in ("in", "not in") \
                and isinstance(node.right, Call) and node.right.name == "(list)" \
                and len(node.right.args) > 1:
            items = node.right.args
            site = norm(text[node.start:node.end])
            for i, item in enumerate(items):
                s, e = ((items[i - 1].end, item.end) if i else (item.start, items[1].start))
                yield site, f"item dropped: {norm(text[item.start:item.end])}", s, e, ""


def _keep_positional(old: str, new: str, op: str, site: str) -> str:
    """`new`, still taking every positional `%s` that `old` took (Corda's lock row
    statements pass their parameters by position): a dropped condition `(TRUE OR %s::text
    IS NULL)`, a dropped bound `- 0 * %s`, an assigned old value or NULL behind a CASE on
    the parameter. Otherwise the mutant would only fail on its parameter count."""
    lost = old.count("%s") - new.count("%s")
    if lost <= 0:
        return new
    dead = " AND ".join(["%s::text IS NULL"] * lost)
    if new in ("TRUE", "FALSE"):
        return f"({new} OR {dead})" if new == "TRUE" else f"({new} AND {dead})"
    if op == "bound dropped":
        sign = old[len(new):].lstrip()[0]
        return f"{new} {sign} 0 * %s" if lost == 1 else _refuse(site, op)
    column = site.removeprefix("SET ")
    if op == "old":
        return f"(CASE WHEN {dead} THEN {new} ELSE {new} END)"
    if op == "null":
        return f"(CASE WHEN {dead} THEN NULLIF({column}, {column}) END)"
    return _refuse(site, op)


def _refuse(site: str, op: str) -> str:
    raise ValueError(f"{site} [{op}] drops a positional parameter: no rule keeps it")


def generate(repo: object = REPO) -> list[FenceMutant]:
    """Every generated mutant of `SOURCES`, in order; keys unique."""
    out: list[FenceMutant] = []
    seen: dict[str, int] = {}
    for src in SOURCES:
        lit = source_literal(src, repo)
        block = src.parse(lit.template)
        found = list(sites(Parsed(block.text, block.tree, block.tokens)))
        found += _plpgsql_ops(block)
        for site, op, s, e, new in found:
            site = block.label(s) + site
            new = _keep_positional(lit.template[s:e], new, op, site)
            if (s, e) in block.order_by and new in ("TRUE", "FALSE"):
                new = f"NOT {'FALSE' if new == 'TRUE' else 'TRUE'}"  # no constant in ORDER BY
            key = f"{src.name}: {site} [{op}]"
            seen[key] = seen.get(key, 0) + 1
            if seen[key] > 1:
                key += f" #{seen[key]}"
            mutated = lit.template[:s] + new + lit.template[e:]
            assert mutated != lit.template, key
            out.append(FenceMutant(key, src.name, site, op, src.file, lit, mutated, s, e))
    return out


def as_runner_mutant(m: FenceMutant, tests: tuple[str, ...], todo: str | None = None
                     ) -> Mutant:
    return Mutant(m.key, f"{m.statement}: {m.site} -> {m.operator}", m.file,
                  m.literal.segment, m.replacement(), tests, todo=todo)
