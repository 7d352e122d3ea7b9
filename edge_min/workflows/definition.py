"""The workflow definition model: a named, versioned DAG of agent steps, parsed and validated.

Users write YAML (or JSON)::

    name: feedback-triage
    version: 1.0.0
    trigger: {type: manual}    # or {type: interval, every: 60s} or {type: cron, cron: "0 * * * *"}
    steps:
      - id: classify
        agent: text-classifier-lite
        input: "${input.text}"
      - id: alert
        agent: notify
        needs: [classify]
        when: "${steps.classify.output.label} == 'negative'"
        input: {text: "${input.text}"}
        timeout: 10s
        retries: 2
        on_failure: continue

``parse_definition`` is the only door in: it checks every key and value and the graph (unknown
needs, cycles, references to steps that are not ancestors) and reports every problem it finds in
one ``WorkflowValidationError`` whose message names the step, the field and the fix (the checks
themselves live in ``validation``; this module builds the model from what passes). A step
without ``input`` receives the whole workflow input (``${input}``). ``to_json`` is the canonical
form stored in ``workflows.definition``; parsing it back yields an equal definition.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from edge_min.errors import WorkflowError, WorkflowValidationError
from edge_min.units import parse_duration
from edge_min.workflows.conditions import Condition, compile_condition
from edge_min.workflows.expressions import Template, compile_template
from edge_min.workflows.validation import (
    Problems,
    check_keys,
    check_needs,
    check_references,
    cron_problem,
    load_document,
    parse_name,
    parse_needs,
    parse_step_duration,
    parse_version,
    suggest,
)

__all__ = [
    "INPUT_TYPES",
    "StepDefinition",
    "Trigger",
    "WorkflowDefinition",
    "parse_definition",
]

TRIGGER_TYPES = ("manual", "interval", "cron")
ON_FAILURE = ("fail", "continue")
INPUT_TYPES = ("string", "number", "integer", "boolean", "object", "array", "null", "any")
TOP_KEYS = ("name", "version", "description", "trigger", "input_schema", "steps")
STEP_KEYS = (
    "id",
    "agent",
    "needs",
    "when",
    "input",
    "timeout",
    "retries",
    "retry_backoff",
    "retry_max_backoff",
    "on_failure",
)
TRIGGER_KEYS = ("type", "every", "cron", "input")
DEFAULT_INPUT = "${input}"

_STEP_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")


@dataclass(frozen=True)
class Trigger:
    """What starts a run: by hand (``manual``), every N seconds, or on a cron schedule."""

    type: str = "manual"
    every: float | None = None
    cron: str | None = None
    input: Any = None  # the input of runs this trigger starts (JSON-like)

    def to_dict(self) -> dict[str, Any]:
        """The canonical mapping form."""
        out: dict[str, Any] = {"type": self.type}
        if self.type == "interval":
            out["every"] = self.every
        elif self.type == "cron":
            out["cron"] = self.cron
        if self.input is not None:
            out["input"] = self.input
        return out


@dataclass(frozen=True)
class StepDefinition:
    """One agent call in the DAG, with its dependencies, guard, input template and retry policy."""

    id: str
    agent: str
    needs: tuple[str, ...] = ()
    when: Condition | None = None
    input: Template = field(default_factory=lambda: compile_template(DEFAULT_INPUT))
    timeout: float | None = None
    retries: int = 0
    retry_backoff: float = 1.0
    retry_max_backoff: float = 60.0
    on_failure: str = "fail"

    @property
    def references(self) -> set[str]:
        """Ids of the steps whose outputs this step reads in ``input`` or ``when``."""
        refs = set(self.input.references)
        if self.when is not None:
            refs |= self.when.references
        return refs

    def backoff_delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0 for the first retry)."""
        return float(min(self.retry_backoff * 2**attempt, self.retry_max_backoff))

    def to_dict(self) -> dict[str, Any]:
        """The canonical mapping form, every field spelled out."""
        return {
            "id": self.id,
            "agent": self.agent,
            "needs": list(self.needs),
            "when": None if self.when is None else self.when.source,
            "input": self.input.source,
            "timeout": self.timeout,
            "retries": self.retries,
            "retry_backoff": self.retry_backoff,
            "retry_max_backoff": self.retry_max_backoff,
            "on_failure": self.on_failure,
        }


