"""``when`` conditions: a tiny language, tokenized and parsed by hand into an AST once.

A condition is evaluated by walking the tree; nothing the user writes reaches
``eval``/``exec``/``compile``::

    condition  := or
    or         := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | comparison
    comparison := operand (("==" | "!=" | "<" | "<=" | ">" | ">=") operand)?
    operand    := REFERENCE | STRING | NUMBER | true | false | null | "(" condition ")"

Precedence is ``not`` > ``and`` > ``or``; comparisons do not chain. A bare operand is tested for
truthiness (null, false, 0, "", [] and {} are false). Choices, each tested:

* a reference whose value is missing at run time (a skipped step, an absent key) is ``null`` in a
  condition, so ``${steps.a.output.label} == null`` asks "did a produce no label?" (a template
  raises on the same miss instead, see ``expressions``);
* ``==``/``!=`` follow JSON: ``true`` is not ``1`` and ``1`` equals ``1.0``;
* ordering (``< <= > >=``) compares two numbers or two strings; any other pair (``"a" < 1``,
  ``null < 1``) is simply false rather than an error, so a condition never crashes a running step.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edge_min.errors import WorkflowValidationError
from edge_min.workflows.references import MISSING, Reference, parse_reference

__all__ = ["Condition", "compile_condition"]

_OPERATORS = ("==", "!=", "<=", ">=", "<", ">")
_KEYWORDS = {"and", "or", "not", "true", "false", "null"}
_NUMBER = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", "'": "'", '"': '"'}


@dataclass(frozen=True)
class _Token:
    kind: str  # ref, str, num, kw, op, lparen, rparen, end
    value: Any
    pos: int


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    n = len(text)
    while pos < n:
        c = text[pos]
        if c.isspace():
            pos += 1
        elif text.startswith("${", pos):
            end = text.find("}", pos)
            if end < 0:
                raise _syntax(text, pos, "unclosed reference: add the closing '}'")
            tokens.append(_Token("ref", parse_reference(text[pos + 2 : end]), pos))
            pos = end + 1
        elif c in "'\"":
            value, pos2 = _read_string(text, pos)
            if "${" in value:
                raise _syntax(
                    text,
                    pos,
                    "a reference inside quotes is plain text; remove the quotes around it",
                )
            tokens.append(_Token("str", value, pos))
            pos = pos2
        elif c == "(":
            tokens.append(_Token("lparen", c, pos))
            pos += 1
        elif c == ")":
            tokens.append(_Token("rparen", c, pos))
            pos += 1
        elif op := next((o for o in _OPERATORS if text.startswith(o, pos)), None):
            tokens.append(_Token("op", op, pos))
            pos += len(op)
        elif m := _NUMBER.match(text, pos):
            raw = m.group(0)
            is_float = any(ch in raw for ch in ".eE")
            tokens.append(_Token("num", float(raw) if is_float else int(raw), pos))
            pos = m.end()
        elif m := _WORD.match(text, pos):
            word = m.group(0)
            if word not in _KEYWORDS:
                raise _syntax(
                    text,
                    pos,
                    f"unknown name '{word}'; put references in ${{...}}, quote strings, "
                    "and use only and, or, not, true, false, null",
                )
            tokens.append(_Token("kw", word, pos))
            pos = m.end()
        else:
            raise _syntax(text, pos, f"unexpected character {c!r}")
    tokens.append(_Token("end", None, n))
    return tokens


def _read_string(text: str, start: int) -> tuple[str, int]:
    quote = text[start]
    out: list[str] = []
    pos = start + 1
    while pos < len(text):
        c = text[pos]
        if c == quote:
            return "".join(out), pos + 1
        if c == "\\" and pos + 1 < len(text):
            out.append(_ESCAPES.get(text[pos + 1], "\\" + text[pos + 1]))
            pos += 2
            continue
        out.append(c)
        pos += 1
    raise _syntax(text, start, f"unclosed string: add the closing {quote}")


def _syntax(text: str, pos: int, why: str) -> WorkflowValidationError:
    pointer = f"\n    {text}\n    {' ' * pos}^"
    return WorkflowValidationError(f"invalid condition at position {pos}: {why}{pointer}")


# AST shapes: ("lit", v) | ("ref", Reference) | ("cmp", op, a, b) | ("not", a) |
# ("and", a, b) | ("or", a, b).


class _Parser:
    """Recursive descent over the token list, one method per grammar rule."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def is_kw(self, word: str) -> bool:
        tok = self.peek()
        return tok.kind == "kw" and tok.value == word

    def parse(self) -> Any:
        if self.peek().kind == "end":
            raise _syntax(self.text, 0, "the condition is empty; write e.g. ${input.x} == 1")
        node = self.parse_or()
        tok = self.peek()
        if tok.kind != "end":
            raise _syntax(self.text, tok.pos, f"unexpected {_describe(tok)} after a full condition")
        return node

    def parse_or(self) -> Any:
        node = self.parse_and()
        while self.is_kw("or"):
            self.take()
            node = ("or", node, self.parse_and())
        return node

    def parse_and(self) -> Any:
        node = self.parse_not()
        while self.is_kw("and"):
            self.take()
            node = ("and", node, self.parse_not())
        return node

    def parse_not(self) -> Any:
        if self.is_kw("not"):
            self.take()
            return ("not", self.parse_not())
        return self.parse_comparison()

    def parse_comparison(self) -> Any:
        left = self.parse_operand()
        if self.peek().kind == "op":
            op = self.take().value
            right = self.parse_operand()
            nxt = self.peek()
            if nxt.kind == "op":
                raise _syntax(
                    self.text,
                    nxt.pos,
                    "comparisons do not chain; join them with 'and' (a < b and b < c)",
                )
            return ("cmp", op, left, right)
        return left

    def parse_operand(self) -> Any:
        tok = self.take()
        if tok.kind == "ref":
            return ("ref", tok.value)
        if tok.kind in ("str", "num"):
            return ("lit", tok.value)
        if tok.kind == "kw" and tok.value in ("true", "false", "null"):
            return ("lit", {"true": True, "false": False, "null": None}[tok.value])
        if tok.kind == "lparen":
            node = self.parse_or()
            close = self.take()
            if close.kind != "rparen":
                raise _syntax(self.text, close.pos, f"expected ')' but found {_describe(close)}")
            return node
        raise _syntax(
            self.text,
            tok.pos,
            f"expected a reference, a literal or '(' but found {_describe(tok)}",
        )


