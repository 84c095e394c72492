"""The lease store's SQL as tokens and nodes (`sqlparse.py` builds them).

Every node keeps its span (start, end) in the statement text, so a mutation is a
splice of the original text. `tokenize` refuses any character it does not know.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

KEYWORDS = frozenset({
    "all", "and", "as", "asc", "by", "case", "conflict", "delete", "desc", "distinct", "do",
    "else", "end", "exists", "false", "from", "in", "insert", "interval", "into", "is",
    "join", "left", "limit", "not", "nothing", "null", "on", "or", "order", "returning",
    "select", "set", "then", "true", "update", "using", "values", "when", "where", "with",
})

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<param>%\([A-Za-z_][A-Za-z0-9_]*\)s)
  | (?P<fmt>\{[A-Za-z_0-9]*\})
  | (?P<str>'(?:[^']|'')*')
  | (?P<num>\d+(?:\.\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<op><>|<=|>=|::|\|\||[=<>+\-*/])
  | (?P<punct>[(),\[\]]|\.\*)
""", re.X)

COMPARISONS = ("=", "<>", "<", "<=", ">", ">=")


class SqlParseError(Exception):
    """The text is outside the grammar this module knows."""


@dataclass(frozen=True)
class Token:
    kind: str  # param fmt str num name kw op punct
    text: str
    start: int
    end: int

    @property
    def word(self) -> str:
        return self.text.lower()


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
            if kind == "name" and m.group().lower() in KEYWORDS:
                kind = "kw"
            tokens.append(Token(kind, m.group(), m.start(), m.end()))
        pos = m.end()
    return tokens


# ---------------------------------------------------------------- nodes


@dataclass
class Node:
    start: int
    end: int


@dataclass
class Leaf(Node):
    """A name, placeholder, format field, literal, or `*`."""
    kind: str
    text: str


@dataclass
class Interval(Node):
    literal: str  # with its quotes


@dataclass
class Call(Node):
    name: str
    args: list[Node]


@dataclass
class Cast(Node):
    expr: Node
    type_name: str


@dataclass
class BinOp(Node):
    op: str
    left: Node
    right: Node


@dataclass
class Paren(Node):
    inner: Node


@dataclass
class Compare(Node):
    op: str  # one of COMPARISONS, "is null", "is not null", "is distinct from", ...
    left: Node
    right: Node | None  # None for IS [NOT] NULL
    op_start: int
    op_end: int


@dataclass
class BoolOp(Node):
    op: str  # "and" | "or"
    items: list[Node]


@dataclass
class Not(Node):
    inner: Node


@dataclass
class Case(Node):
    whens: list[tuple[Node, Node]]
    else_: Node | None


@dataclass
class Subquery(Node):
    statement: Statement


@dataclass
class Assignment:
    column: str
    value: Node
    kind: str  # "set" (an UPDATE's or ON CONFLICT's SET) | "values" (a new row's value)
    # | ":=" (a PL/pgSQL assignment) | "DECLARE" (a PL/pgSQL variable's default)
    target_alias: str | None  # the written table's alias (for the column's old value)


@dataclass
class Statement(Node):
    """One statement: its boolean roots (WHERE, ON, CASE WHEN and boolean items found in
    any expression) and its assignments, including those of WITH parts and subqueries."""
    verb: str
    roots: list[Node] = field(default_factory=list)  # WHERE / ON clause expressions
    expressions: list[Node] = field(default_factory=list)  # every other expression
    assignments: list[Assignment] = field(default_factory=list)
    parts: list[Statement] = field(default_factory=list)  # WITH parts, subqueries


@dataclass
class Parsed:
    text: str
    tree: Statement | Node
    tokens: list[Token]
