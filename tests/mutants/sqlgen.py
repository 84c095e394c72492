"""Generated SQL mutants: one per predicate, comparison, time bound and assigned column
of every statement the lease store runs.

The statements are read from the source (`supervisor/lease/sql.py`,
`supervisor/lease/members.py`, the `handover --at` schedule's
`supervisor/lease/candidates.py`: each `sql.SQL("...")` literal, by the name it is
assigned to) and parsed (`tests/mutants/sqlparse.py`, strict: an unknown construct raises).
`STATEMENTS` names those that carry a rule; `EXCLUDED` names the others, with why. A
literal in neither list fails `tests/test_sql_generated_mutants.py`.

Operators (the part of a mutant's key in brackets):

- `true`: a condition (an operand of AND / OR, a whole WHERE / ON / CASE WHEN, a
  boolean output column) replaced by TRUE: the condition dropped;
- `false`: an alternative of an OR (a condition or a parenthesised group) replaced by
  FALSE: the alternative dropped;
- `not`: a bare boolean condition (a parameter, a function) negated;
- `op X`: a comparison turned into X (`>` into `>=` and `<`, `=` into `<>`,
  IS [NOT] NULL and IS [NOT] DISTINCT FROM into their opposites, ...);
- `bound x2`, `bound /2`, `bound dropped`: a time bound added to or taken from a time
  (`+ %(w)s`, `+ 2 * %(w)s`, `- %(retention)s`) doubled, halved, removed;
- `clock -1s`, `clock +1s`: the clock read of a comparison (`clock_timestamp()`,
  `n.now`) moved by a second;
- `old`, `null`: an assigned column (SET, or the value of a new row) given its old
  value (the column itself) or NULL; `first dropped`: `coalesce(a, b)` / `least(a, b)`
  assigned as `b`.

A mutant's key is `<statement>: <site> [<operator>]` (the site is the condition's text,
or `SET col` / `VALUES col`); a second identical key gets ` #2`. `generate()` returns
them all; `as_runner_mutant` makes one a `tests.mutants.runner.Mutant` that rewrites
the statement's literal in the source file.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.mutants.runner import REPO, Mutant
from tests.mutants.sqlnodes import (
    Assignment,
    BinOp,
    BoolOp,
    Call,
    Case,
    Cast,
    Compare,
    Interval,
    Leaf,
    Node,
    Not,
    Paren,
    Parsed,
    Statement,
    Subquery,
)
from tests.mutants.sqlparse import parse_expression, parse_statement

SQL_FILE = "supervisor/lease/sql.py"
MEMBERS_FILE = "supervisor/lease/members.py"
SCHEDULE_FILE = "supervisor/lease/candidates.py"
SOURCES = {SQL_FILE: "", MEMBERS_FILE: "members.", SCHEDULE_FILE: "schedule."}

#: statements that carry a rule: all of them are mutated
STATEMENTS = ("SERVER_ID", "observe", "acquire", "renew", "release", "request_handover",
              "set_paused", "record_acquired", "record_ended", "read_history",
              "members.upsert", "members.select", "schedule.settle", "schedule.set",
              "schedule.read")

#: literals that are not mutated, and why
EXCLUDED = {
    "create_schema": "DDL (CREATE SCHEMA), no predicate",
    "create_table": "DDL (CREATE TABLE), no predicate",
    "add_columns#1": "DDL fragment (ALTER TABLE), no predicate",
    "add_columns#2": "DDL fragment (a separator)",
    "add_columns#3": "DDL fragment (ADD COLUMN)",
    "missing_columns": "schema upkeep of `ensure_schema` (which added columns exist); not "
                       "a lease rule, and a wrong answer fails the next statement loudly",
    "create_history": "DDL (CREATE TABLE), no predicate",
    "members.create_table": "DDL (CREATE TABLE), no predicate",
    "members.add_columns#1": "DDL fragment (ALTER TABLE), no predicate",
    "members.add_columns#2": "DDL fragment (a separator)",
    "members.add_columns#3": "DDL fragment (ADD COLUMN)",
}

CLOCK_READS = ("clock_timestamp()", "n.now")
_FLIPS = {"=": ("<>",), "<>": ("=",), ">": (">=", "<"), ">=": (">", "<"), "<": ("<=", ">"),
          "<=": ("<", ">"), "is null": ("is not null",), "is not null": ("is null",),
          "is distinct from": ("is not distinct from",),
          "is not distinct from": ("is distinct from",), "in": ("not in",),
          "not in": ("in",)}


@dataclass(frozen=True)
class SourceStatement:
    """One `sql.SQL("...")` literal: the name it is assigned to, where, its text."""

    name: str
    file: str
    literal: str  # the literal's exact source text (unique in its file)
    text: str  # the SQL


@dataclass(frozen=True)
class SqlMutant:
    key: str
    statement: str
    site: str
    operator: str
    file: str
    literal: str
    mutated: str  # the statement's new SQL text
    start: int  # the replaced span of the statement's text
    end: int

    def replacement(self) -> str:
        """The new literal's source text."""
        if self.literal.startswith('"""'):
            assert '"""' not in self.mutated and "\\" not in self.mutated, self.key
            return f'"""{self.mutated}"""'
        return repr(self.mutated)