def _describe(tok: _Token) -> str:
    if tok.kind == "end":
        return "the end of the condition"
    if tok.kind == "ref":
        return f"reference {tok.value}"
    if tok.kind == "str":
        return f"string {tok.value!r}"
    return f"'{tok.value}'"


class Condition:
    """A compiled ``when`` expression; ``evaluate(context)`` walks its AST to a bool."""

    def __init__(self, source: str, ast: Any, refs: tuple[Reference, ...]) -> None:
        self.source = source
        self._ast = ast
        self.refs = refs

    @property
    def references(self) -> set[str]:
        """The ids of the steps whose outputs this condition reads."""
        return {r.step for r in self.refs if r.step is not None}

    def evaluate(self, context: Mapping[str, Any]) -> bool:
        """Whether the step should run; a missing reference counts as null."""
        return _truthy(_eval(self._ast, context))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Condition) and self.source == other.source

    def __hash__(self) -> int:
        return hash(self.source)

    def __repr__(self) -> str:
        return f"Condition({self.source!r})"


def compile_condition(text: str) -> Condition:
    """A Condition from ``when`` text; raises WorkflowValidationError with the position."""
    if not isinstance(text, str):
        raise WorkflowValidationError(f"a condition must be text, got {type(text).__name__}")
    ast = _Parser(text).parse()
    refs: list[Reference] = []
    _collect_refs(ast, refs)
    return Condition(text, ast, tuple(refs))


def _collect_refs(node: Any, refs: list[Reference]) -> None:
    kind = node[0]
    if kind == "ref":
        refs.append(node[1])
    elif kind == "cmp":
        _collect_refs(node[2], refs)
        _collect_refs(node[3], refs)
    elif kind in ("and", "or"):
        _collect_refs(node[1], refs)
        _collect_refs(node[2], refs)
    elif kind == "not":
        _collect_refs(node[1], refs)


def _eval(node: Any, context: Mapping[str, Any]) -> Any:
    kind = node[0]
    if kind == "lit":
        return node[1]
    if kind == "ref":
        value = node[1].lookup(context)
        return None if value is MISSING else value
    if kind == "not":
        return not _truthy(_eval(node[1], context))
    if kind == "and":
        return _truthy(_eval(node[1], context)) and _truthy(_eval(node[2], context))
    if kind == "or":
        return _truthy(_eval(node[1], context)) or _truthy(_eval(node[2], context))
    return _compare(node[1], _eval(node[2], context), _eval(node[3], context))


def _truthy(value: Any) -> bool:
    return bool(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _json_equal(a: Any, b: Any) -> bool:
    """Equality as JSON sees it: booleans are not numbers, 1 == 1.0."""
    if _is_number(a) and _is_number(b):
        return bool(a == b)
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if _is_number(a) or _is_number(b):
        return False
    return bool(a == b)


def _compare(op: str, a: Any, b: Any) -> bool:
    if op == "==":
        return _json_equal(a, b)
    if op == "!=":
        return not _json_equal(a, b)
    comparable = (_is_number(a) and _is_number(b)) or (isinstance(a, str) and isinstance(b, str))
    if not comparable:
        return False
    if op == "<":
        return bool(a < b)
    if op == "<=":
        return bool(a <= b)
    if op == ">":
        return bool(a > b)
    return bool(a >= b)
