"""References, templates and ``when`` conditions: parsing, rendering, evaluation and errors."""

from __future__ import annotations

import builtins
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_min.errors import WorkflowError, WorkflowValidationError
from edge_min.workflows.expressions import (
    compile_condition,
    compile_template,
    parse_reference,
)

CTX: dict[str, Any] = {
    "input": {"text": "it broke", "n": 3, "items": [{"name": "a"}, {"name": "b"}], "flag": False},
    "steps": {
        "classify": {"output": {"label": "negative", "scores": {"negative": 0.9, "positive": 0.1}}},
        "count": {"output": 7},
    },
}


# --------------------------------------------------------------------------- references


def test_reference_forms_parse_to_root_step_and_path() -> None:
    assert parse_reference("input").step is None
    assert parse_reference("input").path == ()
    assert parse_reference("input.items.0.name").path == ("items", "0", "name")
    assert parse_reference("input.items[0].name").path == ("items", 0, "name")
    ref = parse_reference("steps.classify.output.scores.negative")
    assert (ref.step, ref.path) == ("classify", ("scores", "negative"))
    assert parse_reference("steps.my-step_2.output").step == "my-step_2"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("inputs.x", "unknown reference ${inputs.x}"),
        ("env.HOME", "unknown reference ${env.HOME}"),
        ("steps.a", "must continue with '.output'"),
        ("steps.a.result", "must continue with '.output'"),
        ("steps..output", "needs a step id"),
        ("input.items[x]", "expected an integer index"),
        ("input.a..b", "expected a key after '.'"),
    ],
)
def test_malformed_references_are_rejected_with_the_fix(text: str, fragment: str) -> None:
    with pytest.raises(WorkflowValidationError) as err:
        parse_reference(text)
    assert fragment in str(err.value)


def test_dotted_index_and_bracket_index_reach_the_same_item() -> None:
    dotted = compile_template("${input.items.1.name}").render(CTX)
    bracket = compile_template("${input.items[1].name}").render(CTX)
    assert dotted == bracket == "b"
    assert compile_template("${input.items[-1].name}").render(CTX) == "b"


# --------------------------------------------------------------------------- templates


def test_a_lone_reference_keeps_the_value_type() -> None:
    assert compile_template("${input.n}").render(CTX) == 3
    assert compile_template("${input.items}").render(CTX) == CTX["input"]["items"]
    assert compile_template("${input.flag}").render(CTX) is False
    assert compile_template("${steps.classify.output.scores}").render(CTX) == {
        "negative": 0.9,
        "positive": 0.1,
    }
    assert compile_template("${input}").render(CTX) == CTX["input"]


def test_mixed_text_interpolates_and_json_encodes_non_strings() -> None:
    t = compile_template("n=${input.n} label=${steps.classify.output.label} items=${input.items}")
    assert t.render(CTX) == 'n=3 label=negative items=[{"name":"a"},{"name":"b"}]'
    assert compile_template("flag ${input.flag} ${input.none}").render(
        {"input": {"flag": True, "none": None}}
    ) == ("flag true null")


def test_nested_structures_render_recursively_and_literals_pass_through() -> None:
    t = compile_template(
        {"a": ["${input.text}", 1, 2.5, None, True], "b": {"c": "${steps.count.output}"}}
    )
    assert t.render(CTX) == {"a": ["it broke", 1, 2.5, None, True], "b": {"c": 7}}
    assert t.references == {"count"}


def test_double_dollar_escapes_a_literal_reference() -> None:
    t = compile_template("cost: $${input.price} for ${input.text}")
    assert t.render(CTX) == "cost: ${input.price} for it broke"
    assert t.refs[0].text == "input.text"


def test_template_references_lists_step_ids_only() -> None:
    t = compile_template(["${input.text}", "${steps.a.output}", "x ${steps.b.output.y[2]}"])
    assert t.references == {"a", "b"}


