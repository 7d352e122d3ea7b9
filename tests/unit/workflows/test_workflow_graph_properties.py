"""Property tests: random DAGs validate and order correctly; random cyclic graphs are rejected."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_min.errors import WorkflowValidationError
from edge_min.workflows import WorkflowDefinition, parse_definition


@st.composite
def dags(draw: st.DrawFn) -> dict[str, Any]:
    """A random DAG: step i may need only steps j < i; written in a shuffled order."""
    n = draw(st.integers(min_value=1, max_value=14))
    ids = [f"s{i}" for i in range(n)]
    steps = []
    for i, sid in enumerate(ids):
        needs = draw(st.lists(st.sampled_from(ids[:i]), unique=True)) if i else []
        step: dict[str, Any] = {"id": sid, "agent": "x", "needs": needs}
        if needs and draw(st.booleans()):
            # Reference a random ancestor (a need is one) in input and when.
            target = draw(st.sampled_from(needs))
            step["input"] = {"v": f"${{steps.{target}.output.value}}"}
            step["when"] = f"${{steps.{target}.output.ok}} == true"
        steps.append(step)
    order = draw(st.permutations(steps))
    return {"name": "random-dag", "version": "1", "steps": list(order)}


def _closure(data: dict[str, Any]) -> dict[str, set[str]]:
    needs = {s["id"]: set(s["needs"]) for s in data["steps"]}
    result: dict[str, set[str]] = {}

    def walk(sid: str) -> set[str]:
        if sid not in result:
            acc = set(needs[sid])
            for n in needs[sid]:
                acc |= walk(n)
            result[sid] = acc
        return result[sid]

    for sid in needs:
        walk(sid)
    return result


@settings(max_examples=150)
@given(dags())
def test_random_dags_validate_and_topological_order_respects_needs(data: dict[str, Any]) -> None:
    d = parse_definition(data)
    order = [s.id for s in d.topological_order()]
    assert sorted(order) == sorted(s["id"] for s in data["steps"])
    position = {sid: i for i, sid in enumerate(order)}
    for step in d.steps:
        for need in step.needs:
            assert position[need] < position[step.id]
    assert parse_definition(d.to_json()) == d


@settings(max_examples=150)
@given(dags())
def test_ancestors_are_the_transitive_closure_of_needs(data: dict[str, Any]) -> None:
    d = parse_definition(data)
    closure = _closure(data)
    for sid, expected in closure.items():
        assert d.ancestors(sid) == expected
        assert d.descendants(sid) == {o for o, anc in closure.items() if sid in anc}


@st.composite
def cyclic_graphs(draw: st.DrawFn) -> tuple[dict[str, Any], list[str]]:
    """A random DAG plus a random cycle of length >= 2 planted in it."""
    data = draw(dags())
    ids = [s["id"] for s in data["steps"]]
    extra = draw(st.integers(min_value=0, max_value=3))
    ids += [f"c{i}" for i in range(extra)]
    for i in range(extra):
        data["steps"].append({"id": f"c{i}", "agent": "x", "needs": []})
    if len(ids) < 2:
        ids.append("c_extra")
        data["steps"].append({"id": "c_extra", "agent": "x", "needs": []})
    cycle = draw(st.lists(st.sampled_from(ids), min_size=2, max_size=6, unique=True))
    by_id = {s["id"]: s for s in data["steps"]}
    for i, sid in enumerate(cycle):
        # cycle[i + 1] needs cycle[i]; the last needs... wraps to the first needing the last.
        nxt = cycle[(i + 1) % len(cycle)]
        if sid not in by_id[nxt]["needs"]:
            by_id[nxt]["needs"] = [*by_id[nxt]["needs"], sid]
    return data, cycle


@settings(max_examples=150)
@given(cyclic_graphs())
def test_random_cyclic_graphs_are_rejected_with_a_cycle_path(
    case: tuple[dict[str, Any], list[str]],
) -> None:
    data, _ = case
    try:
        parse_definition(data)
    except WorkflowValidationError as err:
        message = str(err)
        assert "the needs form a cycle: " in message
        path = message.split("the needs form a cycle: ", 1)[1].split(";", 1)[0].split(" -> ")
        # The reported path is a real cycle: it closes, and each step needs the one before it.
        assert path[0] == path[-1] and len(path) >= 3
        needs = {s["id"]: set(s["needs"]) for s in data["steps"]}
        for before, after in itertools.pairwise(path):
            assert before in needs[after]
    else:
        raise AssertionError("a graph with a cycle was accepted")


def test_a_long_chain_does_not_hit_the_recursion_limit() -> None:
    n = 3000
    steps = [{"id": f"s{i}", "agent": "x", "needs": [f"s{i - 1}"] if i else []} for i in range(n)]
    d = parse_definition({"name": "chain", "version": "1", "steps": steps})
    assert isinstance(d, WorkflowDefinition)
    assert d.topological_order()[-1].id == f"s{n - 1}"
    steps[0]["needs"] = [f"s{n - 1}"]
    try:
        parse_definition({"name": "chain", "version": "1", "steps": steps})
    except WorkflowValidationError as err:
        assert "the needs form a cycle: s0 -> s1 -> s2" in str(err)
    else:
        raise AssertionError("a 3000-step cycle was accepted")
