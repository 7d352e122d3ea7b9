"""Executors: one port, ``invoke(input, context) -> output``, for every way an agent runs.

- ``CommandExecutor`` (``runtime.executor: command``): runs ``runtime.command`` (an argv
  list; a plain string is run by ``/bin/sh -c``) with the step input as JSON on stdin and
  reads one JSON value from stdout.
- ``PythonExecutor`` (``runtime.executor: python``): calls ``runtime.entry``
  (``"module:function"``) as ``fn(input, context)`` in an isolated worker process;
  ``context`` is a dict with attribute access: ``idempotency_key``, ``agent``,
  ``work_dir``, ``attempt``, ``timeout``. The module is imported from the folder of the
  agent's config file, ``runtime.env`` ``PYTHONPATH``, or the installed packages.
- ``OnnxExecutor`` (``runtime.executor: onnxruntime``, ``edge_min.agents.onnx``): loaded on
  first use (``register()`` there calls ``register_executor``), so onnxruntime is never
  imported unless an onnx agent is added or run; it keeps the model warm in a persistent
  worker (``Platform.start_service``).

``register_executor(name, factory, validate=...)`` adds (or replaces) an executor; its
``validate(agent, platform, work_root)`` runs when an agent is added.

The command and python executors run through ``Platform.spawn_worker`` under the agent's
``resources`` and the step timeout, see ``edge_min.agents.isolation``. Before a call,
``input.max_length`` is applied to text input (cut when ``input.truncate``, refused
otherwise); after it, a string result (or a ``label``/``class`` field of a dict result) must
be one of ``output.classes`` when classes are given.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from edge_min.agents.isolation import AgentLike, build_worker_spec, raise_for_limits, result_frame
from edge_min.errors import AgentError
from edge_min.platform import Platform, WorkerResult, WorkerSpec

#: The wall timeout of a call whose context gives none: no agent call may hang for ever.
DEFAULT_TIMEOUT = 300.0
_QUOTE_BYTES = 200
_STDERR_LINES = 20


@dataclass(frozen=True)
class InvocationContext:
    """One call of an agent: its idempotency key, wall timeout, work directory and attempt."""

    idempotency_key: str
    timeout: float | None = None
    work_dir: str | None = None
    attempt: int = 1


class Executor(Protocol):
    """Runs an agent: the one port every executor implements."""

    def invoke(self, input_value: Any, context: InvocationContext) -> Any:
        """Run the agent once on ``input_value`` and return its JSON-ready output."""
        ...

    def close(self) -> None:
        """Release what the executor holds (models, sessions); it is not used again."""
        ...


ExecutorFactory = Callable[[AgentLike, Platform, Path], Executor]
ExecutorValidator = Callable[[AgentLike, Platform, "Path | None"], object]
_FACTORIES: dict[str, ExecutorFactory] = {}
_VALIDATORS: dict[str, ExecutorValidator] = {}
# Executors whose module registers them on first use: importing them costs (onnxruntime).
_LAZY = {"onnxruntime": "edge_min.agents.onnx"}


def register_executor(
    name: str, factory: ExecutorFactory, validate: ExecutorValidator | None = None
) -> None:
    """Make ``runtime.executor: <name>`` available; ``validate`` runs at ``agent add``."""
    _FACTORIES[name] = factory
    if validate is None:
        _VALIDATORS.pop(name, None)
    else:
        _VALIDATORS[name] = validate


def _registered(name: str) -> ExecutorFactory | None:
    if name not in _FACTORIES and name in _LAZY:
        import importlib

        importlib.import_module(_LAZY[name]).register()
    return _FACTORIES.get(name)


def stderr_tail(stderr: bytes, lines: int = _STDERR_LINES) -> str:
    """The last ``lines`` lines of a worker's stderr, for an error message."""
    text = stderr.decode("utf-8", "replace").rstrip()
    tail = text.splitlines()[-lines:]
    return "\n".join(tail) if tail else "(stderr was empty)"


