"""The agent registry: agents from edge-agent-config.yaml files, stored in ``agents``, kept warm.

Agents are added from their config (validated when added, not at first use) and stored as
JSON in ``agents.config``; executors are made on first use and reused, so a model loads once.
Two builtin agents need no config: ``noop`` returns its input and ``echo`` returns
``{"input": ..., "idempotency_key": ...}``. They run in-process, for tests, benchmarks and
targets without subprocesses.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from edge_min.errors import AgentError, NotFound


def _noop(value: Any, context: Mapping[str, Any]) -> Any:
    return value


def _echo(value: Any, context: Mapping[str, Any]) -> Any:
    return {"input": value, "idempotency_key": context.get("idempotency_key")}


BUILTINS: dict[str, Callable[[Any, Mapping[str, Any]], Any]] = {"noop": _noop, "echo": _echo}


class AgentRegistry:
    """Registered agents by name: their configs, ids, and warm executors."""

    def __init__(self, store: Any, *, work_root: str | Path, platform: Any = None) -> None:
        self.store = store
        self.work_root = Path(work_root)
        self._platform = platform
        self._configs: dict[str, Any] = {}
        self._ids: dict[str, str] = {}
        # Executors are made by ``prepare`` on the engine's loop thread, so worker threads only
        # ever read this dict and no lock (and no threading import) is needed here.
        self._executors: dict[str, Any] = {}

    # -- registration --------------------------------------------------------------------

    def add(self, config: Any) -> dict[str, Any]:
        """Validate an AgentConfig, store it (replacing one of the same name), return its row."""
        from edge_min.agents.executors import validate_agent

        if config.name in BUILTINS:
            raise AgentError(f"agent name '{config.name}' is a builtin; choose another name")
        validate_agent(config, self._get_platform(), work_root=self.work_root)
        stored = config.to_dict()
        row = self.store.agents.get_by_name(config.name)
        if row:
            row = self.store.agents.update(
                row["id"], config=stored, version=config.version, type=config.type
            )
        else:
            row = self.store.agents.create(
                name=config.name, type=config.type, config=stored, version=config.version
            )
        # Where the config file was: relative model paths and python entry modules are found
        # beside it. Kept apart from agents.config so that column stays the agent's config.
        if config.source and not str(config.source).startswith("<"):
            self.store.meta.set(f"agent.source.{config.name}", os.path.abspath(config.source))
        old = self._executors.pop(config.name, None)
        self._configs[config.name] = config
        self._ids[config.name] = row["id"]
        if old is not None:
            old.close()
        return dict(row)

    def names(self) -> set[str]:
        """Every agent a workflow may name: stored ones and the builtins."""
        return {r["name"] for r in self.store.agents.list()} | set(BUILTINS)

    def config(self, name: str) -> Any:
        """The AgentConfig of a stored agent."""
        found = self._configs.get(name)
        if found is not None:
            return found
        from edge_min.config import parse_agent_config

        row = self.store.agents.get_by_name(name)
        if row is None:
            known = ", ".join(sorted(self.names()))
            raise NotFound(
                f"no agent named {name!r} (known: {known}); add it with `edge-min agent add FILE`"
            )
        source = self.store.meta.get(f"agent.source.{name}")
        config = parse_agent_config(
            row["config"],
            source=source or f"<agent {name}>",
            base_dir=os.path.dirname(source) if source else None,
        )
        self._configs[name] = config
        self._ids[name] = row["id"]
        return config

    def agent_id(self, name: str) -> str:
        """The ``agents.id`` of ``name``; builtins get their row on first use."""
        found = self._ids.get(name)
        if found:
            return found
        if name in BUILTINS:
            row = self.store.agents.get_by_name(name)
            if row is None:
                row = self.store.agents.create(
                    name=name,
                    type="builtin",
                    config={"executor": "builtin"},
                    version="1",
                )
            self._ids[name] = row["id"]
            return str(row["id"])
        self.config(name)
        return self._ids[name]

    def memory_of(self, name: str) -> int:
        """The agent's ``resources.max_memory``; 0 for builtins."""
        if name in BUILTINS:
            return 0
        return int(self.config(name).resources.max_memory)

    def needs_network(self, name: str) -> bool:
        """Whether ``runtime.needs_network`` is set for the agent."""
        if name in BUILTINS:
            return False
        return bool(self.config(name).runtime.needs_network)

    # -- invocation ----------------------------------------------------------------------

    def invoke(self, name: str, value: Any, context: Mapping[str, Any]) -> Any:
        """Run the agent once (blocking) and return its output."""
        builtin = BUILTINS.get(name)
        if builtin is not None:
            return builtin(value, context)
        executor = self._executors.get(name) or self.prepare(name)
        from edge_min.agents.executors import InvocationContext

        ctx = InvocationContext(
            idempotency_key=str(context.get("idempotency_key") or ""),
            timeout=context.get("timeout"),
            work_dir=str(self.work_root / name),
            attempt=int(context.get("attempt") or 1),
        )
        return executor.invoke(value, ctx)

    def prepare(self, name: str) -> Any:
        """Make the agent's executor if it is not warm yet (call from the loop thread)."""
        if name in BUILTINS:
            return None
        found = self._executors.get(name)
        if found is None:
            from edge_min.agents.executors import make_executor

            found = make_executor(self.config(name), self._get_platform(), self.work_root)
            self._executors[name] = found
        return found

    def run_once(self, name: str, value: Any, *, key: str | None = None) -> Any:
        """Invoke an agent by hand (``edge-min agent run``, ``POST /agents/{name}/invoke``).

        Each call gets its own idempotency key (``adhoc:<uuid>``) unless one is given.
        """
        import uuid

        if name not in BUILTINS:
            self.config(name)  # NotFound, naming the known agents, before anything starts
        context = {"idempotency_key": key or f"adhoc:{uuid.uuid4().hex}", "attempt": 1}
        return self.invoke(name, value, context)

    def _get_platform(self) -> Any:
        if self._platform is None:
            from edge_min.platform import get_platform

            self._platform = get_platform()
        return self._platform

    def close(self) -> None:
        """Stop every warm executor."""
        executors, self._executors = self._executors, {}
        for ex in executors.values():
            ex.close()