@dataclass(frozen=True)
class WorkflowDefinition:
    """A validated workflow: steps in the order written, plus graph helpers over their needs."""

    name: str
    version: str
    steps: tuple[StepDefinition, ...]
    description: str = ""
    trigger: Trigger = field(default_factory=Trigger)
    input_schema: Mapping[str, str] | None = field(default=None, hash=False)

    @cached_property
    def _by_id(self) -> dict[str, StepDefinition]:
        return {s.id: s for s in self.steps}

    @cached_property
    def _ancestors(self) -> dict[str, frozenset[str]]:
        result: dict[str, frozenset[str]] = {}
        for step in self.topological_order():
            acc: set[str] = set(step.needs)
            for need in step.needs:
                acc |= result[need]
            result[step.id] = frozenset(acc)
        return result

    @property
    def step_ids(self) -> tuple[str, ...]:
        """Step ids in the order written."""
        return tuple(s.id for s in self.steps)

    def step(self, step_id: str) -> StepDefinition:
        """The step with this id; raises WorkflowError naming the known ids."""
        try:
            return self._by_id[step_id]
        except KeyError:
            known = ", ".join(self.step_ids)
            raise WorkflowError(
                f"workflow '{self.name}' has no step '{step_id}' (its steps: {known})"
            ) from None

    def topological_order(self) -> tuple[StepDefinition, ...]:
        """Every step after all of its needs; ties keep the order written."""
        index = {s.id: i for i, s in enumerate(self.steps)}
        waiting = {s.id: len(set(s.needs)) for s in self.steps}
        dependents: dict[str, list[str]] = {s.id: [] for s in self.steps}
        for s in self.steps:
            for need in set(s.needs):
                dependents[need].append(s.id)
        heap = [index[sid] for sid, n in waiting.items() if n == 0]
        heapq.heapify(heap)
        order: list[StepDefinition] = []
        while heap:
            step = self.steps[heapq.heappop(heap)]
            order.append(step)
            for dep in dependents[step.id]:
                waiting[dep] -= 1
                if waiting[dep] == 0:
                    heapq.heappush(heap, index[dep])
        if len(order) != len(self.steps):
            raise WorkflowError(f"workflow '{self.name}' has a cycle in its needs")
        return tuple(order)

    def ancestors(self, step_id: str) -> frozenset[str]:
        """Ids of every step this one needs, directly or transitively."""
        self.step(step_id)
        return self._ancestors[step_id]

    def sinks(self) -> tuple[str, ...]:
        """Ids of the steps no other step needs (the workflow's outputs), in the order written."""
        needed = {n for s in self.steps for n in s.needs}
        return tuple(s.id for s in self.steps if s.id not in needed)

    def descendants(self, step_id: str) -> frozenset[str]:
        """Ids of every step that needs this one, directly or transitively."""
        self.step(step_id)
        return frozenset(sid for sid, anc in self._ancestors.items() if step_id in anc)

    def to_dict(self) -> dict[str, Any]:
        """The canonical mapping form; ``parse_definition(d.to_dict()) == d``."""
        out: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "trigger": self.trigger.to_dict(),
            "steps": [s.to_dict() for s in self.steps],
        }
        if self.input_schema is not None:
            out["input_schema"] = dict(self.input_schema)
        return out

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): what ``workflows.definition`` stores."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    def digest(self) -> str:
        """SHA-256 of the canonical JSON: equal definitions have equal digests."""
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()

    def validate_input(self, value: Any) -> None:
        """Check a run's input against ``input_schema``; raises WorkflowError naming the key."""
        if self.input_schema is None:
            return
        if not isinstance(value, Mapping):
            raise WorkflowError(
                f"workflow '{self.name}' takes an object input with keys "
                f"{', '.join(self.input_schema)}; got a {type(value).__name__}"
            )
        for key, type_name in self.input_schema.items():
            if key not in value:
                raise WorkflowError(
                    f"workflow '{self.name}' needs input key '{key}' ({type_name}); "
                    "add it to the input"
                )
            if not _has_type(value[key], type_name):
                raise WorkflowError(
                    f"workflow '{self.name}': input key '{key}' must be {type_name}, "
                    f"got {value[key]!r}"
                )


