"""Agent configs: executors, extensions, and the to_dict -> parse round trip."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_min.config import (
    AgentConfig,
    AgentResources,
    AgentRuntime,
    ConfigError,
    InputSpec,
    ModelConfig,
    OutputSpec,
    load_agent_config,
    parse_agent_config,
)

SPEC = Path(__file__).resolve().parents[2] / "fixtures" / "spec_configs"


def test_spec_agent_round_trips_through_json() -> None:
    agent = load_agent_config(SPEC / "edge-agent-config.yaml")
    data = json.loads(json.dumps(agent.to_dict()))
    again = parse_agent_config(data, "agents.config")
    assert again == agent
    assert again.source == "agents.config"
    assert data["resources"]["max_memory"] == 128 * 1024 * 1024


def test_command_executor_without_model() -> None:
    agent = parse_agent_config(
        {
            "name": "echo",
            "version": "0.1",
            "runtime": {
                "executor": "command",
                "command": "python3 -c 'import sys; print(sys.stdin.read())'",
                "env": {"LANG": "C"},
                "needs_network": True,
            },
            "input": {"format": "json"},
        },
        "echo.yaml",
    )
    assert agent.model is None
    # A string stays a shell command line (run by /bin/sh -c); a list is an argv.
    assert agent.runtime.command == "python3 -c 'import sys; print(sys.stdin.read())'"
    assert agent.runtime.env == {"LANG": "C"}
    assert agent.runtime.needs_network is True
    assert agent.output.classes == ()
    assert parse_agent_config(agent.to_dict(), "x") == agent


def test_python_executor_with_entry() -> None:
    agent = parse_agent_config(
        {
            "name": "upper",
            "version": "2",
            "runtime": {"executor": "python", "entry": "my_pkg.agents:upper", "threads": 4},
            "input": {"format": "text", "max_length": 64, "truncate": False},
        }
    )
    assert agent.runtime.entry == "my_pkg.agents:upper"
    assert (agent.input.max_length, agent.input.truncate) == (64, False)
    assert agent.runtime.threads == 4
    assert agent.source == "<string>"


def test_relative_model_path_resolves_against_the_agent_file(tmp_path: Path) -> None:
    (tmp_path / "agent.json").write_text(
        json.dumps(
            {
                "name": "clf",
                "version": "1",
                "model": {"path": "m/clf.onnx", "precision": "fp16"},
                "output": {"classes": ["a", "b"]},
            }
        )
    )
    agent = load_agent_config(tmp_path / "agent.json")
    assert agent.model == ModelConfig(path=str(tmp_path / "m" / "clf.onnx"), precision="fp16")
    assert agent.runtime.acceleration == "cpu"


def test_every_agent_error_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        parse_agent_config(
            {
                "name": "bad name!",
                "version": "1",
                "resources": {"max_cpu": 0},
                "runtime": {"executor": "gpu", "threads": 0},
                "extra": 1,
            },
            "a.yaml",
        )
    assert [e.path for e in info.value.errors] == [
        "extra",
        "name",
        "resources.max_cpu",
        "runtime.executor",
        "runtime.threads",
        "model",
        "output.classes",
    ]
    assert info.value.errors[2].message == (
        "a.yaml: resources.max_cpu: must be greater than 0, got 0"
    )


def test_missing_name_and_version() -> None:
    with pytest.raises(ConfigError) as info:
        parse_agent_config({"runtime": {"executor": "command", "command": ["true"]}}, "a.yaml")
    assert str(info.value).splitlines() == [
        "a.yaml: name: is required: the agent's name, e.g. text-classifier-lite",
        'a.yaml: version: is required: quote it in YAML, e.g. "1.0.0"',
    ]


def test_dataclass_defaults_are_the_documented_ones() -> None:
    assert AgentRuntime() == AgentRuntime(
        executor="onnxruntime",
        threads=1,
        acceleration="cpu",
        command=None,
        entry=None,
        env={},
        needs_network=False,
        provider_fallback=True,
    )
    assert InputSpec() == InputSpec("text", None, True)
    assert OutputSpec() == OutputSpec("json", ())
    with pytest.raises(TypeError):
        ModelConfig("quantized", "onnx", "x.onnx", "int8")  # type: ignore[call-arg]


names = st.from_regex(r"[a-z][a-z0-9_.-]{0,20}", fullmatch=True)
words = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=12)


@st.composite
def agent_configs(draw: st.DrawFn) -> AgentConfig:
    executor = draw(st.sampled_from(["onnxruntime", "command", "python"]))
    model = None
    if executor == "onnxruntime" or draw(st.booleans()):
        kind = draw(st.sampled_from(["quantized", "full"]))
        model = ModelConfig(  # a precision that fits the type (the parser refuses others)
            type=kind,
            path="/models/" + draw(names) + ".onnx",
            precision="fp32" if kind == "full" else draw(st.sampled_from(["int8", "fp16"])),
        )
    runtime = AgentRuntime(
        executor=executor,
        threads=draw(st.integers(1, 64)),
        acceleration=draw(st.sampled_from(["cpu", "gpu", "npu"])),
        command=tuple(draw(st.lists(words, min_size=1, max_size=4)))
        if executor == "command"
        else None,
        entry="pkg.mod:" + draw(st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True))
        if executor == "python"
        else None,
        env=draw(st.dictionaries(st.from_regex(r"[A-Z_][A-Z0-9_]{0,8}", fullmatch=True), words)),
        needs_network=draw(st.booleans()),
        provider_fallback=draw(st.booleans()),
    )
    fmt = draw(st.sampled_from(["text", "json", "tensor"]))
    classes = tuple(draw(st.lists(names, min_size=1, max_size=5, unique=True)))
    return AgentConfig(
        name=draw(names),
        version=draw(st.from_regex(r"[0-9]+\.[0-9]+\.[0-9]+", fullmatch=True)),
        resources=AgentResources(
            max_memory=draw(st.integers(1, 2**40)),
            max_cpu=draw(st.floats(0.01, 64, allow_nan=False)),
            max_storage=draw(st.integers(0, 2**40)),
        ),
        model=model,
        runtime=runtime,
        input=InputSpec(fmt, draw(st.none() | st.integers(1, 10**6)), draw(st.booleans())),
        output=OutputSpec("json", classes),
    )


@settings(max_examples=150, deadline=None)
@given(agent_configs())
def test_to_dict_parse_round_trip(agent: AgentConfig) -> None:
    data: dict[str, Any] = json.loads(json.dumps(agent.to_dict()))
    assert parse_agent_config(data, "db") == agent
