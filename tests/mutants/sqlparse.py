"""A strict parser for the lease store's SQL, enough to find every predicate exactly.

Owns the grammar the statements of `supervisor/lease/sql.py`,
`supervisor/lease/members.py` and `supervisor/lease/candidates.py` use: WITH, SELECT
(FROM, LEFT JOIN ... ON, WHERE, ORDER BY, LIMIT), INSERT (VALUES or SELECT, ON CONFLICT
... DO UPDATE SET ... WHERE, DO NOTHING, RETURNING), UPDATE (SET, FROM, WHERE,
RETURNING), DELETE; expressions with OR / AND / NOT, comparisons, IS [NOT] NULL, IS
[NOT] DISTINCT FROM, `+ - * / ||`, casts, calls (`extract(f FROM x)` too), CASE,
`interval '...'`, psycopg placeholders (`%(name)s`) and `psycopg.sql` format fields
(`{}`, `{name}`), with PostgreSQL's precedence. The nodes (with their spans) are in
`sqlnodes.py`.

Anything outside this grammar raises `SqlParseError` (BETWEEN, IN, LIKE, EXISTS, an
unknown operator, a second statement, ...): a statement written in a way the parser
does not know fails loudly, never yields fewer predicates.
"""

from __future__ import annotations

from collections.abc import Callable

from tests.mutants.sqlnodes import (
    COMPARISONS,
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
    SqlParseError,
    Statement,
    Subquery,
    Token,
    tokenize,
)