def _has_type(value: Any, type_name: str) -> bool:
    checks = {
        "string": lambda v: isinstance(v, str),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "object": lambda v: isinstance(v, Mapping),
        "array": lambda v: isinstance(v, list | tuple),
        "null": lambda v: v is None,
    }
    check = checks.get(type_name)
    return True if check is None else bool(check(value))


# --------------------------------------------------------------------------- parsing


def parse_definition(
    data: str | bytes | Mapping[str, Any],
    *,
    source: str = "<string>",
    known_agents: Collection[str] | None = None,
) -> WorkflowDefinition:
    """A validated WorkflowDefinition from YAML text, JSON text or a mapping.

    Raises WorkflowValidationError listing every problem found (``.errors`` holds each one).
    """
    raw = load_document(data, source)
    if not isinstance(raw, Mapping):
        raise WorkflowValidationError(
            f"{source}: a workflow definition must be a mapping with name, version and steps; "
            f"got {type(raw).__name__}"
        )
    problems = Problems(source)
    check_keys(raw, TOP_KEYS, problems, None, "workflow")
    name = parse_name(raw, problems)
    version = parse_version(raw, problems)
    description = raw.get("description") or ""
    if not isinstance(description, str):
        problems.add("must be text", field="description")
        description = ""
    trigger = _parse_trigger(raw.get("trigger"), problems)
    input_schema = _parse_input_schema(raw.get("input_schema"), problems)
    steps = _parse_steps(raw, problems, known_agents)
    problems.raise_if_any()
    check_needs(steps, problems)
    problems.raise_if_any()
    definition = WorkflowDefinition(
        name=name,
        version=version,
        steps=tuple(steps),
        description=description,
        trigger=trigger,
        input_schema=input_schema,
    )
    # The needs form a DAG now, so the model's own ancestor sets can judge the references.
    check_references(steps, {s.id: definition.ancestors(s.id) for s in steps}, problems)
    problems.raise_if_any()
    return definition


def _parse_trigger(value: Any, problems: Problems) -> Trigger:
    if value is None:
        return Trigger()
    if isinstance(value, str):
        value = {"type": value}
    if not isinstance(value, Mapping):
        problems.add(
            "must be a mapping such as {type: manual}, {type: interval, every: 60s} or "
            "{type: cron, cron: '*/5 * * * *'}",
            field="trigger",
        )
        return Trigger()
    check_keys(value, TRIGGER_KEYS, problems, None, "trigger")
    kind = value.get("type")
    if kind not in TRIGGER_TYPES:
        hint = suggest(str(kind), TRIGGER_TYPES) if kind is not None else ""
        problems.add(
            f"type {kind!r} is not one of {', '.join(TRIGGER_TYPES)}{hint}", field="trigger"
        )
        return Trigger()
    for key in ("every", "cron"):
        if key in value and kind != ("interval" if key == "every" else "cron"):
            problems.add(f"'{key}' does not apply to a {kind} trigger; remove it", field="trigger")
    if kind == "interval":
        if value.get("every") is None:
            problems.add("an interval trigger needs 'every', e.g. every: 60s", field="trigger")
            return Trigger()
        try:
            every = parse_duration(value["every"])
        except ValueError as exc:
            problems.add(f"every: {exc}", field="trigger")
            return Trigger()
        if every <= 0:
            problems.add("every must be longer than 0 seconds, e.g. every: 60s", field="trigger")
        return Trigger("interval", every=every, input=value.get("input"))
    if kind == "cron":
        cron = value.get("cron")
        if not isinstance(cron, str) or not cron.strip():
            problems.add(
                "a cron trigger needs 'cron' text, e.g. cron: '*/5 * * * *'", field="trigger"
            )
            return Trigger()
        why = cron_problem(cron)
        if why:
            problems.add(f"cron {cron!r}: {why}", field="trigger")
        return Trigger("cron", cron=" ".join(cron.split()), input=value.get("input"))
    return Trigger()


