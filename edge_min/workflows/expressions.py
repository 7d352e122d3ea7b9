"""References, templates and ``when`` conditions in workflow definitions.

A *reference* names a value the engine knows while a workflow runs::

    ${input}                      the workflow's whole input
    ${input.user.name}            a path into it: dotted keys ...
    ${input.items.0.name}         ... where a number indexes a list
    ${input.items[0].name}        ... or brackets do, also ``[-1]`` for the last item
    ${steps.ID.output}            a finished step's whole output
    ${steps.ID.output.scores.neg} a path into it

A *template* is any JSON-like value (str, number, bool, null, list, dict) whose strings may hold
references. A string that is exactly one reference keeps the referenced value's type (a list stays a
list); a string mixing text and references interpolates, JSON-encoding values that are not strings.
``$${`` writes a literal ``${``. Dict keys are literal: references there are not expanded.

A *condition* (a step's ``when``) is a tiny language, tokenized and parsed by hand into an AST once
and evaluated by walking the tree; nothing the user writes reaches ``eval``/``exec``/``compile``::

    condition  := or
    or         := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | comparison
    comparison := operand (("==" | "!=" | "<" | "<=" | ">" | ">=") operand)?
    operand    := REFERENCE | STRING | NUMBER | true | false | null | "(" condition ")"

Precedence is ``not`` > ``and`` > ``or``; comparisons do not chain. A bare operand is tested for
truthiness (null, false, 0, "", [] and {} are false). Choices, each tested:

* a reference whose value is missing at run time (a skipped step, an absent key) is ``null`` in a
  condition, so ``${steps.a.output.label} == null`` asks "did a produce no label?"; in a template
  the same miss raises ``WorkflowError`` naming the reference, because a step must not silently
  receive a hole in its input;
* ``==``/``!=`` follow JSON: ``true`` is not ``1`` and ``1`` equals ``1.0``;
* ordering (``< <= > >=``) compares two numbers or two strings; any other pair (``"a" < 1``,
  ``null < 1``) is simply false rather than an error, so a condition never crashes a running step.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edge_min.errors import WorkflowError, WorkflowValidationError

__all__ = [
    "MISSING",
    "Condition",
    "Reference",
    "Template",
    "compile_condition",
    "compile_template",
    "parse_reference",
]

PathPart = str | int

_STEP_ID = r"[A-Za-z_][A-Za-z0-9_-]*"
_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")
_STEP_ID_RE = re.compile(_STEP_ID)
_INDEX = re.compile(r"\[(-?\d+)\]")
_REFERENCE_IN_TEXT = re.compile(r"\$\$\{|\$\{([^}]*)\}")


class _Missing:
    """The value of a reference that points at nothing (a condition treats it as null)."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()


@dataclass(frozen=True)
class Reference:
    """One ``${...}``: the workflow input or a step's output, then a path of keys and indexes."""

    text: str
    step: str | None
    path: tuple[PathPart, ...]

    def __str__(self) -> str:
        return "${" + self.text + "}"

    def resolve(self, context: Mapping[str, Any]) -> Any:
        """The referenced value; raises WorkflowError naming this reference when it is missing."""
        return self.lookup(context, strict=True)

    def lookup(self, context: Mapping[str, Any], *, strict: bool = False) -> Any:
        """The referenced value, or ``MISSING`` (or a WorkflowError when ``strict``)."""
        if self.step is None:
            if "input" not in context:
                return self._miss(strict, "the run has no input")
            value = context["input"]
            where = "input"
        else:
            steps = context.get("steps") or {}
            record = steps.get(self.step)
            if not isinstance(record, Mapping) or "output" not in record:
                return self._miss(
                    strict,
                    f"step '{self.step}' has no output (it was skipped, failed or has not run)",
                )
            value = record["output"]
            where = f"the output of step '{self.step}'"
        for part in self.path:
            found, value, why = _step_into(value, part)
            if not found:
                return self._miss(strict, f"{why} in {where}")
            where = f"'{part}'" if isinstance(part, str) else f"[{part}]"
        return value

    def _miss(self, strict: bool, why: str) -> Any:
        if strict:
            raise WorkflowError(f"reference {self} cannot be resolved: {why}")
        return MISSING


def _step_into(value: Any, part: PathPart) -> tuple[bool, Any, str]:
    """One path step: (found, new value, why not)."""
    if isinstance(value, Mapping):
        key = str(part)
        if key in value:
            return True, value[key], ""
        keys = ", ".join(sorted(map(str, value))[:10]) or "none"
        return False, None, f"no key '{key}' (keys present: {keys})"
    if isinstance(value, list | tuple):
        if isinstance(part, int) or part.lstrip("-").isdigit():
            index = int(part)
            if -len(value) <= index < len(value):
                return True, value[index], ""
            return False, None, f"index {index} is out of range (the list has {len(value)} items)"
        return False, None, f"key '{part}' cannot index a list (use a number such as .0 or [0])"
    kind = _json_type(value)
    return False, None, f"cannot take '{part}' of a {kind} value"


