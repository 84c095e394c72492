"""A strict parser for the database fence's PL/pgSQL, its policies and Corda's lock row SQL.

Owns the grammar of the function bodies of `supervisor/lease/fence_sql.py` and
`fence_check.py` (DECLARE with defaults; IF / ELSIF / ELSE, FOR ... IN SELECT ... LOOP,
WHILE ... LOOP, EXIT [WHEN], RETURN [NEXT], RAISE EXCEPTION ['...', args] [USING ...],
PERFORM, EXECUTE, SELECT ... INTO, UPDATE [ONLY], INSERT ... ON CONFLICT DO NOTHING,
`:=`), of the `CREATE POLICY` statements of `ownership.py` and `fence_sql.py`, and of
`supervisor/lease/cordarow.py`'s statements. It extends `sqlparse._Parser` (whose
expression grammar it keeps) with: `@NAME@` placeholders (also as a called function's
name), f-string fields (`{q(self.access)}`), positional `%s`, `--` comments, adjacent
string literals, `x [NOT] IN (list | subquery)`, `EXISTS (subquery)`, `FROM ONLY`,
plain `JOIN`, `FOR SHARE` / `FOR UPDATE [OF t]`.

What it builds is what `sqlgen.sites` walks: one `Statement` for the whole body, whose
`parts` are the statements inside (a control-flow statement's condition is a root, like a
WHERE), whose assignments are every `:=` (kind ":=") and every DECLARE default (kind
"DECLARE"). `Block.branches` lists the conditions of IF, ELSIF, WHILE and EXIT WHEN, which
also get a mutant that never takes the branch. `x IN (a, b)` is a `Compare` (op "in" or
"not in") whose right side is a `Call` named "(list)"; `EXISTS (...)` a `Call` named
"exists". Anything else raises `SqlParseError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from tests.mutants.sqlnodes import (
    COMPARISONS,
    KEYWORDS,
    Assignment,
    Call,
    Compare,
    Leaf,
    Node,
    SqlParseError,
    Statement,
    Subquery,
    Token,
)
from tests.mutants.sqlparse import _Parser

_TOKEN = re.compile(r"""
    (?P<ws>\s+|--[^\n]*)
  | (?P<param>%\([A-Za-z_][A-Za-z0-9_]*\)s|%s)
  | (?P<ph>@[A-Z_]+@)
  | (?P<fmt>\{[^{}]*\})
  | (?P<str>'(?:[^']|'')*')
  | (?P<num>\d+(?:\.\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<op>:=|<>|<=|>=|::|\|\||[=<>+\-*/])
  | (?P<punct>[(),\[\];]|\.\*)
""", re.X)

#: words that end an expression in PL/pgSQL (never an alias)
_STOP = frozenset({"loop", "for", "into", "using", "then", "elsif", "only"})


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise SqlParseError(f"unexpected character {text[pos]!r} at {pos}: "
                                f"{text[max(0, pos - 30):pos + 30]!r}")
        kind = m.lastgroup or ""
        if kind != "ws":
            word = m.group().lower()
            if kind == "name" and (word in KEYWORDS or word in _STOP):
                kind = "kw"
            tokens.append(Token(kind, m.group(), m.start(), m.end()))
        pos = m.end()
    return tokens


@dataclass
class Block:
    """A parsed body (or policy, or statement): the tree `sqlgen.sites` walks, and the
    branch conditions (IF, ELSIF, WHILE, EXIT WHEN)."""

    text: str
    tree: Statement
    tokens: list[Token]
    branches: list[Node] = field(default_factory=list)
    labels: list[tuple[int, int, str]] = field(default_factory=list)  # a policy's clauses
    order_by: list[tuple[int, int]] = field(default_factory=list)  # the spans of ORDER BY keys

    def label(self, pos: int) -> str:
        """"USING: " or "WITH CHECK: " for a position in a policy's clause, else ""."""
        return next((f"{name}: " for s, e, name in self.labels if s <= pos < e), "")


class _PlParser(_Parser):
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0
        self.branches: list[Node] = []
        self.labels: list[tuple[int, int, str]] = []
        self.order_by: list[tuple[int, int]] = []

    # -- expressions: what the lease store's SQL does not use
    def primary(self) -> Node:
        t = self.peek()
        if t is not None and t.kind == "ph":
            self.i += 1
            if self.at("("):
                return self.call(t)
            return Leaf(t.start, t.end, "ph", t.text)
        if t is not None and t.kind == "str":
            end = self.take_kind("str").end
            while self.peek() is not None and self.peek().kind == "str":  # type: ignore[union-attr]
                end = self.take_kind("str").end  # 'a' 'b': one literal (across a newline)
            return Leaf(t.start, end, "str", self.text[t.start:end])
        if t is not None and t.word == "exists":
            self.i += 1
            open_ = self.take("(")
            sub = self.statement()
            self.take(")")
            node = Subquery(open_.start, self.last_end(), sub)
            return Call(t.start, node.end, "exists", [node])
        return super().primary()

    def cmp_expr(self) -> Node:
        left = self.arith(0)
        t = self.peek()
        if t is not None and (self.at("in") or (self.at("not") and self.at("in", ahead=1))):
            op = "not in" if self.at("not") else "in"
            self.i += 2 if op == "not in" else 1
            op_end = self.last_end()
            right = self.in_list()
            return Compare(left.start, right.end, op, left, right, t.start, op_end)
        if t is not None and t.kind == "op" and t.text in COMPARISONS:
            self.i += 1
            right = self.arith(0)
            return Compare(left.start, right.end, t.text, left, right, t.start, t.end)
        return left

    def in_list(self) -> Node:
        open_ = self.take("(")
        if self.at("select"):
            sub = self.statement()
            self.take(")")
            return Subquery(open_.start, self.last_end(), sub)
        items = [self.expr()]
        while self.at(","):
            self.take(",")
            items.append(self.expr())
        self.take(")")
        return Call(open_.start, self.last_end(), "(list)", items)

    # -- SQL statements: what the lease store's SQL does not use
    def statement(self) -> Statement:
        if self.at("select", "perform"):
            return self.select()
        return super().statement()

    def select(self) -> Statement:
        st = self.new("select")
        st.start = self.take("select", "perform").start
        self.items(st)
        if self.at("into"):
            self.take("into")
            self.take_kind("name")
        if self.at("from"):
            self.take("from")
            self.from_items(st)
        self.where(st)
        if self.at("order"):
            self.take("order")
            self.take("by")
            while True:
                st.expressions.append(self.expr())
                self.order_by.append((st.expressions[-1].start, st.expressions[-1].end))
                if self.at("asc", "desc"):
                    self.take("asc", "desc")
                if not self.at(","):
                    break
                self.take(",")
        if self.at("limit"):
            self.take("limit")
            st.expressions.append(self.expr())
        if self.at("for"):
            self.take("for")
            self.take("share", "update")
            if self.at("of"):
                self.take("of")
                self.take_kind("name")
        st.end = self.last_end()
        return st

    def from_item(self, st: Statement) -> None:
        if self.at("only"):
            self.take("only")
        t = self.peek()
        if t is not None and t.kind == "ph":
            self.i += 1
            st.expressions.append(Leaf(t.start, t.end, "ph", t.text))
            self.alias()
            return
        super().from_item(st)

    def target(self) -> str | None:
        if self.at("only"):
            self.take("only")
        self.take_kind("fmt", "name", "ph")
        if self.at("as"):
            self.take("as")
        t = self.peek()
        if t is not None and t.kind == "name":
            self.i += 1
            return t.text
        return None

    # -- PL/pgSQL
    def body(self) -> Statement:
        """DECLARE ... BEGIN ... END (the text of a dollar-quoted function body)."""
        top = Statement(self.peek().start if self.peek() else 0, 0, "block")
        if self.at("declare"):
            self.take("declare")
            while not self.at("begin"):
                name = self.take_kind("name").text
                while not self.at(":=", ";"):
                    self.i += 1  # the type's tokens
                    if self.peek() is None:
                        raise self.error("expected := or ;")
                if self.at(":="):
                    self.take(":=")
                    top.assignments.append(Assignment(name, self.expr(), "DECLARE", None))
                self.take(";")
        self.take("begin")
        top.parts += self.statements("end")
        self.take("end")
        top.end = self.last_end()
        return top

    def statements(self, *until: str) -> list[Statement]:
        found = []
        while not self.at(*until):
            if self.peek() is None:
                raise self.error(f"expected {' or '.join(until)}")
            found.append(self.pl_statement())
        return found

    def pl_statement(self) -> Statement:
        start = self.peek().start  # type: ignore[union-attr]
        if self.at("if"):
            st = self.if_()
        elif self.at("for"):
            st = self.for_()
        elif self.at("while"):
            st = Statement(start, 0, "while")
            self.take("while")
            st.roots.append(self.branch(self.expr()))
            st.parts += self.loop_body()
        elif self.at("exit"):
            st = Statement(start, 0, "exit")
            self.take("exit")
            if self.at("when"):
                self.take("when")
                st.roots.append(self.branch(self.expr()))
        elif self.at("return"):
            st = Statement(start, 0, "return")
            self.take("return")
            if self.at("next"):
                self.take("next")
            elif not self.at(";"):
                st.expressions.append(self.expr())
        elif self.at("raise"):
            st = self.raise_()
        elif self.at("execute"):
            st = Statement(start, 0, "execute")
            self.take("execute")
            st.expressions.append(self.expr())
        elif self.at("select", "perform", "update", "insert", "delete"):
            st = self.statement()
        elif self.peek(1) is not None and self.at(":=", ahead=1):
            st = Statement(start, 0, "assign")
            name = self.take_kind("name").text
            self.take(":=")
            st.assignments.append(Assignment(name, self.expr(), ":=", None))
        else:
            raise self.error("expected a PL/pgSQL statement")
        self.take(";")
        st.end = self.last_end()
        return st

    def branch(self, cond: Node) -> Node:
        self.branches.append(cond)
        return cond

    def if_(self) -> Statement:
        st = Statement(self.take("if").start, 0, "if")
        st.roots.append(self.branch(self.expr()))
        self.take("then")
        st.parts += self.statements("elsif", "else", "end")
        while self.at("elsif"):
            self.take("elsif")
            st.roots.append(self.branch(self.expr()))
            self.take("then")
            st.parts += self.statements("elsif", "else", "end")
        if self.at("else"):
            self.take("else")
            st.parts += self.statements("end")
        self.take("end")
        self.take("if")
        return st

    def for_(self) -> Statement:
        st = Statement(self.take("for").start, 0, "for")
        self.take_kind("name")
        self.take("in")
        st.parts.append(self.select())
        st.parts += self.loop_body()
        return st

    def loop_body(self) -> list[Statement]:
        self.take("loop")
        found = self.statements("end")
        self.take("end")
        self.take("loop")
        return found

    def raise_(self) -> Statement:
        st = Statement(self.take("raise").start, 0, "raise")
        self.take("exception")
        if self.peek() is not None and self.peek().kind == "str":  # type: ignore[union-attr]
            st.expressions.append(self.primary())  # the message
            while self.at(","):
                self.take(",")
                st.expressions.append(self.expr())
        if self.at("using"):
            self.take("using")
            while True:
                self.take("errcode", "message")
                self.take("=")
                st.expressions.append(self.expr())
                if not self.at(","):
                    break
                self.take(",")
        return st

    # -- CREATE POLICY
    def policy(self) -> Statement:
        st = Statement(self.take("create").start, 0, "policy")
        self.take("policy")
        self.take_kind("fmt", "name")
        self.take("on")
        self.take_kind("fmt", "name")
        if self.at("for"):
            self.take("for")
            self.take("select", "update", "insert", "delete", "all")
        if self.at("to"):
            self.take("to")
            self.take_kind("fmt", "name")
        self.take("using")
        st.roots.append(self.parenthesised())
        self.labels.append((st.roots[-1].start, st.roots[-1].end, "USING"))
        if self.at("with"):
            self.take("with")
            self.take("check")
            st.roots.append(self.parenthesised())
            self.labels.append((st.roots[-1].start, st.roots[-1].end, "WITH CHECK"))
        st.end = self.last_end()
        return st

    def parenthesised(self) -> Node:
        self.take("(")
        node = self.expr()
        self.take(")")
        return node


def parse_body(text: str) -> Block:
    """A function body: DECLARE ... BEGIN ... END."""
    p = _PlParser(text)
    tree = p.body()
    p.done()
    return Block(text, tree, p.tokens, p.branches, order_by=p.order_by)


def parse_policy(text: str) -> Block:
    """A `CREATE POLICY` statement: USING and WITH CHECK are its roots."""
    p = _PlParser(text)
    tree = p.policy()
    p.done()
    return Block(text, tree, p.tokens, labels=p.labels)


def parse_condition(text: str) -> Block:
    """A policy's condition on its own (an f-string a policy embeds): one root."""
    p = _PlParser(text)
    node = p.expr()
    p.done()
    return Block(text, Statement(node.start, node.end, "condition", roots=[node]), p.tokens)


def parse_sql(text: str) -> Block:
    """One SQL statement (Corda's lock row statements)."""
    p = _PlParser(text)
    tree = p.statement()
    p.done()
    return Block(text, tree, p.tokens, order_by=p.order_by)
