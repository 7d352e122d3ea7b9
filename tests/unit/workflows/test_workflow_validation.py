"""Each validation rule of parse_definition, asserting the message names step, field and fix."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from edge_min.errors import MissingDependency, WorkflowValidationError
from edge_min.workflows import parse_definition

BASE: dict[str, Any] = {
    "name": "w",
    "version": "1.0.0",
    "steps": [
        {"id": "classify", "agent": "clf", "input": "${input.text}"},
        {"id": "alert", "agent": "notify", "needs": ["classify"]},
    ],
}


def with_changes(top: dict[str, Any] | None = None, **step_changes: dict[str, Any]) -> Any:
    """BASE with top-level keys replaced and per-step keys merged (None deletes a key)."""
    data = copy.deepcopy(BASE)
    for key, value in (top or {}).items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    for step in data.get("steps", []):
        for key, value in step_changes.get(step["id"], {}).items():
            if value is None:
                step.pop(key, None)
            else:
                step[key] = value
    return data


def error_for(data: Any, **kwargs: Any) -> WorkflowValidationError:
    with pytest.raises(WorkflowValidationError) as err:
        parse_definition(data, source="wf.yaml", **kwargs)
    return err.value


def test_base_is_valid() -> None:
    parse_definition(BASE, known_agents={"clf", "notify"})


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("name", "wf.yaml: field 'name': is missing; add e.g. name: feedback-triage"),
        ("version", "wf.yaml: field 'version': is missing; add e.g. version: 1.0.0"),
        ("steps", "wf.yaml: field 'steps': is missing; add a list of steps"),
    ],
)
def test_missing_required_top_keys(key: str, message: str) -> None:
    err = error_for(with_changes({key: None}))
    assert str(err).startswith(message)
    assert err.field == key


def test_empty_steps_and_bad_name_and_version() -> None:
    assert "must be a non-empty list of steps" in str(error_for(with_changes({"steps": []})))
    err = error_for(with_changes({"name": "has space"}))
    assert "field 'name': 'has space' is not a valid workflow name" in str(err)
    assert "write e.g. version: 1.0.0" in str(error_for(with_changes({"version": True})))


def test_unknown_top_key_suggests_the_close_one() -> None:
    err = error_for(with_changes({"trigers": {"type": "manual"}}))
    assert "unknown workflow key 'trigers'; did you mean 'trigger'?" in str(err)
    assert "allowed: name, version, description, trigger, input_schema, steps" in str(err)


def test_unknown_step_key_names_the_step_and_suggests() -> None:
    err = error_for(with_changes(alert={"need": ["classify"]}))
    assert str(err).startswith(
        "wf.yaml: step 'alert': unknown step key 'need'; did you mean 'needs'?"
    )
    assert err.step == "alert"


def test_duplicate_step_ids() -> None:
    data = with_changes()
    data["steps"].append({"id": "classify", "agent": "clf"})
    err = error_for(data)
    assert "step 'classify', field 'id': id 'classify' is used by steps #1 and #3" in str(err)
    assert "give each step its own id" in str(err)


@pytest.mark.parametrize("bad", ["9lives", "has space", "a.b", "", 5])
def test_bad_step_ids(bad: Any) -> None:
    err = error_for(with_changes(classify={"id": bad}))
    assert f"step '#1', field 'id': {bad!r} is not a valid step id" in str(err)
    assert "start with a letter or '_'" in str(err)


def test_missing_step_id_and_agent() -> None:
    err = error_for(with_changes(classify={"id": None}))
    assert "step '#1', field 'id': is missing; give the step an id" in str(err)
    err = error_for(with_changes(alert={"agent": None}))
    assert "step 'alert', field 'agent': is missing; name the agent this step calls" in str(err)


def test_needs_naming_an_unknown_step_suggests_the_close_one() -> None:
    err = error_for(with_changes(alert={"needs": ["clasify"]}))
    assert str(err) == (
        "wf.yaml: step 'alert', field 'needs': 'clasify' is not a step in this workflow; "
        "did you mean 'classify'?"
    )
    assert (err.step, err.field) == ("alert", "needs")


def test_needs_must_be_a_list_of_ids_and_not_itself() -> None:
    assert "must be a list of step ids" in str(error_for(with_changes(alert={"needs": [1]})))
    err = error_for(with_changes(alert={"needs": ["alert"]}))
    assert "step 'alert', field 'needs': the step needs itself; remove 'alert'" in str(err)


def test_a_two_step_cycle_is_named_as_a_path() -> None:
    err = error_for(with_changes(classify={"needs": ["alert"]}))
    assert "field 'needs': the needs form a cycle: " in str(err)
    assert "classify -> alert -> classify" in str(err) or "alert -> classify -> alert" in str(err)
    assert "remove one of these needs" in str(err)


def test_a_three_step_cycle_lists_each_step_in_work_order() -> None:
    data = {
        "name": "w",
        "version": "1",
        "steps": [
            {"id": "a", "agent": "x", "needs": ["c"]},
            {"id": "b", "agent": "x", "needs": ["a"]},
            {"id": "c", "agent": "x", "needs": ["b"]},
            {"id": "ok", "agent": "x"},
        ],
    }
    err = error_for(data)
    assert "the needs form a cycle: a -> b -> c -> a" in str(err)


def test_unknown_agent_when_known_agents_given() -> None:
    err = error_for(BASE, known_agents=["clf", "notify-slack", "notifier"])
    assert "step 'alert', field 'agent': agent 'notify' is not installed; did you mean" in str(err)
    assert "add it first or fix the name" in str(err)
    parse_definition(BASE)  # without known_agents any name passes


def test_reference_to_a_step_that_is_not_an_ancestor() -> None:
    data = {
        "name": "w",
        "version": "1",
        "steps": [
            {"id": "a", "agent": "x"},
            {"id": "b", "agent": "x", "input": "${steps.a.output}"},
        ],
    }
    err = error_for(data)
    assert str(err) == (
        "wf.yaml: step 'b', field 'input': ${steps.a.output} reads step 'a', which is not among "
        "this step's needs (directly or transitively), so it may not have run; "
        "add 'a' to needs"
    )


def test_transitive_ancestors_may_be_referenced() -> None:
    data = {
        "name": "w",
        "version": "1",
        "steps": [
            {"id": "a", "agent": "x"},
            {"id": "b", "agent": "x", "needs": ["a"]},
            {"id": "c", "agent": "x", "needs": ["b"], "when": "${steps.a.output.ok}"},
        ],
    }
    assert parse_definition(data).step("c").references == {"a"}


def test_reference_in_when_to_a_sibling_is_rejected() -> None:
    data = with_changes()
    data["steps"].append(
        {"id": "log", "agent": "x", "needs": ["classify"], "when": "${steps.alert.output.sent}"}
    )
    err = error_for(data)
    assert "step 'log', field 'when': ${steps.alert.output.sent} reads step 'alert'" in str(err)


def test_reference_to_itself_and_to_no_step() -> None:
    err = error_for(with_changes(alert={"input": "${steps.alert.output}"}))
    assert "step 'alert', field 'input': ${steps.alert.output} refers to the step's own output" in (
        str(err)
    )
    err = error_for(with_changes(alert={"input": {"x": "${steps.clasify.output}"}}))
    assert "${steps.clasify.output} names no step of this workflow; did you mean 'classify'?" in (
        str(err)
    )


def test_bad_when_expression_reports_position_and_token() -> None:
    err = error_for(with_changes(alert={"when": "${steps.classify.output.label} = 'negative'"}))
    message = str(err)
    assert message.startswith(
        "wf.yaml: step 'alert', field 'when': invalid condition at position 31: "
        "unexpected character '='"
    )
    assert (err.step, err.field) == ("alert", "when")


def test_bad_reference_in_input() -> None:
    err = error_for(with_changes(alert={"input": {"t": "${steps.classify.label}"}}))
    expected = "step 'alert', field 'input': reference ${steps.classify.label} must continue"
    assert expected in str(err)


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("timeout", "10 parsecs", "expected a duration such as 30s, 5m, 1h or 7d"),
        ("timeout", 0, "must be longer than 0 seconds"),
        ("timeout", -1, "a duration cannot be negative"),
        ("retries", -1, "-1 is not a count of retries; use a whole number >= 0"),
        ("retries", 1.5, "1.5 is not a count of retries"),
        ("retries", True, "True is not a count of retries"),
        ("retries", "2", "'2' is not a count of retries"),
        ("retry_backoff", "soon", "expected a duration"),
        ("on_failure", "ignore", "'ignore' is not one of fail, continue"),
        ("on_failure", "contine", "did you mean 'continue'?"),
    ],
)
def test_bad_step_values(field: str, value: Any, fragment: str) -> None:
    err = error_for(with_changes(alert={field: value}))
    assert f"step 'alert', field '{field}': " in str(err)
    assert fragment in str(err)


@pytest.mark.parametrize(
    ("trigger", "fragment"),
    [
        ({"type": "webhook"}, "type 'webhook' is not one of manual, interval, cron"),
        ({"type": "intervall", "every": 5}, "did you mean 'interval'?"),
        ({}, "type None is not one of manual, interval, cron"),
        ({"type": "interval"}, "an interval trigger needs 'every', e.g. every: 60s"),
        ({"type": "interval", "every": "often"}, "every: expected a duration"),
        ({"type": "interval", "every": 0}, "every must be longer than 0 seconds"),
        ({"type": "cron"}, "a cron trigger needs 'cron' text"),
        ({"type": "cron", "cron": "* * *"}, "has 3 fields; it needs 5"),
        ({"type": "cron", "cron": "* * * * * *"}, "has 6 fields; it needs 5"),
        ({"type": "cron", "cron": "*/5 * * * $"}, "cron field day-of-week value '$'"),
        ({"type": "cron", "cron": "61 * * * *"}, "value '61' is out of range; use 0 to 59"),
        ({"type": "manual", "every": 5}, "'every' does not apply to a manual trigger"),
        ({"type": "interval", "every": 5, "cron": "* * * * *"}, "'cron' does not apply"),
        ({"type": "manual", "at": 5}, "unknown trigger key 'at'"),
        (["manual"], "must be a mapping such as {type: manual}"),
    ],
)
def test_bad_triggers(trigger: Any, fragment: str) -> None:
    err = error_for(with_changes({"trigger": trigger}))
    assert fragment in str(err)


def test_cron_trigger_is_checked_by_the_scheduler_grammar() -> None:
    d = parse_definition(with_changes({"trigger": {"type": "cron", "cron": "@hourly"}}))
    assert d.trigger.cron == "@hourly"
    err = error_for(with_changes({"trigger": {"type": "cron", "cron": "0 0 31 2 *"}}))
    assert "field 'trigger': cron '0 0 31 2 *': " in str(err)
    assert "never fires" in str(err)


@pytest.mark.parametrize(
    ("cron", "fragment"),
    [
        ("* * *", "has 3 fields; write 5 (minute hour day-of-month month day-of-week)"),
        ("*/5 * * * $", "field 5 '$' may use only digits, '*', '/', ',' and '-'"),
        ("H * * * *", "field 1 'H' may use only digits"),
    ],
)
def test_cron_shape_is_checked_when_the_scheduler_is_unavailable(
    cron: str, fragment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "edge_min.scheduler.cron", None)
    err = error_for(with_changes({"trigger": {"type": "cron", "cron": cron}}))
    assert fragment in str(err)
    trigger = {"type": "cron", "cron": "*/5 1-3 * JAN MON-FRI"}
    assert parse_definition(with_changes({"trigger": trigger})).trigger.cron == trigger["cron"]


def test_bad_input_schema() -> None:
    err = error_for(with_changes({"input_schema": {"text": "str"}}))
    assert "field 'input_schema': type 'str' for key 'text' is not one of" in str(err)
    assert "did you mean 'string'?" in str(err)
    err = error_for(with_changes({"input_schema": ["text"]}))
    assert "must map input keys to type names" in str(err)


def test_several_problems_are_reported_together() -> None:
    data = with_changes(
        {"version": None},
        classify={"retries": -1, "timout": 5},
        alert={"on_failure": "maybe"},
    )
    err = error_for(data)
    message = str(err)
    assert message.startswith("wf.yaml: 4 problems in the workflow:\n")
    assert "  - field 'version': is missing" in message
    assert "  - step 'classify': unknown step key 'timout'; did you mean 'timeout'?" in message
    assert "  - step 'classify', field 'retries': -1 is not a count" in message
    assert "  - step 'alert', field 'on_failure': 'maybe' is not one of" in message
    assert len(err.errors) == 4  # type: ignore[attr-defined]
    assert err.field == "version"


def test_text_that_is_not_a_mapping_or_not_parseable() -> None:
    err = error_for("- just\n- a list\n")
    assert "a workflow definition must be a mapping with name, version and steps" in str(err)
    err = error_for("name: [unclosed\n")
    assert str(err).startswith("wf.yaml: not valid YAML at line 2")
    err = error_for('{"name": "w" "version": 1}')
    assert str(err) == "wf.yaml: not valid JSON at line 1, column 14: Expecting ',' delimiter"
    with pytest.raises(WorkflowValidationError, match="YAML text, JSON text or a mapping"):
        parse_definition(42)  # type: ignore[arg-type]


def test_yaml_values_json_cannot_hold_are_rejected() -> None:
    text = "name: w\nversion: '1'\nsteps:\n  - id: a\n    agent: x\n    input: {day: 2024-01-02}\n"
    err = error_for(text)
    assert "step 'a', field 'input': value datetime.date(2024, 1, 2) at '.day'" in str(err)
    assert "quote dates and times" in str(err)


def test_missing_yaml_raises_missing_dependency_but_json_still_works(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "yaml", None)  # makes `import yaml` raise ImportError
    with pytest.raises(MissingDependency, match="pip install"):
        parse_definition("name: w\n")
    assert parse_definition('{"name": "w", "version": "1", "steps": [{"id": "a", "agent": "x"}]}')