def source_statements(repo: Path = REPO) -> list[SourceStatement]:
    """Every `sql.SQL(<string literal>)` of the source files, named by its assignment."""
    found: list[SourceStatement] = []
    for file, prefix in SOURCES.items():
        source = (repo / file).read_text()
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, ast.Assign) or len(node.targets) != 1:
                continue
            target = node.targets[0]
            name = (target.attr if isinstance(target, ast.Attribute) else
                    target.id if isinstance(target, ast.Name) else None)
            if name is None:
                continue
            literals = [c.args[0] for c in ast.walk(node.value) if isinstance(c, ast.Call)
                        and isinstance(c.func, ast.Attribute) and c.func.attr == "SQL"
                        and c.args and isinstance(c.args[0], ast.Constant)
                        and isinstance(c.args[0].value, str)]
            literals.sort(key=lambda c: (c.lineno, c.col_offset))
            for i, lit in enumerate(literals, 1):
                segment = ast.get_source_segment(source, lit)
                assert segment is not None and isinstance(lit, ast.Constant)
                label = prefix + name + (f"#{i}" if len(literals) > 1 else "")
                found.append(SourceStatement(label, file, segment, str(lit.value)))
    return found


def parse(st: SourceStatement) -> Parsed:
    return parse_expression(st.text) if st.name == "SERVER_ID" else parse_statement(st.text)


def norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


# ---------------------------------------------------------------- finding the sites


def _children(node: Node) -> Iterator[Node]:
    match node:
        case Call(args=args):
            yield from args
        case Cast(expr=e) | Paren(inner=e) | Not(inner=e):
            yield e
        case BinOp(left=a, right=b):
            yield a
            yield b
        case Compare(left=a, right=b):
            yield a
            if b is not None:
                yield b
        case BoolOp(items=items):
            yield from items
        case Case(whens=whens, else_=e):
            for cond, result in whens:
                yield cond
                yield result
            if e is not None:
                yield e
        case _:
            return


def _is_bool(node: Node) -> bool:
    return isinstance(node, BoolOp | Not | Compare)


def _statements(st: Statement) -> Iterator[Statement]:
    yield st
    for part in st.parts:
        yield from _statements(part)
    for node in [*st.roots, *st.expressions, *(a.value for a in st.assignments)]:
        yield from _subqueries(node)


def _subqueries(node: Node) -> Iterator[Statement]:
    if isinstance(node, Subquery):
        yield from _statements(node.statement)
    for child in _children(node):
        yield from _subqueries(child)


def _roots(node: Node, forced: bool) -> Iterator[Node]:
    """Boolean roots in `node`: itself when `forced` (a WHERE, ON, CASE WHEN) or boolean;
    else those found below it, and every CASE WHEN condition."""
    if forced or _is_bool(node):
        yield node
        for child in _atoms_children(node):
            yield from _roots(child, False)
        return
    if isinstance(node, Case):
        for cond, result in node.whens:
            yield from _roots(cond, True)
            yield from _roots(result, False)
        if node.else_ is not None:
            yield from _roots(node.else_, False)
        return
    for child in _children(node):
        yield from _roots(child, False)