def prepare_input(agent: AgentLike, value: Any) -> Any:
    """Apply ``input.max_length``/``input.truncate`` to text input."""
    spec = getattr(agent, "input", None)
    max_length = getattr(spec, "max_length", None)
    if not max_length or not isinstance(value, str) or len(value) <= max_length:
        return value
    if getattr(spec, "truncate", True):
        return value[:max_length]
    raise AgentError(
        f"agent '{agent.name}': input is {len(value)} characters, over input.max_length "
        f"{max_length}; shorten it or set input.truncate: true"
    )


def check_output(agent: AgentLike, value: Any) -> Any:
    """Refuse a label that is not one of ``output.classes`` (when classes are given)."""
    classes = tuple(getattr(getattr(agent, "output", None), "classes", ()) or ())
    if not classes:
        return value
    label = value
    if isinstance(value, dict):
        label = value.get("label", value.get("class"))
    if isinstance(label, str) and label not in classes:
        raise AgentError(
            f"agent '{agent.name}' returned label {label!r}, not one of output.classes "
            f"{list(classes)}; fix the agent or its output.classes"
        )
    return value


class WorkerExecutor:
    """The shared part of executors that run each call in a platform worker."""

    def __init__(self, agent: AgentLike, platform: Platform, work_root: str | Path) -> None:
        self.agent = agent
        self.platform = platform
        self.work_dir = str(Path(work_root) / agent.name)
        #: The raw end of the last call, for monitoring and tests.
        self.last_result: WorkerResult | None = None
        self.last_spec: WorkerSpec | None = None

    def _target(self) -> dict[str, Any]:
        """What the worker runs: ``{"argv": ...}`` or ``{"entry": ...}``."""
        raise NotImplementedError

    def _spec(self, stdin: bytes, ctx: InvocationContext, work_dir: str) -> WorkerSpec:
        return build_worker_spec(
            self.agent,
            work_dir=work_dir,
            idempotency_key=ctx.idempotency_key,
            timeout=ctx.timeout or DEFAULT_TIMEOUT,
            stdin=stdin,
            attempt=ctx.attempt,
            **self._target(),
        )

    def _output(self, result: WorkerResult, spec: WorkerSpec) -> Any:
        raise NotImplementedError

    def invoke(self, input_value: Any, context: InvocationContext) -> Any:
        """Run one call in a fresh worker under the agent's limits; its decoded output."""
        value = prepare_input(self.agent, input_value)
        try:
            stdin = json.dumps(value).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise AgentError(
                f"agent '{self.agent.name}': the step input is not JSON-serialisable: {exc}"
            ) from exc
        work_dir = os.path.abspath(context.work_dir or self.work_dir)
        spec = self._spec(stdin, context, work_dir)
        result = self.platform.spawn_worker(spec).wait()
        self.last_spec, self.last_result = spec, result
        raise_for_limits(result, spec)
        if result.killed_for:
            raise AgentError(f"agent '{self.agent.name}' was stopped ({result.killed_for})")
        return check_output(self.agent, self._output(result, spec))

    def close(self) -> None:
        """Nothing is kept between calls: each runs in a fresh worker."""


