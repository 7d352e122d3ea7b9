"""Validation of workflow definitions: loading the text, checking fields, checking the graph.

``parse_definition`` (in ``definition``) is the only door in; it builds the model and calls these
checks, which know nothing of the model classes at run time. Every check adds to one ``Problems``
collector instead of raising, so a single ``WorkflowValidationError`` can list every problem found,
each naming the step, the field, the bad value and the fix. The graph is checked in two stages:
``check_needs`` (duplicate ids, unknown needs, cycles), then, once the needs form a DAG,
``check_references`` (``${steps.ID...}`` must name an ancestor of the step that reads it).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any

from edge_min.errors import EdgeError, MissingDependency, WorkflowValidationError
from edge_min.units import parse_duration
from edge_min.workflows.references import Reference

if TYPE_CHECKING:
    # Type hints only: definition imports this module, so a run-time import would be a cycle.
    from edge_min.workflows.definition import StepDefinition

__all__ = [
    "Problems",
    "check_keys",
    "check_needs",
    "check_references",
    "cron_problem",
    "find_cycles",
    "load_document",
    "parse_name",
    "parse_needs",
    "parse_step_duration",
    "parse_version",
    "suggest",
]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")
_CRON_FIELD = re.compile(r"[0-9*/,-]+\Z")
_CRON_NAMED_FIELD = re.compile(r"[0-9A-Za-z*/,-]+\Z")


class Problems:
    """Collects (step, field, message) triples so one pass can report several problems."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.items: list[tuple[str | None, str | None, str]] = []

    def add(self, message: str, step: str | None = None, field: str | None = None) -> None:
        """Record one problem; ``step`` and ``field`` say where it is."""
        self.items.append((step, field, message))

    def raise_if_any(self) -> None:
        """Raise one WorkflowValidationError for all problems so far (``.errors`` has each)."""
        if not self.items:
            return
        errors = []
        for step, fld, message in self.items:
            err = WorkflowValidationError(message, step=step, field=fld)
            _prefix(err, f"{self.source}: ")
            errors.append(err)
        if len(errors) == 1:
            first = errors[0]
            first.errors = errors  # type: ignore[attr-defined]
            raise first
        lines = "\n".join(f"  - {e.message[len(self.source) + 2 :]}" for e in errors)
        combined = WorkflowValidationError(f"{len(errors)} problems in the workflow:\n{lines}")
        _prefix(combined, f"{self.source}: ")
        combined.step, combined.field = errors[0].step, errors[0].field
        combined.errors = errors  # type: ignore[attr-defined]
        raise combined


def _prefix(err: EdgeError, prefix: str) -> None:
    err.message = prefix + err.message
    err.args = (err.message,)


def suggest(word: str, choices: Iterable[str]) -> str:
    """``; did you mean 'X'?`` for the closest choice, or nothing when none is close."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{match[0]}'?" if match else ""


def check_keys(
    mapping: Mapping[Any, Any],
    allowed: tuple[str, ...],
    problems: Problems,
    step: str | None,
    what: str,
) -> None:
    """Report each key of ``mapping`` that is not in ``allowed``, suggesting the closest."""
    for key in mapping:
        if key not in allowed:
            problems.add(
                f"unknown {what} key '{key}'{suggest(str(key), allowed)} "
                f"(allowed: {', '.join(allowed)})",
                step=step,
            )


def load_document(data: str | bytes | Mapping[str, Any], source: str) -> Any:
    """A mapping from YAML text, JSON text or a mapping."""
    if isinstance(data, Mapping):
        return data
    if isinstance(data, bytes):
        data = data.decode("utf-8")
    if not isinstance(data, str):
        raise WorkflowValidationError(
            f"{source}: a workflow definition is YAML text, JSON text or a mapping, "
            f"not a {type(data).__name__}"
        )
    json_error: json.JSONDecodeError | None = None
    if data.lstrip().startswith("{"):
        try:
            return json.loads(data)
        except json.JSONDecodeError as exc:
            json_error = exc  # may still be a YAML flow mapping: try YAML before reporting
    try:
        import yaml
    except ImportError:
        if json_error is not None:
            raise _json_problem(json_error, source) from None
        raise MissingDependency("yaml", "yaml", "Reading a YAML workflow definition") from None
    try:
        return yaml.safe_load(data)
    except yaml.YAMLError as exc:
        if json_error is not None:
            raise _json_problem(json_error, source) from None
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise WorkflowValidationError(f"{source}: not valid YAML{where}: {problem}") from None


def _json_problem(exc: json.JSONDecodeError, source: str) -> WorkflowValidationError:
    return WorkflowValidationError(
        f"{source}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
    )


def parse_name(raw: Mapping[str, Any], problems: Problems) -> str:
    """The checked ``name``, or "" after recording why it is not one."""
    name = raw.get("name")
    if name is None:
        problems.add("is missing; add e.g. name: feedback-triage", field="name")
        return ""
    if not isinstance(name, str) or not _NAME.match(name):
        problems.add(
            f"{name!r} is not a valid workflow name; use letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit, at most 128 characters)",
            field="name",
        )
        return ""
    return name


def parse_version(raw: Mapping[str, Any], problems: Problems) -> str:
    """The checked ``version`` as text, or "" after recording why it is not one."""
    version = raw.get("version")
    if version is None:
        problems.add("is missing; add e.g. version: 1.0.0", field="version")
        return ""
    if isinstance(version, bool) or not isinstance(version, str | int | float):
        problems.add(f"{version!r} is not a version; write e.g. version: 1.0.0", field="version")
        return ""
    text = str(version).strip()
    if not text:
        problems.add("is empty; write e.g. version: 1.0.0", field="version")
    return text


def cron_problem(text: str) -> str | None:
    """Why ``text`` is not a cron expression, or None if it is."""
    try:
        # The scheduler owns the real cron grammar (ranges, names, @daily); defer to it when
        # it can be imported, and fall back to checking the shape where it cannot.
        from edge_min.scheduler.cron import CronExpr
    except ImportError:
        return _cron_shape_problem(text)
    try:
        CronExpr.parse(text)
    except (EdgeError, ValueError) as exc:
        return getattr(exc, "message", None) or str(exc)
    return None


def _cron_shape_problem(text: str) -> str | None:
    """Why ``text`` does not look like 5 cron fields, or None if it does."""
    fields = text.split()
    if len(fields) != 5:
        return (
            f"has {len(fields)} fields; write 5 (minute hour day-of-month month day-of-week), "
            "e.g. '*/5 * * * *'"
        )
    for i, part in enumerate(fields):
        pattern = _CRON_NAMED_FIELD if i >= 3 else _CRON_FIELD
        if not pattern.match(part):
            return f"field {i + 1} {part!r} may use only digits, '*', '/', ',' and '-'"
    return None


def parse_needs(value: Any, label: str, problems: Problems) -> tuple[str, ...]:
    """A step's ``needs`` as a tuple of ids (a single id is allowed), first repeats kept."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
        problems.add(
            f"{value!r} must be a list of step ids, e.g. needs: [classify]",
            step=label,
            field="needs",
        )
        return ()
    return tuple(dict.fromkeys(value))  # a repeated need means nothing more; keep the first


