"""The workflows subsystem: agents, the durable engine and the workflow triggers.

Contributes the engine's turn of the loop (``poll``), a timed job per interval or cron
trigger (refreshed every ``TRIGGER_REFRESH_SECONDS`` so a workflow another process added
gets its trigger), the run counts and step latency metrics, the routes and the commands of
workflows, runs and agents.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from edge_min.subsystem import ApiContext, ApiRoute, Command, Job, Subsystem

if TYPE_CHECKING:
    from edge_min.agents.registry import AgentRegistry
    from edge_min.workflows.engine import Engine

log = logging.getLogger("edge_min.runtime")

TRIGGER_REFRESH_SECONDS = 5.0  # how soon a workflow added by another process gets its trigger
RUN_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


class Workflows(Subsystem):
    """Agents and the engine that runs workflows of them."""

    name = "workflows"
    needs = ("storage",)

    agents: AgentRegistry
    engine: Engine

    def open(self) -> None:
        """Make the agent registry and the engine; resume the runs a crash left unfinished."""
        from edge_min.agents.registry import AgentRegistry
        from edge_min.store.subsystem import Storage
        from edge_min.workflows.engine import Engine, Limits

        host = self.host
        store = host.get(Storage).store
        self.agents = AgentRegistry(store, work_root=host.paths.agents_work, platform=host.platform)
        rt = host.config.runtime
        self.engine = Engine(
            store,
            self.agents,
            dispatcher=host.executor("agent", max(4, rt.max_concurrent_workflows)),
            clock=host.clock,
            limits=Limits(rt.max_concurrent_workflows, rt.max_memory_usage, rt.offline_mode),
            is_online=lambda: host.online,
            gate=host.gate,
        )
        self._triggers: dict[str, tuple[str, Any]] = {}
        resumed = self.engine.recover()
        if resumed:
            log.info("resumed %d unfinished run(s)", resumed)
        self.refresh_triggers()

    def close(self) -> None:
        """Stop the agents' workers."""
        agents = getattr(self, "agents", None)
        if agents is not None:
            agents.close()

    def drained(self) -> bool:
        """Nothing in flight (a lockdown: runs stopped at their step boundary, recorded)."""
        return not self.engine.busy()

    def jobs(self) -> Sequence[Job]:
        """The trigger refresh."""
        return [Job("workflows.refresh_triggers", TRIGGER_REFRESH_SECONDS, self.refresh_triggers)]

    def tick(self, now: float) -> float | None:
        """Commit finished steps, start ready ones; when the engine next wants a turn."""
        self.engine.poll()
        retry = self.engine.next_wakeup()  # wall time
        if retry is None:
            return None
        return now + max(0.0, retry - self.host.clock.time())

    def refresh_triggers(self) -> None:
        """Give each interval or cron workflow a job that queues its runs; drop stale ones."""
        scheduler, engine = self.host.scheduler, self.engine
        wanted: dict[str, tuple[str, Any]] = {}
        for row in engine.store.workflows.list():
            definition = engine.definition(row)
            trig = definition.trigger
            if trig.type in ("interval", "cron"):
                wanted[definition.name] = (definition.digest(), trig)
        for name, (digest, _) in list(self._triggers.items()):
            if wanted.get(name, (None,))[0] != digest:
                scheduler.cancel(f"trigger:{name}")
                del self._triggers[name]
        for name, (digest, trig) in wanted.items():
            if name in self._triggers:
                continue

            def fire(name: str = name, value: Any = trig.input) -> None:
                if engine.gate.closed is not None:
                    log.info("trigger of %s skipped: locked down", name)
                    return
                execution_id = engine.submit(name, value)
                log.info("trigger queued %s run %s", name, execution_id)

            job = f"trigger:{name}"
            if trig.type == "interval":
                scheduler.add_interval(job, trig.every, fire)
            else:
                scheduler.add_cron(job, trig.cron, fire)
            self._triggers[name] = (digest, trig)

    def metrics(self) -> Mapping[str, float]:
        """Runs by status, the queue depth and the mean step latency."""
        backend = self.engine.store.backend
        counts = {
            f"runs_{s}": float(backend.count("workflow_executions", {"status": s}))
            for s in RUN_STATUSES
        }
        counts["queue_depth"] = counts["runs_queued"]
        counts["step_latency"] = self.engine.step_latency()
        return counts

    def status(self) -> Mapping[str, Any]:
        """Runs and steps in flight now."""
        return {
            "active_runs": len(self.engine.active_runs()),
            "steps_in_flight": self.engine.inflight(),
        }

    def routes(self, api: ApiContext) -> Sequence[ApiRoute]:
        """Workflows, runs and agents (``edge_min.workflows.routes``)."""
        from edge_min.workflows.routes import workflow_routes

        return workflow_routes(self, api)

    @classmethod
    def commands(cls) -> Sequence[Command]:
        """``workflow``, ``exec`` and ``agent`` (``edge_min.workflows.commands``)."""
        from edge_min.workflows.commands import COMMANDS

        return COMMANDS