class CommandExecutor(WorkerExecutor):
    """Runs ``runtime.command``: JSON in on stdin, JSON out on stdout."""

    def __init__(self, agent: AgentLike, platform: Platform, work_root: str | Path) -> None:
        super().__init__(agent, platform, work_root)
        command = getattr(agent.runtime, "command", None)
        if isinstance(command, str):
            self.argv: tuple[str, ...] = ("/bin/sh", "-c", command)
        elif command:
            self.argv = tuple(str(a) for a in command)
        else:
            raise AgentError(
                f"agent '{agent.name}': runtime.command is required with executor command; "
                "give an argv list or a command string"
            )

    def _target(self) -> dict[str, Any]:
        return {"argv": self.argv}

    def _output(self, result: WorkerResult, spec: WorkerSpec) -> Any:
        who = f"agent '{self.agent.name}'"
        if result.returncode != 0:
            how = f"signal {result.signal}" if result.signal else f"code {result.returncode}"
            raise AgentError(
                f"{who}: command {self.argv[0]!r} exited with {how}; its stderr ends with:\n"
                + stderr_tail(result.stderr)
            )
        if result.stdout_truncated:
            raise AgentError(f"{who}: command printed more output than the worker keeps")
        if not result.stdout.strip():
            raise AgentError(
                f"{who}: command {self.argv[0]!r} printed nothing; a command agent must print "
                "one JSON value on stdout"
            )
        try:
            return json.loads(result.stdout.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            head = result.stdout[:_QUOTE_BYTES].decode("utf-8", "replace")
            raise AgentError(
                f"{who}: command {self.argv[0]!r} printed invalid JSON ({exc}); "
                f"its output starts with: {head!r}"
            ) from exc


class PythonExecutor(WorkerExecutor):
    """Calls ``runtime.entry`` as ``fn(input, context)`` in an isolated Python worker."""

    def __init__(self, agent: AgentLike, platform: Platform, work_root: str | Path) -> None:
        super().__init__(agent, platform, work_root)
        entry = getattr(agent.runtime, "entry", None)
        if not entry or ":" not in entry:
            raise AgentError(
                f"agent '{agent.name}': runtime.entry must be 'module:function' with executor "
                f"python, got {entry!r}"
            )
        self.entry: str = entry

    def _target(self) -> dict[str, Any]:
        return {"entry": self.entry}

    def _output(self, result: WorkerResult, spec: WorkerSpec) -> Any:
        who = f"agent '{self.agent.name}'"
        frame = result_frame(result)
        if frame is None:
            how = f"signal {result.signal}" if result.signal else f"code {result.returncode}"
            raise AgentError(
                f"{who}: the python worker for {self.entry} exited with {how} without a "
                "result; its stderr ends with:\n" + stderr_tail(result.stderr)
            )
        if frame.get("ok"):
            return frame.get("output")
        kind, text = frame.get("kind"), f"{frame.get('type')}: {frame.get('message')}"
        if kind == "import":
            raise AgentError(
                f"{who}: cannot load runtime.entry {self.entry} ({text}); check the module is "
                "next to the agent's config file or on runtime.env PYTHONPATH"
            )
        if kind == "output":
            raise AgentError(f"{who}: {self.entry} returned a value that is not JSON ({text})")
        tb = str(frame.get("traceback") or "").rstrip().splitlines()[-_STDERR_LINES:]
        raise AgentError(f"{who}: {self.entry} raised {text}\n" + "\n".join(tb))


_BUILTIN: dict[str, type[WorkerExecutor]] = {
    "command": CommandExecutor,
    "python": PythonExecutor,
}


def validate_agent(
    agent: AgentLike, platform: Platform, work_root: str | Path | None = None
) -> None:
    """Refuse, when it is added, an agent this runtime cannot run (AgentError says why).

    ``work_root`` (the runtime's agents work root) lets an onnx agent's relative
    ``model.path`` be found under the storage root's ``models/``.
    """
    executor = str(getattr(agent.runtime, "executor", None))
    if _registered(executor) is not None:
        validate = _VALIDATORS.get(executor)
        if validate is not None:
            validate(agent, platform, None if work_root is None else Path(work_root))
        return
    if executor not in _BUILTIN:
        raise AgentError(
            f"agent '{agent.name}': runtime.executor {executor} is not available yet; "
            f"use one of {sorted({*_BUILTIN, *_FACTORIES})}"
        )
    if executor == "command" and not platform.runs_commands:
        raise AgentError(
            f"agent '{agent.name}': runtime.executor command is not available on this host "
            f"(the {platform.name} platform cannot start processes); use runtime.executor: "
            "python"
        )
    _BUILTIN[executor](agent, platform, Path("."))


def make_executor(agent: AgentLike, platform: Platform, work_root: str | Path) -> Executor:
    """The executor for ``agent``; its work directory is ``<work_root>/<agent name>``."""
    executor = getattr(agent.runtime, "executor", None)
    factory = _registered(str(executor))
    if factory is not None:
        return factory(agent, platform, Path(work_root))
    validate_agent(agent, platform)
    return _BUILTIN[str(executor)](agent, platform, work_root)
