"""edge-agent-config.yaml: one agent's identity, resource limits, model, runtime and I/O.

Extensions to the spec's keys (all under ``runtime``/``input``):

- ``runtime.executor``: ``onnxruntime`` (the spec's; needs ``model``), ``command`` (runs
  ``runtime.command``, an argv list or a shell-style string) or ``python`` (calls
  ``runtime.entry``, ``"module:function"``).
- ``runtime.env`` (str -> str), ``runtime.needs_network`` (default false: the agent runs
  without network access), ``runtime.provider_fallback`` (default true: fall back to the CPU
  provider when the requested acceleration is unavailable).
- ``input.truncate`` (default true: text longer than ``max_length`` is cut; false: refused).

``output.classes`` is required for an onnxruntime agent that reads text and writes JSON (the
classifier case). ``AgentConfig.to_dict`` gives JSON-ready data that ``parse_agent_config``
accepts back, for the ``agents.config`` column.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from edge_min.config._read import read_data
from edge_min.config._validate import Reader, describe, join, show
from edge_min.config.runtime import MB

AGENT_TYPES = ("edge",)
MODEL_TYPES = ("quantized", "full")
MODEL_FORMATS = ("onnx",)
PRECISIONS = ("int8", "fp16", "fp32")
EXECUTORS = ("onnxruntime", "command", "python")
ACCELERATIONS = ("cpu", "gpu", "npu")
INPUT_FORMATS = ("text", "json", "tensor")
OUTPUT_FORMATS = ("json",)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ENTRY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class AgentResources:
    """Limits for one invocation: memory and storage in bytes, CPU in cores."""

    max_memory: int = 128 * MB
    max_cpu: float = 1.0
    max_storage: int = 100 * MB


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """The model file an agent runs (keyword-only: ``path`` is the one required field)."""

    type: str = "quantized"
    format: str = "onnx"
    path: str
    precision: str = "int8"


@dataclass(frozen=True)
class AgentRuntime:
    """How the agent is executed."""

    executor: str = "onnxruntime"
    threads: int = 1
    acceleration: str = "cpu"
    command: tuple[str, ...] | str | None = None  # a string is run by /bin/sh -c
    entry: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    needs_network: bool = False
    provider_fallback: bool = True


@dataclass(frozen=True)
class InputSpec:
    """What the agent accepts."""

    format: str = "text"
    max_length: int | None = None
    truncate: bool = True


@dataclass(frozen=True)
class OutputSpec:
    """What the agent returns; ``classes`` are a classifier's labels in output order."""

    format: str = "json"
    classes: tuple[str, ...] = ()


