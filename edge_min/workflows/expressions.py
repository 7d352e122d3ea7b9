"""Templates: JSON-like values whose strings hold references, rendered with a run's context.

A *template* is any JSON-like value (str, number, bool, null, list, dict) whose strings may hold
references (``${input.KEY}``, ``${steps.ID.output.KEY}``; see ``references``). A string that is
exactly one reference keeps the referenced value's type (a list stays a list); a string mixing
text and references interpolates, JSON-encoding values that are not strings. ``$${`` writes a
literal ``${``. Dict keys are literal: references there are not expanded. A reference whose value
is missing at run time raises ``WorkflowError`` naming the reference, because a step must not
silently receive a hole in its input (a ``when`` condition reads the same miss as ``null``).

This module is also the historical import path for the whole expression layer: references and
``when`` conditions (``conditions``) are re-exported here, so
``from edge_min.workflows.expressions import compile_condition`` keeps working.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from edge_min.errors import WorkflowValidationError
from edge_min.workflows.conditions import Condition, compile_condition
from edge_min.workflows.references import MISSING, PathPart, Reference, parse_reference

__all__ = [
    "MISSING",
    "Condition",
    "PathPart",
    "Reference",
    "Template",
    "compile_condition",
    "compile_template",
    "parse_reference",
]

_REFERENCE_IN_TEXT = re.compile(r"\$\$\{|\$\{([^}]*)\}")


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