def test_missing_value_in_a_template_names_the_reference() -> None:
    with pytest.raises(WorkflowError) as err:
        compile_template("${input.missing}").render(CTX)
    assert "${input.missing}" in str(err.value)
    assert "no key 'missing'" in str(err.value)
    with pytest.raises(WorkflowError) as err:
        compile_template({"x": "${steps.skipped.output.label}"}).render(CTX)
    assert "step 'skipped' has no output" in str(err.value)
    with pytest.raises(WorkflowError) as err:
        compile_template("${input.items[5]}").render(CTX)
    assert "index 5 is out of range (the list has 2 items)" in str(err.value)
    with pytest.raises(WorkflowError) as err:
        compile_template("${input.text.deeper}").render(CTX)
    assert "cannot take 'deeper' of a string value" in str(err.value)


def test_unclosed_reference_and_non_json_values_are_rejected() -> None:
    with pytest.raises(WorkflowValidationError, match="unclosed reference"):
        compile_template("hello ${input.text")
    with pytest.raises(WorkflowValidationError, match="which JSON cannot hold"):
        compile_template({"when": object()})
    with pytest.raises(WorkflowValidationError, match="keys must be strings"):
        compile_template({1: "x"})


def test_templates_compare_by_source() -> None:
    same = compile_template({"b": "${input}", "a": 1})
    assert compile_template({"a": 1, "b": "${input}"}) == same
    assert compile_template("${input}") != compile_template("${input.x}")


# No "$" anywhere, so no generated string can contain a reference by accident.
plain_text = st.text(alphabet=st.characters(blacklist_characters="$"))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | plain_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(plain_text, inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_a_template_without_references_renders_to_itself(value: Any) -> None:
    assert compile_template(value).render({}) == value


@given(json_values)
def test_a_lone_reference_returns_any_input_unchanged(value: Any) -> None:
    assert compile_template("${input}").render({"input": value}) == value


# --------------------------------------------------------------------------- conditions


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${steps.classify.output.label} == 'negative'", True),
        ('${steps.classify.output.label} != "negative"', False),
        ("${steps.classify.output.scores.negative} > 0.5", True),
        ("${steps.classify.output.scores.negative} <= 0.5", False),
        ("${input.n} >= 3", True),
        ("${input.n} < 3", False),
        ("${input.n} == 3.0", True),
        ("3 == ${input.n}", True),
        ("${input.n} == ${steps.count.output}", False),
        ("${input.text}", True),
        ("${input.flag}", False),
        ("not ${input.flag}", True),
        ("${input.items[1].name} == 'b'", True),
        ("${input.items.0.name} == 'a'", True),
        ("'abc' < 'abd'", True),
        ("-1 < 0", True),
        ("1e3 == 1000", True),
        ("null == null", True),
        ("true", True),
        ("(false)", False),
        ("'it\\'s' == \"it's\"", True),
    ],
)
def test_conditions_evaluate(text: str, expected: bool) -> None:
    assert compile_condition(text).evaluate(CTX) is expected


def test_precedence_is_not_then_and_then_or() -> None:
    # If "or" bound tighter than "and", this would be false and (true or true) -> false.
    assert compile_condition("false and true or true").evaluate({}) is True
    # If "and" bound tighter than "not", this would be not (false and false) -> true.
    assert compile_condition("not true and false").evaluate({}) is False
    assert compile_condition("not (true and false)").evaluate({}) is True
    assert compile_condition("true or true and false").evaluate({}) is True
    assert compile_condition("(true or true) and false").evaluate({}) is False
    assert compile_condition("not not true").evaluate({}) is True


def test_a_missing_value_compares_as_null_in_a_condition() -> None:
    assert compile_condition("${input.absent} == null").evaluate(CTX) is True
    assert compile_condition("${steps.skipped.output.label} == null").evaluate(CTX) is True
    assert compile_condition("${steps.skipped.output.label} == 'negative'").evaluate(CTX) is False
    assert compile_condition("${steps.skipped.output}").evaluate(CTX) is False
    assert compile_condition("not ${input.items[9]}").evaluate(CTX) is True
    assert compile_condition("${input.absent} < 1").evaluate(CTX) is False


def test_ordering_across_types_is_false_not_an_error() -> None:
    ctx = {"input": {"s": "10", "n": 5}}
    for op in ("<", "<=", ">", ">="):
        assert compile_condition(f"${{input.s}} {op} ${{input.n}}").evaluate(ctx) is False
    assert compile_condition("true > 0").evaluate({}) is False
    assert compile_condition("${input.s} != ${input.n}").evaluate(ctx) is True