@dataclass(frozen=True)
class AgentConfig:
    """The whole of edge-agent-config.yaml."""

    name: str
    version: str
    type: str = "edge"
    resources: AgentResources = field(default_factory=AgentResources)
    model: ModelConfig | None = None
    runtime: AgentRuntime = field(default_factory=AgentRuntime)
    input: InputSpec = field(default_factory=InputSpec)
    output: OutputSpec = field(default_factory=OutputSpec)
    source: str | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data that ``parse_agent_config`` reads back to an equal config."""
        rt = self.runtime
        return {
            "name": self.name,
            "version": self.version,
            "type": self.type,
            "resources": {
                "max_memory": self.resources.max_memory,
                "max_cpu": self.resources.max_cpu,
                "max_storage": self.resources.max_storage,
            },
            "model": None
            if self.model is None
            else {
                "type": self.model.type,
                "format": self.model.format,
                "path": self.model.path,
                "precision": self.model.precision,
            },
            "runtime": {
                "executor": rt.executor,
                "threads": rt.threads,
                "acceleration": rt.acceleration,
                "command": (
                    rt.command
                    if rt.command is None or isinstance(rt.command, str)
                    else list(rt.command)
                ),
                "entry": rt.entry,
                "env": dict(rt.env),
                "needs_network": rt.needs_network,
                "provider_fallback": rt.provider_fallback,
            },
            "input": {
                "format": self.input.format,
                "max_length": self.input.max_length,
                "truncate": self.input.truncate,
            },
            "output": {"format": self.output.format, "classes": list(self.output.classes)},
        }


AGENT_KEYS = ("name", "version", "type", "resources", "model", "runtime", "input", "output")
_RESOURCE_KEYS = ("max_memory", "max_cpu", "max_storage")
_MODEL_KEYS = ("type", "format", "path", "precision")
_RUNTIME_KEYS = (
    "executor",
    "threads",
    "acceleration",
    "command",
    "entry",
    "env",
    "needs_network",
    "provider_fallback",
)
_INPUT_KEYS = ("format", "max_length", "truncate")
_OUTPUT_KEYS = ("format", "classes")


def load_agent_config(path: str | os.PathLike[str]) -> AgentConfig:
    """Read and validate an agent config file (YAML, or JSON when it ends in .json)."""
    data, source = read_data(path)
    return parse_agent_config(data, source, base_dir=os.path.dirname(os.path.abspath(source)))


def parse_agent_config(
    data: Any, source: str = "<string>", *, base_dir: str | None = None
) -> AgentConfig:
    """Validate agent config data (a file's or ``AgentConfig.to_dict()``'s); all errors at once.

    A relative ``model.path`` is resolved against ``base_dir`` when given.
    """
    r = Reader(source, base_dir)
    if not isinstance(data, dict):
        r.fail("", f"the top level must be a mapping of agent keys, got {describe(data)}", data)
        r.raise_errors()
    r.check_keys(data, "", AGENT_KEYS)
    name = r.required_string(data, "name", "", "the agent's name, e.g. text-classifier-lite")
    if name and not _NAME.match(name):
        r.fail("name", f"{show(name)} is not a valid name: use letters, digits, '_', '.', '-'")
    cfg = AgentConfig(
        name=name,
        version=r.required_string(data, "version", "", 'quote it in YAML, e.g. "1.0.0"'),
        type=r.enum(data, "type", "", "edge", AGENT_TYPES),
        resources=_resources(r, data),
        model=_model(r, data),
        runtime=_runtime(r, data),
        input=_input(r, data),
        output=_output(r, data),
        source=source,
    )
    _cross_check(r, cfg)
    r.raise_errors()
    return cfg


def _resources(r: Reader, data: dict[str, Any]) -> AgentResources:
    p = "resources"
    d = r.section(data, "resources", "", _RESOURCE_KEYS)
    dflt = AgentResources()
    return AgentResources(
        max_memory=r.size(d, "max_memory", p, dflt.max_memory, minimum=1),
        max_cpu=r.number(d, "max_cpu", p, dflt.max_cpu, above=0),
        max_storage=r.size(d, "max_storage", p, dflt.max_storage),
    )


def _model(r: Reader, data: dict[str, Any]) -> ModelConfig | None:
    if data.get("model") is None:
        return None
    p = "model"
    d = r.section(data, "model", "", _MODEL_KEYS)
    if not d:
        return None
    path = r.required_string(d, "path", p, "the model file, e.g. models/classifier.onnx")
    kind = r.enum(d, "type", p, "quantized", MODEL_TYPES)
    # The type says which precisions fit it: quantized weights are int8 (or fp16), a full
    # model is fp32; the precision is then checked against the graph itself at add time.
    precision = r.enum(d, "precision", p, "fp32" if kind == "full" else "int8", PRECISIONS)
    if "precision" in d and (kind == "full") != (precision == "fp32"):
        fits = "fp32" if kind == "full" else "int8 or fp16"
        other = "quantized" if kind == "full" else "full"
        r.fail(
            join(p, "precision"),
            f"is {precision} but model.type is {kind}, which takes {fits}; set "
            f"model.type: {other} or a matching precision",
            precision,
        )
    return ModelConfig(
        path=r.resolve(path) if path else "",
        type=kind,
        format=r.enum(d, "format", p, "onnx", MODEL_FORMATS),
        precision=precision,
    )


def _runtime(r: Reader, data: dict[str, Any]) -> AgentRuntime:
    p = "runtime"
    d = r.section(data, "runtime", "", _RUNTIME_KEYS)
    dflt = AgentRuntime()
    entry = r.optional_string(d, "entry", p)
    if entry and not _ENTRY.match(entry):
        r.fail(join(p, "entry"), f"expected 'module:function', got {show(entry)}", entry)
    return AgentRuntime(
        executor=r.enum(d, "executor", p, dflt.executor, EXECUTORS),
        threads=r.integer(d, "threads", p, dflt.threads, minimum=1),
        acceleration=r.enum(d, "acceleration", p, dflt.acceleration, ACCELERATIONS),
        command=_command(r, d.get("command"), join(p, "command")),
        entry=entry,
        env=_env(r, d.get("env"), join(p, "env")),
        needs_network=r.boolean(d, "needs_network", p, dflt.needs_network),
        provider_fallback=r.boolean(d, "provider_fallback", p, dflt.provider_fallback),
    )


def _command(r: Reader, value: object, where: str) -> tuple[str, ...] | str | None:
    # After an error this returns an empty tuple, not None, so that "command is required"
    # does not pile onto the error that says what is wrong with it.
    if value is None:
        return None
    if isinstance(value, str):
        # A string is a shell command line, run by /bin/sh -c as written; only check that it
        # names something and that its quotes balance.
        try:
            if not shlex.split(value):
                r.fail(where, "must name a program to run", value)
                return ()
        except ValueError as exc:
            r.fail(where, f"cannot split command {show(value)}: {exc}", value)
            return ()
        return value
    elif isinstance(value, list):
        argv = [item for item in value if isinstance(item, str) and item]
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item:
                r.fail(join(where, i), f"expected a non-empty string, got {describe(item)}", item)
        if len(argv) != len(value):
            return ()
    else:
        r.fail(where, f"expected an argv list or a string, got {describe(value)}", value)
        return ()
    if not argv:
        r.fail(where, "must name a program to run", value)
    return tuple(argv)


def _env(r: Reader, value: object, where: str) -> dict[str, str]:
    env = r.mapping(value, where)
    out: dict[str, str] = {}
    for key, val in env.items():
        if not _ENV_NAME.match(key):
            r.fail(join(where, key), f"{show(key)} is not a valid environment variable name")
        elif not isinstance(val, str):
            r.fail(join(where, key), f"expected a string, got {describe(val)} (quote it)", val)
        else:
            out[key] = val
    return out


def _input(r: Reader, data: dict[str, Any]) -> InputSpec:
    p = "input"
    d = r.section(data, "input", "", _INPUT_KEYS)
    return InputSpec(
        format=r.enum(d, "format", p, "text", INPUT_FORMATS),
        max_length=r.optional_integer(d, "max_length", p, minimum=1),
        truncate=r.boolean(d, "truncate", p, True),
    )


def _output(r: Reader, data: dict[str, Any]) -> OutputSpec:
    p = "output"
    d = r.section(data, "output", "", _OUTPUT_KEYS)
    return OutputSpec(
        format=r.enum(d, "format", p, "json", OUTPUT_FORMATS),
        classes=r.string_list(d, "classes", p, ()),
    )


def _cross_check(r: Reader, cfg: AgentConfig) -> None:
    rt = cfg.runtime
    ex = f"executor {rt.executor}"
    if rt.executor == "onnxruntime" and cfg.model is None:
        r.fail("model", f"is required with {ex}: give model.path to an .onnx file")
    if rt.executor == "command" and rt.command is None:
        r.fail("runtime.command", f"is required with {ex}: an argv list or a command string")
    if rt.executor == "python" and rt.entry is None:
        r.fail("runtime.entry", f"is required with {ex}: 'module:function'")
    if rt.executor != "command" and rt.command is not None:
        r.fail("runtime.command", f"is only used by executor command, not {rt.executor}")
    if rt.executor != "python" and rt.entry is not None:
        r.fail("runtime.entry", f"is only used by executor python, not {rt.executor}")
    if (
        rt.executor == "onnxruntime"
        and cfg.input.format == "text"
        and cfg.output.format == "json"
        and not cfg.output.classes
    ):
        r.fail(
            "output.classes",
            f"is required with {ex}, text input and json output: the label of each output",
        )
