"""The durable workflow engine: runs DAGs of agent steps so that no finished step runs twice.

A run is a ``workflow_executions`` row; each step is an ``agent_executions`` row whose id is
``<execution id>:<step id>``, which is also the idempotency key handed to the agent. The rules
that make it durable (after DBOS Transact):

- a step's output is committed, in the same transaction as its ``succeeded`` status, before
  any dependent step is started;
- on restart (``recover``), every run still ``running`` is resumed: ``succeeded``, ``failed``
  and ``skipped`` steps are taken from the store and never run again; a step that was
  ``running`` when the process died runs again with the same idempotency key;
- results wait in memory until their commit succeeds: lock contention delays a run, never
  fails it.

The engine is a pure state machine driven by ``poll(now)``; blocking agent calls go through a
``Dispatcher`` (threads on CPython, inline under Pyodide or MicroPython), so the same code
runs under any loop. All completions and starts of one poll share one transaction, which is
how many concurrent runs amortise the cost of ``synchronous=FULL``.

Execution statuses: ``queued`` → ``running`` → ``succeeded`` | ``failed`` | ``cancelled``.
Step statuses: ``pending``, ``running``, ``succeeded``, ``failed``, ``cancelled``, and
``skipped`` (its ``when`` was false, or a step it needs did not succeed and its ``when``
does not name that step). A failed attempt is retried ``retries`` times after
``retry_backoff * 2**(attempt-1)`` seconds (capped at ``retry_max_backoff``); the wait is
stored, so a restart keeps it.

While the host's gate (``edge_min.gate``) is closed, a lockdown: ``submit`` refuses new runs,
queued runs wait, and each running run stops at its next step boundary: steps in flight
finish and record their result, nothing more starts, and the run is recorded ``cancelled``
with output ``{"reason": "locked_down"}``.
"""

from __future__ import annotations

import logging
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from edge_min.clock import Clock, SystemClock, iso
from edge_min.errors import (
    AgentError,
    EdgeError,
    NotFound,
    StorageError,
    ValueRejected,
    WorkflowError,
)
from edge_min.gate import LOCKED_DOWN, Gate
from edge_min.platform.executor import Executor, Handle, InlineExecutor, finished
from edge_min.units import format_size
from edge_min.workflows.definition import StepDefinition, WorkflowDefinition, parse_definition

if TYPE_CHECKING:
    from edge_min.store import Store

log = logging.getLogger("edge_min.engine")

QUEUE_RESCAN_SECONDS = 0.5
LATENCY_WINDOW = 200  # steps averaged for the step_latency metric
MAX_ROUNDS = 64  # rounds of collect/commit/start in one poll when calls finish inline
TERMINAL_RUN = frozenset({"succeeded", "failed", "cancelled"})
FINISHED_STEP = frozenset({"succeeded", "failed", "skipped", "cancelled"})


# The engine's dispatcher is the platform's one executor port (edge_min.platform.executor).
Dispatcher = Executor
InlineDispatcher = InlineExecutor


class AgentPort(Protocol):
    """What the engine needs from the agent registry."""

    def names(self) -> set[str]:
        """Names of the registered agents."""
        ...

    def agent_id(self, name: str) -> str:
        """The ``agents.id`` of an agent, registering a builtin on first use."""
        ...

    def memory_of(self, name: str) -> int:
        """The agent's ``max_memory`` in bytes (0 for in-process builtins)."""
        ...

    def needs_network(self, name: str) -> bool:
        """Whether the agent needs the network to run."""
        ...

    def prepare(self, name: str) -> Any:
        """Warm the agent's executor; called on the loop thread before dispatch."""
        ...

    def invoke(self, name: str, value: Any, context: Mapping[str, Any]) -> Any:
        """Call the agent; blocking; raises AgentError on failure."""
        ...


@dataclass(frozen=True)
class Limits:
    """The runtime limits the engine enforces (from ``runtime:`` in edge-config.yaml)."""

    max_concurrent_workflows: int = 5
    max_memory_usage: int = 512 * 1024**2
    offline_mode: str = "auto"


@dataclass
class _Step:
    status: str = "pending"
    output: Any = None
    attempt: int = 0
    error: str | None = None
    retry_at: float = 0.0  # wall time before which a failed attempt is not retried
    started_at: str | None = None


