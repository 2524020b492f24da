"""Row filters for CSV sources: a small declared language, parsed, never evaluated as Python.

A dashboard definition or a CSV source is data a user may have cloned from anywhere, so its
filter must not reach ``DataFrame.query``/``eval`` (whose ``@name`` lookups walk to
``os.system``). The grammar is deliberately tiny::

    expr       := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | "(" expr ")" | comparison | column
    comparison := column OP literal | literal OP column      OP: == != < <= > >=
    column     := identifier | `any name in backticks`
    literal    := number | 'string' | "string" | true | false

A bare column is a boolean column (``not outlier``). Anything else is a ``ValueError`` naming
the position, raised by :func:`parse_filter` before any file is read.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scalelab.lazy_imports import lazy_module

pd = lazy_module("pandas")


_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}
# Reversing a comparison lets ``3 < col`` be evaluated as ``col > 3``.
_FLIP = {"==": "==", "!=": "!=", "<=": ">=", ">=": "<=", "<": ">", ">": "<"}
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![A-Za-z_]))
      | (?P<string>'[^'\\]*'|"[^"\\]*")
      | (?P<backtick>`[^`]+`)
      | (?P<op>==|!=|<=|>=|<|>)
      | (?P<paren>[()])
      | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "true", "false", "True", "False"}


@dataclass(frozen=True)
class Compare:
    column: str
    op: str
    value: float | str | bool


@dataclass(frozen=True)
class Column:
    """A boolean column used bare."""

    column: str


@dataclass(frozen=True)
class Not:
    inner: Node


@dataclass(frozen=True)
class BoolOp:
    op: str  # "and" | "or"
    parts: tuple[Node, ...]


Node = Compare | Column | Not | BoolOp


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise ValueError(f"filter {text!r}: unexpected {text[pos:].strip()[:20]!r} at {pos}")
        kind = match.lastgroup or ""
        out.append((kind, match.group(kind), match.start(kind)))
        pos = match.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.i = 0

    def _peek(self) -> tuple[str, str, int] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def _fail(self, what: str) -> ValueError:
        tok = self._peek()
        where = f"{tok[1]!r} at {tok[2]}" if tok else "the end"
        return ValueError(f"filter {self.text!r}: expected {what}, found {where}")

    def _take_word(self, word: str) -> bool:
        tok = self._peek()
        if tok and tok[0] == "word" and tok[1] == word:
            self.i += 1
            return True
        return False

    def parse(self) -> Node:
        node = self._or()
        if self._peek() is not None:
            raise self._fail("'and', 'or' or the end")
        return node

    def _or(self) -> Node:
        parts = [self._and()]
        while self._take_word("or"):
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else BoolOp("or", tuple(parts))

    def _and(self) -> Node:
        parts = [self._not()]
        while self._take_word("and"):
            parts.append(self._not())
        return parts[0] if len(parts) == 1 else BoolOp("and", tuple(parts))

    def _not(self) -> Node:
        if self._take_word("not"):
            return Not(self._not())
        tok = self._peek()
        if tok and tok[0] == "paren" and tok[1] == "(":
            self.i += 1
            node = self._or()
            tok = self._peek()
            if not (tok and tok[1] == ")"):
                raise self._fail("')'")
            self.i += 1
            return node
        return self._comparison()

    def _operand(self) -> tuple[str, Any]:
        tok = self._peek()
        if tok is None:
            raise self._fail("a column or a literal")
        kind, text, _ = tok
        if kind == "backtick":
            value: tuple[str, Any] = ("column", text[1:-1])
        elif kind == "word" and text not in _KEYWORDS:
            value = ("column", text)
        elif kind == "word" and text.lower() in ("true", "false"):
            value = ("literal", text.lower() == "true")
        elif kind == "number":
            value = ("literal", float(text))
        elif kind == "string":
            value = ("literal", text[1:-1])
        else:
            raise self._fail("a column or a literal")
        self.i += 1
        return value

    def _comparison(self) -> Node:
        left = self._operand()
        tok = self._peek()
        if not (tok and tok[0] == "op"):
            if left[0] != "column":
                raise self._fail("a comparison (==, !=, <, <=, >, >=)")
            return Column(left[1])
        self.i += 1
        right = self._operand()
        if left[0] == "column" and right[0] == "literal":
            return Compare(left[1], tok[1], right[1])
        if left[0] == "literal" and right[0] == "column":
            return Compare(right[1], _FLIP[tok[1]], left[1])
        raise ValueError(
            f"filter {self.text!r}: a comparison is a column against a literal (at {tok[2]})"
        )


def parse_filter(text: str) -> Node:
    """The parsed filter; ``ValueError`` naming the position if it is outside the grammar."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("a filter is a non-empty string such as \"source == 'x' and loss < 3\"")
    return _Parser(text).parse()


def _columns(node: Node) -> set[str]:
    if isinstance(node, (Compare, Column)):
        return {node.column}
    if isinstance(node, Not):
        return _columns(node.inner)
    return set().union(*(_columns(p) for p in node.parts))


def _mask(node: Node, df: pd.DataFrame) -> pd.Series:
    if isinstance(node, Column):
        return df[node.column].fillna(False).astype(bool)
    if isinstance(node, Compare):
        values = df[node.column]
        if isinstance(node.value, float) and math.isfinite(node.value):
            values = pd.to_numeric(values, errors="coerce")
        return _OPS[node.op](values, node.value).fillna(False).astype(bool)
    if isinstance(node, Not):
        return ~_mask(node.inner, df)
    masks = [_mask(p, df) for p in node.parts]
    out = masks[0]
    for mask in masks[1:]:
        out = (out & mask) if node.op == "and" else (out | mask)
    return out


def apply_filter(df: pd.DataFrame, text: str) -> pd.DataFrame:
    """The rows of ``df`` the filter keeps; ``ValueError`` for a bad filter or unknown column."""
    node = parse_filter(text)
    missing = sorted(_columns(node) - set(df.columns))
    if missing:
        raise ValueError(
            f"filter {text!r}: no column {', '.join(map(repr, missing))} "
            f"(columns: {', '.join(map(str, df.columns))})"
        )
    return df[_mask(node, df).to_numpy()]