# ---------------------------------------------------------------- parser


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0

    # -- token helpers
    def peek(self, ahead: int = 0) -> Token | None:
        j = self.i + ahead
        return self.tokens[j] if j < len(self.tokens) else None

    def at(self, *words: str, ahead: int = 0) -> bool:
        t = self.peek(ahead)
        return t is not None and (t.word in words if t.kind in ("kw", "name") else
                                  t.text in words)

    def take(self, *words: str) -> Token:
        t = self.peek()
        if t is None or not self.at(*words):
            raise self.error(f"expected {' or '.join(words)}")
        self.i += 1
        return t

    def take_kind(self, *kinds: str) -> Token:
        t = self.peek()
        if t is None or t.kind not in kinds:
            raise self.error(f"expected a {' or '.join(kinds)}")
        self.i += 1
        return t

    def error(self, what: str) -> SqlParseError:
        t = self.peek()
        where = "the end" if t is None else f"{t.text!r} at {t.start}"
        ctx = "" if t is None else f": {self.text[max(0, t.start - 40):t.start + 40]!r}"
        return SqlParseError(f"{what}, found {where}{ctx}")

    def last_end(self) -> int:
        return self.tokens[self.i - 1].end

    def done(self) -> None:
        if self.peek() is not None:
            raise self.error("unexpected text after the statement")

    # -- statements
    def statement(self) -> Statement:
        start = self.peek().start if self.peek() else 0
        parts: list[Statement] = []
        if self.at("with"):
            self.take("with")
            while True:
                self.take_kind("name")
                self.take("as")
                self.take("(")
                parts.append(self.statement())
                self.take(")")
                if not self.at(","):
                    break
                self.take(",")
        if self.at("select"):
            st = self.select()
        elif self.at("insert"):
            st = self.insert()
        elif self.at("update"):
            st = self.update()
        elif self.at("delete"):
            st = self.delete()
        else:
            raise self.error("expected SELECT, INSERT, UPDATE or DELETE")
        st.start = start
        st.parts[:0] = parts
        return st

    def new(self, verb: str) -> Statement:
        return Statement(0, 0, verb)

    def items(self, st: Statement) -> list[Node]:
        found = []
        while True:
            node = self.expr()
            st.expressions.append(node)
            found.append(node)
            if self.at("as"):
                self.take("as")
                self.take_kind("name")
            elif self.peek() is not None and self.peek().kind == "name":  # type: ignore[union-attr]
                self.take_kind("name")
            if not self.at(","):
                return found
            self.take(",")

    def select(self) -> Statement:
        st = self.new("select")
        self.take("select")
        self.items(st)
        if self.at("from"):
            self.take("from")
            self.from_items(st)
        self.where(st)
        if self.at("order"):
            self.take("order")
            self.take("by")
            while True:
                st.expressions.append(self.expr())
                if self.at("asc", "desc"):
                    self.take("asc", "desc")
                if not self.at(","):
                    break
                self.take(",")
        if self.at("limit"):
            self.take("limit")
            st.expressions.append(self.expr())
        st.end = self.last_end()
        return st

    def from_items(self, st: Statement) -> None:
        self.from_item(st)
        while True:
            if self.at(","):
                self.take(",")
                self.from_item(st)
            elif self.at("left", "join"):
                if self.at("left"):
                    self.take("left")
                self.take("join")
                self.from_item(st)
                self.take("on")
                st.roots.append(self.expr())
            else:
                return

    def from_item(self, st: Statement) -> None:
        if self.at("("):
            open_ = self.take("(")
            sub = self.statement()
            self.take(")")
            sub.start, sub.end = open_.start, self.last_end()
            st.parts.append(sub)
        else:
            st.expressions.append(self.primary())
        self.alias()

    def alias(self) -> str | None:
        if self.at("as"):
            self.take("as")
        t = self.peek()
        if t is None or t.kind != "name":
            return None
        self.i += 1
        if self.at("("):  # a column list: AS c(name)
            self.take("(")
            self.names()
        return t.text

    def names(self) -> list[str]:
        found = [self.take_kind("name").text]
        while self.at(","):
            self.take(",")
            found.append(self.take_kind("name").text)
        self.take(")")
        return found

    def where(self, st: Statement) -> None:
        if self.at("where"):
            self.take("where")
            st.roots.append(self.expr())

    def returning(self, st: Statement) -> None:
        if self.at("returning"):
            self.take("returning")
            self.items(st)

    def target(self) -> str | None:
        self.take_kind("fmt", "name")
        if self.at("as"):
            self.take("as")
            return self.take_kind("name").text
        return None

    def insert(self) -> Statement:
        st = self.new("insert")
        self.take("insert")
        self.take("into")
        alias = self.target()
        self.take("(")
        columns = self.names()
        if self.at("values"):
            self.take("values")
            self.take("(")
            values = [self.expr()]
            while self.at(","):
                self.take(",")
                values.append(self.expr())
            self.take(")")
        else:
            sub = self.select()
            values = sub.expressions[:len(columns)]
            sub.expressions = sub.expressions[len(columns):]
            st.parts.append(sub)
        if len(values) != len(columns):
            raise SqlParseError(f"{len(columns)} columns but {len(values)} values")
        st.assignments += [Assignment(c, v, "values", alias) for c, v in zip(columns, values,
                                                                               strict=True)]
        if self.at("on"):
            self.take("on")
            self.take("conflict")
            if self.at("("):  # a conflict target (the fence's bind has none)
                self.take("(")
                self.names()
            self.take("do")
            if self.at("nothing"):
                self.take("nothing")
            else:
                self.take("update")
                self.set_list(st, alias)
                self.where(st)
        self.returning(st)
        st.end = self.last_end()
        return st

    def set_list(self, st: Statement, alias: str | None) -> None:
        self.take("set")
        while True:
            column = self.take_kind("name").text
            self.take("=")
            st.assignments.append(Assignment(column, self.expr(), "set", alias))
            if not self.at(","):
                return
            self.take(",")

    def update(self) -> Statement:
        st = self.new("update")
        self.take("update")
        alias = self.target()
        self.set_list(st, alias)
        if self.at("from"):
            self.take("from")
            self.from_items(st)
        self.where(st)
        self.returning(st)
        st.end = self.last_end()
        return st

    def delete(self) -> Statement:
        st = self.new("delete")
        self.take("delete")
        self.take("from")
        self.target()
        self.where(st)
        self.returning(st)
        st.end = self.last_end()
        return st

    # -- expressions, lowest precedence first (PostgreSQL's order)
    def expr(self) -> Node:
        return self.boolean("or", self.and_expr)

    def and_expr(self) -> Node:
        return self.boolean("and", self.not_expr)

    def boolean(self, op: str, operand: Callable[[], Node]) -> Node:
        first: Node = operand()
        items = [first]
        while self.at(op):
            self.take(op)
            items.append(operand())
        if len(items) == 1:
            return first
        return BoolOp(items[0].start, items[-1].end, op, items)

    def not_expr(self) -> Node:
        if self.at("not"):
            t = self.take("not")
            inner = self.not_expr()
            return Not(t.start, inner.end, inner)
        return self.is_expr()

    def is_expr(self) -> Node:
        left = self.cmp_expr()
        if not self.at("is"):
            return left
        is_ = self.take("is")
        words = ["is"]
        if self.at("not"):
            self.take("not")
            words.append("not")
        if self.at("null"):
            self.take("null")
            return Compare(left.start, self.last_end(), " ".join([*words, "null"]), left,
                           None, is_.start, self.last_end())
        self.take("distinct")
        self.take("from")
        op_end = self.last_end()
        right = self.cmp_expr()
        return Compare(left.start, right.end, " ".join([*words, "distinct", "from"]), left,
                       right, is_.start, op_end)

    def cmp_expr(self) -> Node:
        left = self.arith(0)
        t = self.peek()
        if t is not None and t.kind == "op" and t.text in COMPARISONS:
            self.i += 1
            right = self.arith(0)
            return Compare(left.start, right.end, t.text, left, right, t.start, t.end)
        return left

    _LEVELS = (("||",), ("+", "-"), ("*", "/"))

    def arith(self, level: int) -> Node:
        if level == len(self._LEVELS):
            return self.postfix()
        left = self.arith(level + 1)
        while True:
            t = self.peek()
            if t is None or t.kind != "op" or t.text not in self._LEVELS[level]:
                return left
            self.i += 1
            right = self.arith(level + 1)
            left = BinOp(left.start, right.end, t.text, left, right)

    def postfix(self) -> Node:
        node = self.primary()
        while self.at("::"):
            self.take("::")
            type_name = self.take_kind("name", "kw").text
            if self.at("["):
                self.take("[")
                self.take("]")
                type_name += "[]"
            node = Cast(node.start, self.last_end(), node, type_name)
        return node

    def primary(self) -> Node:
        t = self.peek()
        if t is None:
            raise self.error("expected an expression")
        if t.kind in ("param", "fmt", "str", "num"):
            self.i += 1
            return Leaf(t.start, t.end, t.kind, t.text)
        if t.kind == "kw" and t.word in ("null", "true", "false"):
            self.i += 1
            return Leaf(t.start, t.end, t.word, t.text)
        if t.kind == "kw" and t.word == "interval":
            self.i += 1
            lit = self.take_kind("str")
            return Interval(t.start, lit.end, lit.text)
        if t.kind == "kw" and t.word == "case":
            return self.case()
        if t.text == "*":
            self.i += 1
            return Leaf(t.start, t.end, "star", t.text)
        if t.text == "(":
            self.i += 1
            if self.at("select"):
                sub = self.statement()
                self.take(")")
                return Subquery(t.start, self.last_end(), sub)
            inner = self.expr()
            self.take(")")
            return Paren(t.start, self.last_end(), inner)
        if t.kind == "name":
            self.i += 1
            if self.at("("):
                return self.call(t)
            return Leaf(t.start, t.end, "name", t.text)
        raise self.error("expected an expression")

    def call(self, name: Token) -> Node:
        self.take("(")
        args: list[Node] = []
        if name.word == "extract":
            args.append(Leaf(self.peek().start, self.peek().end, "name",  # type: ignore[union-attr]
                             self.take_kind("name", "kw").text))
            self.take("from")
            args.append(self.expr())
        elif not self.at(")"):
            args.append(self.expr())
            while self.at(","):
                self.take(",")
                args.append(self.expr())
        self.take(")")
        return Call(name.start, self.last_end(), name.word, args)

    def case(self) -> Node:
        start = self.take("case").start
        whens: list[tuple[Node, Node]] = []
        while self.at("when"):
            self.take("when")
            cond = self.expr()
            self.take("then")
            whens.append((cond, self.expr()))
        if not whens:
            raise self.error("expected WHEN")
        else_ = None
        if self.at("else"):
            self.take("else")
            else_ = self.expr()
        self.take("end")
        return Case(start, self.last_end(), whens, else_)


def parse_statement(text: str) -> Parsed:
    p = _Parser(text)
    tree = p.statement()
    p.done()
    return Parsed(text, tree, p.tokens)


def parse_expression(text: str) -> Parsed:
    p = _Parser(text)
    tree = p.expr()
    p.done()
    return Parsed(text, tree, p.tokens)