def _parse_input_schema(value: Any, problems: Problems) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        problems.add("must map input keys to type names, e.g. {text: string}", field="input_schema")
        return None
    schema: dict[str, str] = {}
    for key, type_name in value.items():
        if type_name not in INPUT_TYPES:
            problems.add(
                f"type {type_name!r} for key '{key}' is not one of {', '.join(INPUT_TYPES)}"
                f"{suggest(str(type_name), INPUT_TYPES)}",
                field="input_schema",
            )
            continue
        schema[str(key)] = type_name
    return schema


def _parse_steps(
    raw: Mapping[str, Any], problems: Problems, known_agents: Collection[str] | None
) -> list[StepDefinition]:
    steps_raw = raw.get("steps")
    if steps_raw is None:
        problems.add("is missing; add a list of steps, each with an id and an agent", field="steps")
        return []
    if not isinstance(steps_raw, list) or not steps_raw:
        problems.add("must be a non-empty list of steps", field="steps")
        return []
    steps = []
    for position, item in enumerate(steps_raw, start=1):
        step = _parse_step(item, position, problems, known_agents)
        if step is not None:
            steps.append(step)
    return steps


def _parse_step(
    item: Any, position: int, problems: Problems, known_agents: Collection[str] | None
) -> StepDefinition | None:
    label = f"#{position}"
    if not isinstance(item, Mapping):
        problems.add("must be a mapping with at least id and agent", step=label)
        return None
    step_id = item.get("id")
    if step_id is None:
        problems.add("is missing; give the step an id such as classify", step=label, field="id")
    elif not isinstance(step_id, str) or not _STEP_ID.match(step_id):
        problems.add(
            f"{step_id!r} is not a valid step id; start with a letter or '_' and use letters, "
            "digits, '_' and '-'",
            step=label,
            field="id",
        )
    else:
        label = step_id
    before = len(problems.items)
    check_keys(item, STEP_KEYS, problems, label, "step")
    agent = item.get("agent")
    if not isinstance(agent, str) or not agent.strip():
        problems.add("is missing; name the agent this step calls", step=label, field="agent")
    elif known_agents is not None and agent not in known_agents:
        problems.add(
            f"agent '{agent}' is not installed{suggest(agent, known_agents)}; add it first or "
            "fix the name",
            step=label,
            field="agent",
        )
    needs = parse_needs(item.get("needs"), label, problems)
    when = None
    when_raw = item.get("when")
    if isinstance(when_raw, bool):
        when_raw = "true" if when_raw else "false"
    if when_raw is not None:
        try:
            when = compile_condition(when_raw)
        except WorkflowValidationError as exc:
            problems.add(exc.message, step=label, field="when")
    input_template = None
    try:
        input_template = compile_template(item.get("input", DEFAULT_INPUT))
    except WorkflowValidationError as exc:
        problems.add(exc.message, step=label, field="input")
    timeout = parse_step_duration(item.get("timeout"), label, "timeout", problems, positive=True)
    retries = item.get("retries", 0)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        problems.add(
            f"{retries!r} is not a count of retries; use a whole number >= 0, e.g. retries: 2",
            step=label,
            field="retries",
        )
    backoff = parse_step_duration(item.get("retry_backoff", 1.0), label, "retry_backoff", problems)
    max_backoff = parse_step_duration(
        item.get("retry_max_backoff", 60.0), label, "retry_max_backoff", problems
    )
    on_failure = item.get("on_failure", "fail")
    if on_failure not in ON_FAILURE:
        problems.add(
            f"{on_failure!r} is not one of fail, continue{suggest(str(on_failure), ON_FAILURE)}",
            step=label,
            field="on_failure",
        )
    if len(problems.items) > before or label.startswith("#") or input_template is None:
        return None
    return StepDefinition(
        id=label,
        agent=str(agent),
        needs=needs,
        when=when,
        input=input_template,
        timeout=timeout,
        retries=int(retries),
        retry_backoff=backoff if backoff is not None else 1.0,
        retry_max_backoff=max_backoff if max_backoff is not None else 60.0,
        on_failure=str(on_failure),
    )
