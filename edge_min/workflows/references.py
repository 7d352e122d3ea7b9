"""References: the ``${...}`` names of values the engine knows while a workflow runs.

::

    ${input}                      the workflow's whole input
    ${input.user.name}            a path into it: dotted keys ...
    ${input.items.0.name}         ... where a number indexes a list
    ${input.items[0].name}        ... or brackets do, also ``[-1]`` for the last item
    ${steps.ID.output}            a finished step's whole output
    ${steps.ID.output.scores.neg} a path into it

``Reference.resolve`` raises ``WorkflowError`` naming the reference when the value is missing (what
a template needs); ``Reference.lookup`` returns ``MISSING`` instead (what a condition needs).
Templates (``expressions``) and conditions (``conditions``) both build on this module.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edge_min.errors import WorkflowError, WorkflowValidationError

__all__ = ["MISSING", "PathPart", "Reference", "parse_reference"]

PathPart = str | int

_STEP_ID = r"[A-Za-z_][A-Za-z0-9_-]*"
_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")
_STEP_ID_RE = re.compile(_STEP_ID)
_INDEX = re.compile(r"\[(-?\d+)\]")


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