def test_equality_follows_json_booleans_are_not_numbers() -> None:
    assert compile_condition("true == 1").evaluate({}) is False
    assert compile_condition("false == 0").evaluate({}) is False
    assert compile_condition("${input} == 1").evaluate({"input": True}) is False
    ctx = {"input": {"a": [1, {"b": True}], "c": [1.0, {"b": True}]}}
    assert compile_condition("${input.a} == ${input.c}").evaluate(ctx) is True
    assert compile_condition("${input.a} == 'x'").evaluate(ctx) is False


def test_condition_references_are_the_step_ids_read() -> None:
    cond = compile_condition("${steps.a.output.x} == 1 or (${input.y} and ${steps.b.output})")
    assert cond.references == {"a", "b"}
    assert [str(r) for r in cond.refs] == ["${steps.a.output.x}", "${input.y}", "${steps.b.output}"]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "the condition is empty"),
        ("${input.x} ==", "found the end of the condition"),
        ("${input.x} == 'a' 'b'", "unexpected string 'b' after a full condition"),
        ("(${input.x} == 1", "expected ')'"),
        ("1 < 2 < 3", "comparisons do not chain"),
        ("label == 'x'", "unknown name 'label'"),
        ("${input.x} = 1", "unexpected character '='"),
        ("${input.x} && true", "unexpected character '&'"),
        ("'open", "unclosed string"),
        ("${input.x", "unclosed reference"),
        ("'${steps.a.output.label}' == 'negative'", "remove the quotes"),
        ("${steps.a.result} == 1", "must continue with '.output'"),
    ],
)
def test_bad_conditions_name_the_problem(text: str, fragment: str) -> None:
    with pytest.raises(WorkflowValidationError) as err:
        compile_condition(text)
    assert fragment in str(err.value)


def test_a_syntax_error_points_at_the_offending_position() -> None:
    with pytest.raises(WorkflowValidationError) as err:
        compile_condition("${input.x} == 1 and bogus")
    message = str(err.value)
    assert "at position 20" in message
    assert message.endswith("\n    " + " " * 20 + "^")


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('touch /tmp/pwned')",
        "${input.x}.__class__",
        "open('/etc/passwd')",
        "[x for x in ()]",
        "lambda: 1",
        "1 if true else 0",
        "${input.x} + 1",
    ],
)
def test_python_is_not_accepted_and_nothing_reaches_eval(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The parser must refuse these itself; eval/exec/compile are tripwires, not the defence.
    def tripwire(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("user text reached eval/exec/compile")

    for name in ("eval", "exec", "compile"):
        monkeypatch.setattr(builtins, name, tripwire)
    with pytest.raises(WorkflowValidationError, match="invalid condition at position"):
        compile_condition(text)


def test_valid_conditions_compile_and_evaluate_without_eval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def tripwire(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("user text reached eval/exec/compile")

    for name in ("eval", "exec", "compile"):
        monkeypatch.setattr(builtins, name, tripwire)
    cond = compile_condition("not ${input.a} == 'x' and (${input.b} > 2 or ${input.c})")
    assert cond.evaluate({"input": {"a": "y", "b": 3, "c": None}}) is True


def test_non_text_condition_is_rejected() -> None:
    with pytest.raises(WorkflowValidationError, match="must be text"):
        compile_condition(5)  # type: ignore[arg-type]


@given(st.integers(), st.integers())
def test_numeric_comparisons_match_python(a: int, b: int) -> None:
    ctx = {"input": {"a": a, "b": b}}
    for op, expected in (
        ("==", a == b),
        ("!=", a != b),
        ("<", a < b),
        ("<=", a <= b),
        (">", a > b),
        (">=", a >= b),
    ):
        assert compile_condition(f"${{input.a}} {op} ${{input.b}}").evaluate(ctx) is expected
        assert compile_condition(f"{a} {op} {b}").evaluate({}) is expected


@given(st.text(max_size=20))
def test_any_string_literal_round_trips_through_the_tokenizer(s: str) -> None:
    if "${" in s:
        return
    escaped = s.replace("\\", "\\\\").replace("'", "\\'")
    cond = compile_condition(f"${{input}} == '{escaped}'")
    assert cond.evaluate({"input": s}) is True