def _json_type(value: Any) -> str:
    """The JSON name of a value's type, for messages."""
    if value is None or value is MISSING:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def parse_reference(text: str) -> Reference:
    """A Reference from the inside of ``${...}``; raises WorkflowValidationError if malformed."""
    body = text.strip()
    hint = "write ${input}, ${input.KEY}, ${steps.ID.output} or ${steps.ID.output.KEY}"
    head, _, rest = body.partition(".")
    if head.startswith("input"):
        step = None
        tail = body[len("input") :]
        if tail and tail[0] not in ".[":
            raise WorkflowValidationError(f"unknown reference ${{{text}}}; {hint}")
    elif head == "steps":
        m = _STEP_ID_RE.match(rest)
        if not m:
            raise WorkflowValidationError(
                f"reference ${{{text}}} needs a step id after 'steps.'; {hint}"
            )
        step = m.group(0)
        after = rest[m.end() :]
        if after != ".output" and not after.startswith((".output.", ".output[")):
            raise WorkflowValidationError(
                f"reference ${{{text}}} must continue with '.output' after the step id; "
                f"write ${{steps.{step}.output}}"
            )
        tail = after[len(".output") :]
    else:
        raise WorkflowValidationError(f"unknown reference ${{{text}}}; {hint}")
    return Reference(text=body, step=step, path=_parse_path(tail, text))


def _parse_path(tail: str, text: str) -> tuple[PathPart, ...]:
    """The ``.key``/``[3]`` parts after the root of a reference."""
    parts: list[PathPart] = []
    pos = 0
    while pos < len(tail):
        if tail[pos] == ".":
            m = _KEY.match(tail, pos + 1)
            if not m:
                raise WorkflowValidationError(
                    f"reference ${{{text}}}: expected a key after '.' at "
                    f"'{tail[pos:]}' (keys use letters, digits, '_' and '-')"
                )
            parts.append(m.group(0))
            pos = m.end()
        elif tail[pos] == "[":
            m = _INDEX.match(tail, pos)
            if not m:
                raise WorkflowValidationError(
                    f"reference ${{{text}}}: expected an integer index such as [0] "
                    f"at '{tail[pos:]}'"
                )
            parts.append(int(m.group(1)))
            pos = m.end()
        else:
            raise WorkflowValidationError(
                f"reference ${{{text}}}: unexpected '{tail[pos:]}'; separate keys with '.'"
            )
    return tuple(parts)


# --------------------------------------------------------------------------- templates


class Template:
    """A compiled JSON-like value whose strings may hold references; render it with a context."""

    def __init__(self, source: Any, node: Any, refs: tuple[Reference, ...]) -> None:
        self.source = source
        self._node = node
        self.refs = refs

    @property
    def references(self) -> set[str]:
        """The ids of the steps whose outputs this template reads."""
        return {r.step for r in self.refs if r.step is not None}

    def render(self, context: Mapping[str, Any]) -> Any:
        """A fresh value with every reference replaced; raises WorkflowError on a missing one."""
        return _render(self._node, context)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Template) and _canon(self.source) == _canon(other.source)

    def __hash__(self) -> int:
        return hash(_canon(self.source))

    def __repr__(self) -> str:
        return f"Template({self.source!r})"


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# Node shapes: ("lit", value) | ("ref", Reference) | ("cat", [str | Reference]) |
# ("list", [node]) | ("dict", [(key, node)]). Tuples keep rendering a plain loop.


def compile_template(value: Any) -> Template:
    """A Template from a JSON-like value; raises WorkflowValidationError on a bad reference."""
    refs: list[Reference] = []
    node = _compile_node(value, refs, "")
    return Template(value, node, tuple(refs))


def _compile_node(value: Any, refs: list[Reference], where: str) -> Any:
    if isinstance(value, str):
        return _compile_string(value, refs)
    if value is None or isinstance(value, bool | int | float):
        return ("lit", value)
    if isinstance(value, list | tuple):
        return ("list", [_compile_node(v, refs, f"{where}[{i}]") for i, v in enumerate(value)])
    if isinstance(value, Mapping):
        items = []
        for k, v in value.items():
            if not isinstance(k, str):
                raise WorkflowValidationError(
                    f"key {k!r} at '{where or '.'}' is a {type(k).__name__}; "
                    "object keys must be strings (quote it)"
                )
            items.append((k, _compile_node(v, refs, f"{where}.{k}")))
        return ("dict", items)
    raise WorkflowValidationError(
        f"value {value!r} at '{where or '.'}' is a {type(value).__name__}, which JSON cannot hold; "
        "use a string, number, boolean, null, list or mapping (quote dates and times)"
    )


def _compile_string(text: str, refs: list[Reference]) -> Any:
    parts: list[str | Reference] = []
    pos = 0
    for m in _REFERENCE_IN_TEXT.finditer(text):
        if m.start() > pos:
            parts.append(text[pos : m.start()])
        if m.group(0) == "$${":
            parts.append("${")
        else:
            ref = parse_reference(m.group(1))
            refs.append(ref)
            parts.append(ref)
        pos = m.end()
    if "${" in text[pos:]:
        raise WorkflowValidationError(f"unclosed reference in {text!r}: add the closing '}}'")
    if pos < len(text):
        parts.append(text[pos:])
    if len(parts) == 1 and isinstance(parts[0], Reference):
        return ("ref", parts[0])
    if all(isinstance(p, str) for p in parts):
        return ("lit", "".join(p for p in parts if isinstance(p, str)))
    return ("cat", parts)


def _render(node: Any, context: Mapping[str, Any]) -> Any:
    kind, payload = node
    if kind == "lit":
        return payload
    if kind == "ref":
        return payload.resolve(context)
    if kind == "cat":
        out = []
        for part in payload:
            if isinstance(part, str):
                out.append(part)
            else:
                value = part.resolve(context)
                out.append(value if isinstance(value, str) else _encode(value))
        return "".join(out)
    if kind == "list":
        return [_render(n, context) for n in payload]
    return {k: _render(n, context) for k, n in payload}


def _encode(value: Any) -> str:
    """Compact JSON for a non-string value interpolated into text."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


# --------------------------------------------------------------------------- conditions

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