def _atoms_children(node: Node) -> Iterator[Node]:
    """The operands of the atoms of a boolean root (they may hold CASEs of their own)."""
    for atom, _ in _flatten(node, False):
        if not _is_group(atom):
            yield from _children(atom)


def _is_group(node: Node) -> bool:
    return isinstance(node, BoolOp) or (isinstance(node, Paren) and _is_group(node.inner))


def _flatten(node: Node, in_or: bool) -> Iterator[tuple[Node, bool]]:
    """(condition or OR-alternative group, is an OR alternative), depth first."""
    match node:
        case Paren(inner=inner):
            yield from _flatten(inner, in_or)
        case BoolOp(op="or", items=items):
            for item in items:
                if _is_group(item):
                    yield item, True
                yield from _flatten(item, True)
        case BoolOp(items=items):
            for item in items:
                yield from _flatten(item, False)
        case Not(inner=inner):
            yield from _flatten(inner, False)
        case _:
            yield node, in_or


# ---------------------------------------------------------------- the operators


def _duration(node: Node) -> bool:
    match node:
        case Leaf(kind="param") | Interval():
            return True
        case BinOp(op="*", left=Leaf(kind="num"), right=Leaf(kind="param")):
            return True
        case BinOp(op="*", left=Leaf(kind="param" | "name"), right=Interval()):
            return True  # p_wait_ms * interval '1 millisecond'
    return False


def _bounds(node: Node) -> Iterator[BinOp]:
    if isinstance(node, Subquery):
        return
    if isinstance(node, BinOp) and node.op in "+-" and _duration(node.right):
        yield node
    for child in _children(node):
        yield from _bounds(child)


def _calls(node: Node, names: tuple[str, ...]) -> Iterator[Call]:
    if isinstance(node, Call) and node.name in names and len(node.args) == 2:
        yield node
    for child in _children(node):
        yield from _calls(child, names)


def _bound_ops(text: str, b: BinOp) -> Iterator[tuple[str, int, int, str]]:
    """(operator, start, end, replacement) for one time bound."""
    r = b.right
    if isinstance(r, BinOp) and isinstance(r.right, Interval):
        r = r.right  # n * interval '1 unit': the unit doubled
    if isinstance(r, Leaf):
        yield "bound x2", r.start, r.end, f"2 * {r.text}"
    elif isinstance(r, BinOp):
        assert isinstance(r.left, Leaf) and isinstance(r.right, Leaf)
        k = float(r.left.text)
        yield "bound x2", r.start, r.end, f"{_num(2 * k)} * {r.right.text}"
        yield ("bound /2", r.start, r.end,
               r.right.text if k == 2 else f"{_num(k / 2)} * {r.right.text}")
    elif isinstance(r, Interval):
        m = re.fullmatch(r"'(\d+(?:\.\d+)?) (\w+)'", r.literal)
        assert m is not None, r.literal
        yield "bound x2", r.start, r.end, f"interval '{_num(2 * float(m[1]))} {m[2]}'"
    yield "bound dropped", b.start, b.end, text[b.left.start:b.left.end]


def _num(x: float) -> str:
    return str(int(x)) if x == int(x) else str(x)


def _clock(node: Node) -> Node | None:
    """The clock read an operand compares, under its time bounds and parentheses."""
    while True:
        if isinstance(node, BinOp) and node.op in "+-" and _duration(node.right):
            node = node.left
        elif isinstance(node, Paren):
            node = node.inner
        else:
            break
    if isinstance(node, Call) and node.name == "clock_timestamp" and not node.args:
        return node
    if isinstance(node, Leaf) and node.kind == "name" and node.text in CLOCK_READS:
        return node
    return None


