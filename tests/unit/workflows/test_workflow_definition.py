"""Parsing workflow definitions from YAML, JSON and mappings; the model and its graph helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_min.errors import WorkflowError
from edge_min.workflows import (
    StepDefinition,
    Trigger,
    WorkflowDefinition,
    compile_template,
    parse_definition,
)

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "workflows"

FEEDBACK_TRIAGE = """
name: feedback-triage
version: 1.0.0
trigger: {type: manual}  # or {type: interval, every: 60s} or {type: cron, cron: "*/5 * * * *"}
steps:
  - id: classify
    agent: text-classifier-lite
    input: "${input.text}"       # a string that is one reference keeps the value's type
  - id: alert
    agent: notify
    needs: [classify]            # the DAG; independent steps run in parallel within limits
    when: "${steps.classify.output.label} == 'negative'"
    input: {text: "${input.text}", score: "${steps.classify.output.scores.negative}"}
    timeout: 10s
    retries: 2                   # with exponential backoff
    on_failure: continue         # or fail (the default)
"""


def test_the_contract_example_parses_into_the_model() -> None:
    d = parse_definition(FEEDBACK_TRIAGE, source="feedback-triage.yaml")
    assert (d.name, d.version, d.description) == ("feedback-triage", "1.0.0", "")
    assert d.trigger == Trigger("manual")
    classify, alert = d.steps
    assert classify == StepDefinition(
        id="classify", agent="text-classifier-lite", input=compile_template("${input.text}")
    )
    assert alert.needs == ("classify",)
    assert alert.when is not None and alert.when.references == {"classify"}
    assert alert.input.references == {"classify"}
    assert (alert.timeout, alert.retries, alert.on_failure) == (10.0, 2, "continue")
    assert (alert.retry_backoff, alert.retry_max_backoff) == (1.0, 60.0)
    ctx = {
        "input": {"text": "crashes"},
        "steps": {"classify": {"output": {"label": "negative", "scores": {"negative": 0.8}}}},
    }
    assert classify.input.render(ctx) == "crashes"
    assert alert.when.evaluate(ctx) is True
    assert alert.input.render(ctx) == {"text": "crashes", "score": 0.8}


def test_round_trip_through_canonical_json_and_dict_is_equal() -> None:
    d = parse_definition(FEEDBACK_TRIAGE)
    text = d.to_json()
    again = parse_definition(text)
    assert again == d
    assert again.to_json() == text
    assert parse_definition(d.to_dict()) == d
    assert json.loads(text)["steps"][1]["timeout"] == 10.0
    assert d.digest() == again.digest() and len(d.digest()) == 64


def test_canonical_json_does_not_depend_on_key_order_or_spelling() -> None:
    a = parse_definition(FEEDBACK_TRIAGE)
    shuffled = {
        "steps": [
            {"input": "${input.text}", "agent": "text-classifier-lite", "id": "classify"},
            {
                "on_failure": "continue",
                "retries": 2,
                "timeout": 10,
                "input": {
                    "score": "${steps.classify.output.scores.negative}",
                    "text": "${input.text}",
                },
                "when": "${steps.classify.output.label} == 'negative'",
                "needs": "classify",
                "agent": "notify",
                "id": "alert",
            },
        ],
        "trigger": "manual",
        "version": "1.0.0",
        "name": "feedback-triage",
    }
    assert parse_definition(shuffled).to_json() == a.to_json()


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.*")), ids=lambda p: p.name)
def test_every_example_file_parses_and_round_trips(path: Path) -> None:
    d = parse_definition(path.read_text(), source=path.name)
    assert parse_definition(d.to_json()) == d
    assert len(d.topological_order()) == len(d.steps)


def test_examples_include_yaml_and_json() -> None:
    suffixes = {p.suffix for p in EXAMPLES.glob("*.*")}
    assert {".yaml", ".json"} <= suffixes


def test_json_example_uses_interval_trigger_schema_and_parallel_steps() -> None:
    d = parse_definition((EXAMPLES / "sensor-anomaly.json").read_text())
    assert d.trigger == Trigger("interval", every=60.0)
    assert d.input_schema == {"device": "string", "threshold": "number"}
    assert [s.id for s in d.steps if not s.needs] == ["read_temperature", "read_vibration"]
    assert d.step("read_temperature").retry_backoff == 0.5


def test_json_text_and_yaml_flow_mapping_text_both_parse() -> None:
    mapping = {"name": "w", "version": "1", "steps": [{"id": "a", "agent": "x"}]}
    assert parse_definition(json.dumps(mapping)) == parse_definition(mapping)
    assert parse_definition("{name: w, version: '1', steps: [{id: a, agent: x}]}") == (
        parse_definition(mapping)
    )
    assert parse_definition(json.dumps(mapping).encode()) == parse_definition(mapping)


def test_defaults_for_a_minimal_workflow() -> None:
    d = parse_definition({"name": "w", "version": 2, "steps": [{"id": "a", "agent": "x"}]})
    step = d.steps[0]
    assert d.version == "2"
    assert d.trigger == Trigger("manual")
    assert d.input_schema is None
    assert step.needs == () and step.when is None and step.timeout is None
    assert (step.retries, step.on_failure) == (0, "fail")
    # A step without input receives the whole workflow input.
    assert step.input.render({"input": {"k": [1]}}) == {"k": [1]}


def test_triggers_interval_and_cron_parse() -> None:
    base = {"name": "w", "version": "1", "steps": [{"id": "a", "agent": "x"}]}
    d = parse_definition({**base, "trigger": {"type": "interval", "every": "5m"}})
    assert d.trigger == Trigger("interval", every=300.0)
    d = parse_definition({**base, "trigger": {"type": "cron", "cron": "*/5  * * * MON-FRI"}})
    assert d.trigger == Trigger("cron", cron="*/5 * * * MON-FRI")
    assert parse_definition(d.to_json()).trigger == d.trigger


def test_backoff_is_exponential_and_capped() -> None:
    step = StepDefinition(id="a", agent="x", retries=10, retry_backoff=0.5, retry_max_backoff=3.0)
    assert [step.backoff_delay(i) for i in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_when_accepts_yaml_booleans() -> None:
    d = parse_definition(
        {"name": "w", "version": "1", "steps": [{"id": "a", "agent": "x", "when": False}]}
    )
    assert d.steps[0].when is not None and d.steps[0].when.evaluate({}) is False


DIAMOND = {
    "name": "diamond",
    "version": "1",
    "steps": [
        {"id": "d", "agent": "x", "needs": ["b", "c"]},
        {"id": "b", "agent": "x", "needs": ["a"]},
        {"id": "c", "agent": "x", "needs": ["a"]},
        {"id": "a", "agent": "x"},
        {"id": "e", "agent": "x"},
    ],
}


def test_steps_keep_written_order_and_topological_order_respects_needs() -> None:
    d = parse_definition(DIAMOND)
    assert d.step_ids == ("d", "b", "c", "a", "e")
    assert [s.id for s in d.topological_order()] == ["a", "b", "c", "d", "e"]


def test_ancestors_descendants_and_sinks() -> None:
    d = parse_definition(DIAMOND)
    assert d.ancestors("d") == {"a", "b", "c"}
    assert d.ancestors("a") == frozenset()
    assert d.descendants("a") == {"b", "c", "d"}
    assert d.sinks() == ("d", "e")
    with pytest.raises(WorkflowError, match="has no step 'zz'"):
        d.ancestors("zz")


def test_validate_input_against_input_schema() -> None:
    d = parse_definition(
        {
            "name": "w",
            "version": "1",
            "input_schema": {"text": "string", "n": "integer", "extra": "any"},
            "steps": [{"id": "a", "agent": "x"}],
        }
    )
    d.validate_input({"text": "hi", "n": 3, "extra": None})
    with pytest.raises(WorkflowError, match="needs input key 'n' \\(integer\\)"):
        d.validate_input({"text": "hi", "extra": 1})
    with pytest.raises(WorkflowError, match="input key 'n' must be integer, got True"):
        d.validate_input({"text": "hi", "n": True, "extra": 1})
    with pytest.raises(WorkflowError, match="takes an object input"):
        d.validate_input("hi")
    parse_definition({"name": "w", "version": "1", "steps": [{"id": "a", "agent": "x"}]})
    assert parse_definition(d.to_json()).input_schema == d.input_schema


def test_definitions_are_frozen_and_hashable() -> None:
    d = parse_definition(FEEDBACK_TRIAGE)
    with pytest.raises(AttributeError):
        d.name = "other"  # type: ignore[misc]
    assert hash(d) == hash(parse_definition(d.to_json()))
    assert isinstance(d, WorkflowDefinition)