@dataclass
class _Run:
    id: str
    workflow_id: str
    definition: WorkflowDefinition
    input: Any
    steps: dict[str, _Step] = field(default_factory=dict)
    failed: str | None = None  # the step whose failure fails the run
    inflight: int = 0  # steps of this run being executed now


@dataclass
class _Inflight:
    run: _Run
    step: StepDefinition
    handle: Handle
    memory: int
    started: float


class Engine:
    """Admits queued runs, starts ready steps, commits results; driven by ``poll``."""

    def __init__(
        self,
        store: Store,
        agents: AgentPort,
        *,
        dispatcher: Dispatcher | None = None,
        clock: Clock | None = None,
        limits: Limits | None = None,
        is_online: Callable[[], bool] = lambda: True,
        gate: Gate | None = None,
    ) -> None:
        self.store = store
        self.gate = gate or Gate()
        self.db = store.backend
        self.agents = agents
        self.dispatcher: Dispatcher = dispatcher or InlineDispatcher()
        self.clock = clock or SystemClock()
        self.limits = limits or Limits()
        self.is_online = is_online
        self._runs: dict[str, _Run] = {}
        self._inflight: dict[str, _Inflight] = {}  # keyed by step row id
        self._writes: list[tuple[str, str, dict[str, Any]]] = []  # (table, id, changes) to commit
        self._definitions: dict[tuple[str, str], WorkflowDefinition] = {}
        self._step_rows: set[str] = set()  # agent_executions rows known to exist
        self._maybe_queued = True
        self._last_queue_scan = float("-inf")
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)  # recent step seconds

    # -- workflows and submissions -------------------------------------------------------

    def add_workflow(self, source: Any, *, origin: str = "<string>") -> dict[str, Any]:
        """Validate a definition (YAML, JSON or mapping) against known agents and store it."""
        definition = parse_definition(source, source=origin, known_agents=self.agents.names())
        stored = definition.to_dict()
        existing = self.store.workflows.get_by_name(definition.name)
        if existing:
            return dict(
                self.store.workflows.update(
                    existing["id"], definition=stored, version=definition.version
                )
            )
        return dict(
            self.store.workflows.create(
                name=definition.name, definition=stored, version=definition.version
            )
        )

    def definition(self, row: Mapping[str, Any]) -> WorkflowDefinition:
        """The parsed definition of a stored workflow row (cached until the row changes)."""
        key = (row["id"], row["updated_at"])
        found = self._definitions.get(key)
        if found is None:
            found = parse_definition(row["definition"], source=f"workflow {row['name']}")
            self._definitions[key] = found
        return found

    def submit(self, workflow_name: str, value: Any = None) -> str:
        """Queue a run of the named workflow; returns the execution id."""
        self.gate.check(f"a run of {workflow_name!r}")  # first: a lockdown may hold the keys
        row = self.store.workflows.get_by_name(workflow_name)
        if row is None:
            known = ", ".join(sorted(w["name"] for w in self.store.workflows.list())) or "none"
            raise NotFound(f"no workflow named {workflow_name!r} (known: {known})")
        definition = self.definition(row)
        self._check_fits(definition)
        definition.validate_input(value)
        execution_id = uuid.uuid4().hex
        self.store.executions.create(
            id=execution_id, workflow_id=row["id"], status="queued", input=value
        )
        self._maybe_queued = True
        return execution_id

    def _check_fits(self, definition: WorkflowDefinition) -> None:
        for step in definition.steps:
            need = self.agents.memory_of(step.agent)
            if need > self.limits.max_memory_usage:
                raise WorkflowError(
                    f"step '{step.id}': agent '{step.agent}' has max_memory {format_size(need)}, "
                    "more than runtime.max_memory_usage "
                    f"({format_size(self.limits.max_memory_usage)}); lower the "
                    "agent's resources.max_memory or raise runtime.max_memory_usage"
                )

    def cancel(self, execution_id: str) -> None:
        """Cancel a queued or running run; steps in flight finish, nothing after them starts."""
        row = self.store.executions.get(execution_id)
        if row is None:
            raise NotFound(f"no execution {execution_id!r}")
        if row["status"] in TERMINAL_RUN:
            return
        run = self._runs.pop(execution_id, None)
        if run:
            for step_id, st in run.steps.items():
                if st.status == "pending":
                    st.status = "cancelled"
                    self._write_step(run, step_id, status="cancelled", completed_at=self._now())
        self._writes.append(
            (
                "workflow_executions",
                execution_id,
                {"status": "cancelled", "completed_at": self._now()},
            )
        )
        self._commit()

    # -- recovery ------------------------------------------------------------------------

    def recover(self) -> int:
        """Load every run left ``running`` by a crash; returns how many were resumed."""
        for row in self._readable(lambda: self.store.executions.oldest("running")):
            if row["id"] not in self._runs:
                self._load_or_refuse(row)
        return len(self._runs)

    # A run whose stored values fail authentication at rest (ValueRejected names table,
    # column and row) is failed here, by status alone, so the engine goes on with the others.
    _REFUSE_LIMIT = 100

    def _readable(self, read: Callable[[], list[Any]]) -> list[Any]:
        for _ in range(self._REFUSE_LIMIT):
            try:
                return read()
            except ValueRejected as exc:
                if exc.table != "workflow_executions":
                    raise
                self._refuse(exc.row_id, exc)
        return read()

    def _load_or_refuse(self, row: Mapping[str, Any]) -> bool:
        try:
            self._load(row)
        except ValueRejected as exc:
            self._runs.pop(row["id"], None)
            self._refuse(str(row["id"]), exc)
            return False
        return True

    def _refuse(self, execution_id: str, exc: ValueRejected) -> None:
        log.error("run %s cannot be read and is failed: %s", execution_id, exc.message)
        self.db.update(
            "workflow_executions",
            {"id": execution_id},
            {"status": "failed", "completed_at": self._now()},
        )

    def _load(self, row: Mapping[str, Any]) -> _Run:
        wf = self.store.workflows.get(row["workflow_id"])
        if wf is None:
            raise NotFound(f"execution {row['id']} names missing workflow {row['workflow_id']}")
        run = _Run(
            id=row["id"],
            workflow_id=row["workflow_id"],
            definition=self.definition(wf),
            input=row.get("input"),
        )
        run.steps = {s.id: _Step() for s in run.definition.steps}
        if row["status"] == "queued":  # never started: no step rows to read back
            self._runs[run.id] = run
            return run
        for srow in self.store.agent_executions.list(workflow_execution_id=run.id):
            self._step_rows.add(srow["id"])
            step_id = srow["id"].split(":", 1)[1]
            if step_id not in run.steps:
                continue
            metrics = srow.get("metrics") or {}
            st = run.steps[step_id]
            st.attempt = int(metrics.get("attempt", 0))
            st.retry_at = float(metrics.get("retry_at", 0.0))
            st.started_at = srow["started_at"]
            # A step that was running when we died runs again, same idempotency key.
            st.status = "pending" if srow["status"] == "running" else srow["status"]
            st.output = srow.get("output")
            st.error = metrics.get("error")
            if st.status == "failed":
                step = run.definition.step(step_id)
                if step.on_failure == "fail":
                    run.failed = step_id
        self._runs[run.id] = run
        return run

    # -- the loop ------------------------------------------------------------------------

    def poll(self, now: float | None = None) -> bool:
        """Do every piece of work that is ready; returns whether anything changed.

        Calls that finish at once (inline dispatch) are collected in further rounds of the
        same poll, up to ``MAX_ROUNDS`` so timed jobs are never starved.
        """
        changed = False
        for _ in range(MAX_ROUNDS):
            wall = self.clock.time() if now is None else now
            progressed = self._round(wall)
            changed |= progressed
            if not progressed or not any(f.handle.done() for f in self._inflight.values()):
                break
        return changed

    def _round(self, wall: float) -> bool:
        changed = self._collect(wall)
        if self.gate.closed is not None:
            changed |= self._stop_runs(wall)
            starts: list[tuple[_Run, StepDefinition, Any]] = []
        else:
            changed |= self._admit()
            starts = self._plan_starts(wall)
        if self._writes or starts:
            try:
                self._commit()
            except StorageError as exc:
                # Lock contention or a full disk: keep everything in memory and try again.
                log.warning("engine commit deferred: %s", exc)
                self._unplan(starts)
                return changed
        for run, step, value in starts:
            self._dispatch(run, step, value, wall)
        return changed or bool(starts)

    def _collect(self, wall: float) -> bool:
        done = [key for key, f in self._inflight.items() if f.handle.done()]
        # completed_at is stamped after the calls are seen finished, never before.
        wall = max(wall, self.clock.time())
        for key in done:
            f = self._inflight.pop(key)
            f.run.inflight -= 1
            st = f.run.steps[f.step.id]
            took = self.clock.monotonic() - f.started
            self._latencies.append(took)
            metrics: dict[str, Any] = {
                "step": f.step.id,
                "attempt": st.attempt,
                "duration_ms": round(took * 1000, 3),
            }
            try:
                output = f.handle.result()
            except Exception as exc:
                self._step_failed(f.run, f.step, st, exc, metrics, wall)
                continue
            st.status, st.output = "succeeded", output
            self._write_step(
                f.run,
                f.step.id,
                status="succeeded",
                output=output,
                completed_at=iso(wall),
                metrics=metrics,
            )
            self._maybe_finish(f.run, wall)
        return bool(done)

    def _stop_runs(self, wall: float) -> bool:
        """A lockdown: cancel each run at its step boundary (once its steps in flight end)."""
        stopped = False
        for run in list(self._runs.values()):
            if run.inflight:
                continue  # a step boundary is where it ends: let this step record its result
            for sid, st in run.steps.items():
                if st.status == "pending":
                    st.status = "cancelled"
                    self._write_step(
                        run,
                        sid,
                        status="cancelled",
                        completed_at=iso(wall),
                        metrics={"step": sid, "reason": LOCKED_DOWN},
                    )
            output = {"reason": LOCKED_DOWN, "message": self.gate.closed}
            self._finish(run, "cancelled", output, wall)
            log.warning("run %s cancelled at a step boundary: locked down", run.id)
            stopped = True
        return stopped

    def _step_failed(
        self,
        run: _Run,
        step: StepDefinition,
        st: _Step,
        exc: BaseException,
        metrics: dict[str, Any],
        wall: float,
    ) -> None:
        message = exc.message if isinstance(exc, EdgeError) else f"{type(exc).__name__}: {exc}"
        metrics["error"] = message
        st.error = message
        if st.attempt <= step.retries:
            delay = step.backoff_delay(st.attempt - 1)
            st.status, st.retry_at = "pending", wall + delay
            metrics["retry_at"] = st.retry_at
            self._write_step(run, step.id, status="pending", metrics=metrics)
            log.info(
                "step %s of %s failed (attempt %d), retry in %.1fs: %s",
                step.id,
                run.id,
                st.attempt,
                delay,
                message,
            )
            return
        st.status = "failed"
        self._write_step(run, step.id, status="failed", completed_at=iso(wall), metrics=metrics)
        if step.on_failure == "fail":
            run.failed = step.id
        self._maybe_finish(run, wall)

    def _admit(self) -> bool:
        room = self.limits.max_concurrent_workflows - len(self._runs)
        if room <= 0:
            return False
        # workflow_executions has no index on status (the spec's schema is kept as written),
        # so the queue is read when this engine queued something, or once per
        # QUEUE_RESCAN_SECONDS for runs queued by another process (the CLI).
        mono = self.clock.monotonic()
        if not self._maybe_queued and mono - self._last_queue_scan < QUEUE_RESCAN_SECONDS:
            return False
        self._last_queue_scan = mono
        queued = self._readable(lambda: self.store.executions.oldest("queued", room))
        self._maybe_queued = len(queued) == room  # a full page: there may be more
        for row in queued:
            if self._load_or_refuse(row):
                self._writes.append(("workflow_executions", row["id"], {"status": "running"}))
        return bool(queued)

    def _plan_starts(self, wall: float) -> list[tuple[_Run, StepDefinition, Any]]:
        starts: list[tuple[_Run, StepDefinition, Any]] = []
        memory = sum(f.memory for f in self._inflight.values())
        for run in list(self._runs.values()):
            if run.failed:
                self._maybe_finish(run, wall)
                continue
            for step in run.definition.steps:
                st = run.steps[step.id]
                if st.status != "pending" or st.retry_at > wall:
                    continue
                if any(run.steps[n].status not in FINISHED_STEP for n in step.needs):
                    continue
                if self._skip_if_upstream_skipped(run, step, wall):
                    continue
                ctx = self._context(run)
                try:
                    if step.when is not None and not step.when.evaluate(ctx):
                        st.status = "skipped"
                        self._write_step(
                            run,
                            step.id,
                            status="skipped",
                            completed_at=iso(wall),
                            metrics={"step": step.id, "reason": "when was false"},
                        )
                        self._maybe_finish(run, wall)
                        continue
                    value = step.input.render(ctx)
                except EdgeError as exc:
                    st.attempt = step.retries + 1  # a bad reference will not heal by retrying
                    self._step_failed(run, step, st, exc, {"step": step.id}, wall)
                    continue
                if self.agents.needs_network(step.agent) and not self._network_ok(run, step, wall):
                    continue
                self.agents.agent_id(step.agent)  # its row exists before any step row names it
                need = self.agents.memory_of(step.agent)
                if memory + need > self.limits.max_memory_usage:
                    continue  # waits for memory held by running agents to be released
                memory += need
                st.status, st.attempt = "running", st.attempt + 1
                st.started_at = st.started_at or iso(wall)
                self._write_step(
                    run,
                    step.id,
                    status="running",
                    input=value,
                    started_at=st.started_at,
                    metrics={"step": step.id, "attempt": st.attempt},
                )
                starts.append((run, step, value))
        return starts

    def _skip_if_upstream_skipped(self, run: _Run, step: StepDefinition, wall: float) -> bool:
        """Skip a step whose needed step did not succeed, unless its ``when`` decides.

        As in CI systems: a step after a skipped, failed (``on_failure: continue``) or
        cancelled step is skipped too; a step whose ``when`` names that step takes charge
        itself (the missing output reads as null there), e.g. to alert on a failure.
        """
        unmet = {n for n in step.needs if run.steps[n].status != "succeeded"}
        if not unmet or (step.when is not None and unmet <= step.when.references):
            return False
        run.steps[step.id].status = "skipped"
        reasons = ", ".join(f"{n} {run.steps[n].status}" for n in sorted(unmet))
        self._write_step(
            run,
            step.id,
            status="skipped",
            completed_at=iso(wall),
            metrics={"step": step.id, "reason": f"a step it needs did not succeed ({reasons})"},
        )
        self._maybe_finish(run, wall)
        return True

    def _network_ok(self, run: _Run, step: StepDefinition, wall: float) -> bool:
        mode = self.limits.offline_mode
        if mode == "never" or (mode == "auto" and self.is_online()):
            return True
        if mode == "auto":
            return False  # offline: the step waits for the link
        st = run.steps[step.id]
        st.attempt = step.retries + 1
        self._step_failed(
            run,
            step,
            st,
            AgentError(
                f"agent '{step.agent}' needs the network and runtime.offline_mode is "
                "'always'; set offline_mode to auto or never to let it run"
            ),
            {"step": step.id},
            wall,
        )
        return False

    def _unplan(self, starts: list[tuple[_Run, StepDefinition, Any]]) -> None:
        for run, step, _ in starts:
            st = run.steps[step.id]
            st.status, st.attempt = "pending", st.attempt - 1

    def _dispatch(self, run: _Run, step: StepDefinition, value: Any, wall: float) -> None:
        st = run.steps[step.id]
        key = f"{run.id}:{step.id}"
        context = {
            "idempotency_key": key,
            "execution_id": run.id,
            "step": step.id,
            "attempt": st.attempt,
            "timeout": step.timeout,
        }
        agent = step.agent
        handle: Handle
        # before submit: an inline dispatcher (a browser tab, a microcontroller) runs the call
        # inside submit, and its time is the step's too
        started = self.clock.monotonic()
        try:
            self.agents.prepare(agent)
        except EdgeError as exc:  # e.g. a model that no longer loads: the step fails, with why
            handle = finished(error=exc)
        else:
            handle = self.dispatcher.submit(lambda: self.agents.invoke(agent, value, context))
        run.inflight += 1
        self._inflight[key] = _Inflight(run, step, handle, self.agents.memory_of(agent), started)

    def _context(self, run: _Run) -> dict[str, Any]:
        return {
            "input": run.input,
            "steps": {
                sid: {"output": st.output}
                for sid, st in run.steps.items()
                if st.status == "succeeded"
            },
        }

    def _maybe_finish(self, run: _Run, wall: float) -> None:
        if run.id not in self._runs:
            return
        if run.inflight:
            return  # let steps in flight record their results first
        if run.failed:
            for sid, st in run.steps.items():
                if st.status == "pending":
                    st.status = "cancelled"
                    self._write_step(run, sid, status="cancelled", completed_at=iso(wall))
            error = {"step": run.failed, "message": run.steps[run.failed].error}
            self._finish(run, "failed", {"error": error}, wall)
            return
        if all(st.status in FINISHED_STEP for st in run.steps.values()):
            sinks = run.definition.sinks()
            output = {s: run.steps[s].output for s in sinks if run.steps[s].status == "succeeded"}
            self._finish(run, "succeeded", output, wall)

    def _finish(self, run: _Run, status: str, output: Any, wall: float) -> None:
        self._writes.append(
            (
                "workflow_executions",
                run.id,
                {"status": status, "output": output, "completed_at": iso(wall)},
            )
        )
        del self._runs[run.id]

    def _write_step(self, run: _Run, step_id: str, **changes: Any) -> None:
        changes.setdefault("workflow_execution_id", run.id)
        changes.setdefault("agent", run.definition.step(step_id).agent)
        self._writes.append(("agent_executions", f"{run.id}:{step_id}", changes))

    def _commit(self, extra: Callable[[], object] | None = None) -> None:
        """Write every pending change in one transaction; on failure keep them for next time."""
        writes, self._writes = self._writes, []
        new_rows: set[str] = set()
        # One executemany per statement shape: new step rows first, so that later changes
        # to the same rows in this batch find them; changes keep their order per row.
        step_adds: list[dict[str, Any]] = []
        step_sets: list[tuple[str, dict[str, Any]]] = []
        exec_sets: list[tuple[str, dict[str, Any]]] = []
        now = self._now()
        for table, row_id, changes in writes:
            if table == "workflow_executions":
                exec_sets.append((row_id, changes))
                continue
            changes = dict(changes)
            agent_id = self.agents.agent_id(changes.pop("agent"))
            if row_id in self._step_rows or row_id in new_rows:
                changes.pop("started_at", None)
                step_sets.append((row_id, changes))
            else:
                # A row first written as finished (a step cancelled or skipped before it ever
                # started) is stamped at that moment, never after its own completed_at.
                changes.setdefault("started_at", changes.get("completed_at") or now)
                changes.setdefault("status", "pending")
                step_adds.append({"id": row_id, "agent_id": agent_id, **changes})
                new_rows.add(row_id)
        try:
            with self.store.atomic():
                self.store.agent_executions.add_many(step_adds)
                self.store.agent_executions.set_many(step_sets)
                self.store.executions.set_many(exec_sets)
                if extra is not None:
                    extra()
        except BaseException:
            self._writes = writes + self._writes
            raise
        self._step_rows.update(new_rows)

    # -- introspection -------------------------------------------------------------------

    def busy(self) -> bool:
        """Whether any run is active or any step in flight."""
        return bool(self._runs or self._inflight or self._writes)

    def active_runs(self) -> list[str]:
        """Ids of runs this engine is driving now."""
        return list(self._runs)

    def inflight(self) -> int:
        """How many steps are running now."""
        return len(self._inflight)

    def step_latency(self) -> float:
        """Mean seconds of the last steps that finished (0 before any)."""
        return sum(self._latencies) / len(self._latencies) if self._latencies else 0.0

    def next_wakeup(self) -> float | None:
        """The wall time of the earliest retry, or None if nothing waits on time."""
        times = [
            st.retry_at
            for run in self._runs.values()
            for st in run.steps.values()
            if st.status == "pending" and st.retry_at
        ]
        return min(times) if times else None

    def _now(self) -> str:
        return iso(self.clock.time())