def _atom_ops(text: str, atom: Node, in_or: bool) -> Iterator[tuple[str, int, int, str]]:
    s, e = atom.start, atom.end
    if _is_group(atom):
        yield "false", s, e, "FALSE"
        return
    if not (isinstance(atom, Leaf) and atom.kind == "true"):
        yield "true", s, e, "TRUE"
    if in_or:
        yield "false", s, e, "FALSE"
    if not isinstance(atom, Compare):
        yield "not", s, e, f"NOT ({text[s:e]})"
        return
    for flip in _FLIPS[atom.op]:
        yield f"op {flip.upper()}", atom.op_start, atom.op_end, flip.upper()
    if atom.right is None:
        return
    for operand in (atom.left, atom.right):
        clock = _clock(operand)
        if clock is not None:
            read = text[clock.start:clock.end]
            for sign in "-+":
                yield (f"clock {sign}1s", clock.start, clock.end,
                       f"({read} {sign} interval '1 second')")
        for b in _bounds(operand):
            yield from _bound_ops(text, b)


def _assignment_ops(text: str, st: Statement) -> Iterator[tuple[str, str, int, int, str]]:
    for a in st.assignments:
        v = a.value
        site = _assigned(a)
        is_null = isinstance(v, Leaf) and v.kind == "null"
        if a.kind in ("set", ":="):
            old = f"{a.target_alias}.{a.column}" if a.target_alias else a.column
            if norm(text[v.start:v.end]) not in (old, a.column):
                yield site, "old", v.start, v.end, old
        if not is_null:
            yield site, "null", v.start, v.end, "NULL"
        for c in _calls(v, ("coalesce", "least")):
            last = c.args[-1]
            yield site, "first dropped", c.start, c.end, text[last.start:last.end]
        for b in _bounds(v):
            for op, s, e, new in _bound_ops(text, b):
                yield site, op, s, e, new


def sites(parsed: Parsed) -> Iterator[tuple[str, str, int, int, str]]:
    """(site, operator, start, end, replacement) for every mutation of one statement."""
    text = parsed.text
    tree = parsed.tree
    if not isinstance(tree, Statement):  # an expression (SERVER_ID)
        for root in _roots(tree, False):
            for atom, in_or in _flatten(root, False):
                for op, s, e, new in _atom_ops(text, atom, in_or):
                    yield norm(text[atom.start:atom.end]), op, s, e, new
        return
    for st in _statements(tree):
        roots = [("", r) for n in st.roots for r in _roots(n, True)]
        roots += [("", r) for n in st.expressions for r in _roots(n, False)]
        roots += [(f"{_assigned(a)}: ", r) for a in st.assignments
                  for r in _roots(a.value, False)]
        for prefix, root in roots:
            for atom, in_or in _flatten(root, False):
                for op, s, e, new in _atom_ops(text, atom, in_or):
                    yield prefix + norm(text[atom.start:atom.end]), op, s, e, new
        yield from _assignment_ops(text, st)


def _assigned(a: Assignment) -> str:
    label = {"set": "SET", "values": "VALUES"}.get(a.kind, a.kind)  # PL/pgSQL: := DECLARE
    return f"{label} {a.column}"


def generate(repo: Path = REPO) -> list[SqlMutant]:
    """Every generated mutant, in statement order; keys unique."""
    by_name = {st.name: st for st in source_statements(repo)}
    missing = [name for name in STATEMENTS if name not in by_name]
    if missing:
        raise LookupError(f"statements not found in the source: {missing}")
    mutants: list[SqlMutant] = []
    seen: dict[str, int] = {}
    for name in STATEMENTS:
        st = by_name[name]
        parsed = parse(st)
        for site, op, s, e, new in sites(parsed):
            key = f"{name}: {site} [{op}]"
            seen[key] = seen.get(key, 0) + 1
            if seen[key] > 1:
                key += f" #{seen[key]}"
            mutated = st.text[:s] + new + st.text[e:]
            assert mutated != st.text, key
            mutants.append(SqlMutant(key, name, site, op, st.file, st.literal, mutated, s, e))
    return mutants


def as_runner_mutant(m: SqlMutant, tests: tuple[str, ...]) -> Mutant:
    return Mutant(m.key, f"{m.statement}: {m.site} -> {m.operator}", m.file, m.literal,
                  m.replacement(), tests)