def parse_step_duration(
    value: Any, label: str, name: str, problems: Problems, *, positive: bool = False
) -> float | None:
    """Seconds from a duration field such as ``timeout``, or None if absent or invalid."""
    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        problems.add(f"{exc}", step=label, field=name)
        return None
    if positive and seconds <= 0:
        problems.add(
            f"{value!r} must be longer than 0 seconds; use e.g. 10s, or remove it for no limit",
            step=label,
            field=name,
        )
        return None
    return seconds


def check_needs(steps: Sequence[StepDefinition], problems: Problems) -> None:
    """Report duplicate ids and unknown needs, then (only if there are none) cycles."""
    ids = [s.id for s in steps]
    seen: dict[str, int] = {}
    for pos, sid in enumerate(ids, start=1):
        if sid in seen:
            problems.add(
                f"id '{sid}' is used by steps #{seen[sid]} and #{pos}; give each step its own id",
                step=sid,
                field="id",
            )
        else:
            seen[sid] = pos
    known = set(ids)
    for s in steps:
        for need in s.needs:
            if need == s.id:
                problems.add(f"the step needs itself; remove '{need}'", step=s.id, field="needs")
            elif need not in known:
                problems.add(
                    f"'{need}' is not a step in this workflow{suggest(need, ids)}",
                    step=s.id,
                    field="needs",
                )
    if problems.items:
        return
    for cycle in find_cycles(steps):
        path = " -> ".join(cycle)
        problems.add(
            f"the needs form a cycle: {path}; remove one of these needs",
            step=cycle[0],
            field="needs",
        )


def check_references(
    steps: Sequence[StepDefinition], ancestors: Mapping[str, AbstractSet[str]], problems: Problems
) -> None:
    """Report references in ``input`` or ``when`` to steps that are not the reader's ancestors."""
    ids = [s.id for s in steps]
    known = set(ids)
    for s in steps:
        checks: list[tuple[str, tuple[Reference, ...]]] = [("input", s.input.refs)]
        if s.when is not None:
            checks.append(("when", s.when.refs))
        for fld, refs in checks:
            for ref in refs:
                _check_reference(s, fld, ref, known, ids, ancestors[s.id], problems)


def _check_reference(
    step: StepDefinition,
    fld: str,
    ref: Reference,
    known: set[str],
    ids: list[str],
    ancestors: AbstractSet[str],
    problems: Problems,
) -> None:
    target = ref.step
    if target is None or target in ancestors:
        return
    if target == step.id:
        problems.add(
            f"{ref} refers to the step's own output, which does not exist yet; "
            "use ${input} or an earlier step",
            step=step.id,
            field=fld,
        )
    elif target not in known:
        problems.add(
            f"{ref} names no step of this workflow{suggest(target, ids)}",
            step=step.id,
            field=fld,
        )
    else:
        problems.add(
            f"{ref} reads step '{target}', which is not among this step's needs (directly or "
            f"transitively), so it may not have run; add '{target}' to needs",
            step=step.id,
            field=fld,
        )


def find_cycles(steps: Sequence[StepDefinition]) -> list[list[str]]:
    """Each distinct cycle once, as a path that returns to its start (a -> b -> a)."""
    graph = {s.id: s.needs for s in steps}
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(graph, white)
    stack: list[str] = []
    cycles: list[list[str]] = []
    seen: set[frozenset[str]] = set()

    for root in graph:
        if color[root] != white:
            continue
        # Iterative so a long chain of steps cannot hit Python's recursion limit.
        color[root] = grey
        stack.append(root)
        pending = [iter(graph[root])]
        while pending:
            nxt = next(pending[-1], None)
            if nxt is None:
                pending.pop()
                color[stack.pop()] = black
            elif color[nxt] == grey:
                cycle = [*stack[stack.index(nxt) :], nxt]
                key = frozenset(cycle)
                if key not in seen:
                    seen.add(key)
                    # Shown in the direction work flows: each step before the step needing it.
                    cycles.append(cycle[::-1])
            elif color[nxt] == white:
                color[nxt] = grey
                stack.append(nxt)
                pending.append(iter(graph[nxt]))
    return cycles
