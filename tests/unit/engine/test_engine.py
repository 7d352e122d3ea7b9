"""The durable engine on a virtual clock: DAG order, conditions, retries, limits, resume."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from edge_min.clock import VirtualClock
from edge_min.errors import AgentError, NotFound, WorkflowError
from edge_min.store import open_store
from edge_min.store.memory import MemoryStore
from edge_min.store.repos import Store
from edge_min.sync.tracker import ChangeTracker
from edge_min.workflows.engine import Engine, Limits

MB = 1024 * 1024


class Handle:
    """A call the test finishes by hand (or at once, when the dispatcher is eager)."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.finished = False
        self.value: Any = None
        self.error: BaseException | None = None

    def finish(self) -> None:
        try:
            self.value = self.fn()
        except Exception as exc:
            self.error = exc
        self.finished = True

    def done(self) -> bool:
        return self.finished

    def result(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


class Dispatcher:
    """Holds calls until ``finish_all``, or runs them at once when ``eager``."""

    def __init__(self, eager: bool = True) -> None:
        self.eager = eager
        self.pending: list[Handle] = []

    def submit(self, fn: Callable[[], Any]) -> Handle:
        h = Handle(fn)
        if self.eager:
            h.finish()
        else:
            self.pending.append(h)
        return h

    def finish_all(self) -> int:
        n = len(self.pending)
        for h in self.pending:
            h.finish()
        self.pending = []
        return n


class Agents:
    """An agent port of in-test functions; records every call with its idempotency key."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.fns: dict[str, Callable[[Any, Mapping[str, Any]], Any]] = {}
        self.memory: dict[str, int] = {}
        self.network: set[str] = set()
        self.calls: list[tuple[str, Any, str]] = []
        self._ids: dict[str, str] = {}

    def add(self, name: str, fn: Callable[[Any, Mapping[str, Any]], Any], memory: int = 0) -> None:
        self.fns[name] = fn
        self.memory[name] = memory

    def names(self) -> set[str]:
        return set(self.fns)

    def agent_id(self, name: str) -> str:
        if name not in self._ids:
            row = self.store.agents.get_by_name(name) or self.store.agents.create(
                name=name, type="test", config={}, version="1"
            )
            self._ids[name] = row["id"]
        return self._ids[name]

    def memory_of(self, name: str) -> int:
        return self.memory.get(name, 0)

    def needs_network(self, name: str) -> bool:
        return name in self.network

    def prepare(self, name: str) -> None:
        return None

    def invoke(self, name: str, value: Any, context: Mapping[str, Any]) -> Any:
        self.calls.append((name, value, str(context["idempotency_key"])))
        return self.fns[name](value, context)


def _classify(value: Any, _: Mapping[str, Any]) -> Any:
    negative = "bad" in str(value)
    label = "negative" if negative else "positive"
    return {"label": label, "scores": {"negative": 0.9 if negative else 0.1}}


TRIAGE = """
name: feedback-triage
version: 1.0.0
trigger: {type: manual}
steps:
  - id: classify
    agent: classifier
    input: "${input.text}"
  - id: alert
    agent: notify
    needs: [classify]
    when: "${steps.classify.output.label} == 'negative'"
    input: {text: "${input.text}", score: "${steps.classify.output.scores.negative}"}
    timeout: 10s
    retries: 2
    on_failure: continue
"""


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def store(clock: VirtualClock) -> Store:
    return Store(MemoryStore(), clock, ChangeTracker)


@pytest.fixture
def agents(store: Store) -> Agents:
    a = Agents(store)
    a.add("classifier", _classify)
    a.add("notify", lambda v, c: {"sent": v})
    a.add("noop", lambda v, c: v)
    return a


def make_engine(store: Store, agents: Agents, clock: VirtualClock, **kw: Any) -> Engine:
    dispatcher = kw.pop("dispatcher", None) or Dispatcher()
    return Engine(store, agents, dispatcher=dispatcher, clock=clock, limits=Limits(**kw))


def drive(engine: Engine, clock: VirtualClock, *, steps: int = 100, dt: float = 0.5) -> None:
    for _ in range(steps):
        engine.poll()
        if not engine.busy():
            return
        clock.advance(dt)
    raise AssertionError("engine still busy")


def steps_of(store: Store, execution_id: str) -> dict[str, dict[str, Any]]:
    rows = store.agent_executions.list(workflow_execution_id=execution_id)
    return {r["id"].split(":", 1)[1]: r for r in rows}


def test_the_contract_example_runs_and_skips_by_condition(
    store: Store, agents: Agents, clock: VirtualClock
) -> None:
    engine = make_engine(store, agents, clock)
    engine.add_workflow(TRIAGE)
    neg = engine.submit("feedback-triage", {"text": "bad service"})
    pos = engine.submit("feedback-triage", {"text": "lovely"})
    drive(engine, clock)
    assert store.executions.get(neg)["status"] == "succeeded"
    s = steps_of(store, neg)
    assert s["classify"]["input"] == "bad service"  # a lone reference keeps the type
    assert s["alert"]["status"] == "succeeded"
    assert s["alert"]["input"] == {"text": "bad service", "score": 0.9}
    assert store.executions.get(neg)["output"] == {
        "alert": {"sent": {"text": "bad service", "score": 0.9}}
    }
    p = steps_of(store, pos)
    assert p["alert"]["status"] == "skipped"
    assert store.executions.get(pos)["status"] == "succeeded"
    keys = {k for _, _, k in agents.calls}
    assert f"{neg}:classify" in keys and f"{neg}:alert" in keys


def test_independent_steps_run_in_parallel_and_outputs_commit_before_dependents(
    store: Store, agents: Agents, clock: VirtualClock
) -> None:
    seen_by_join: list[dict[str, Any]] = []

    def join(value: Any, ctx: Mapping[str, Any]) -> Any:
        # Both inputs are already committed, with outputs, when the dependent starts.
        seen_by_join.append(steps_of(store, str(ctx["execution_id"])))
        return value

    agents.add("join", join)
    d = Dispatcher(eager=False)
    engine = make_engine(store, agents, clock, dispatcher=d)
    engine.add_workflow("""
name: fan
version: "1"
steps:
  - {id: a, agent: noop, input: 1}
  - {id: b, agent: noop, input: 2}
  - {id: j, agent: join, needs: [a, b], input: ["${steps.a.output}", "${steps.b.output}"]}
""")
    run = engine.submit("fan", None)
    engine.poll()
    assert len(d.pending) == 2  # a and b at once
    assert engine.inflight() == 2
    d.finish_all()
    engine.poll()
    assert len(d.pending) == 1
    d.finish_all()
    engine.poll()
    rows = seen_by_join[0]
    assert rows["a"]["status"] == rows["b"]["status"] == "succeeded"
    assert (rows["a"]["output"], rows["b"]["output"]) == (1, 2)
    assert store.executions.get(run)["output"] == {"j": [1, 2]}


def test_retries_back_off_exponentially_then_succeed(
    store: Store, agents: Agents, clock: VirtualClock
) -> None:
    attempts: list[float] = []

    def flaky(value: Any, ctx: Mapping[str, Any]) -> Any:
        attempts.append(clock.time())
        if len(attempts) < 3:
            raise AgentError(f"transient {len(attempts)}")
        return "ok"

    agents.add("flaky", flaky)
    engine = make_engine(store, agents, clock)
    engine.add_workflow("""
name: r
version: "1"
steps:
  - {id: s, agent: flaky, retries: 2, retry_backoff: 4s}
""")
    run = engine.submit("r", None)
    drive(engine, clock, dt=0.5)
    assert [round(t - attempts[0], 1) for t in attempts] == [0, 4.0, 12.0]  # 4s, then 8s
    row = steps_of(store, run)["s"]
    assert row["status"] == "succeeded" and row["metrics"]["attempt"] == 3
    assert store.executions.get(run)["status"] == "succeeded"


def test_failure_fails_the_run_and_cancels_what_has_not_started(
    store: Store, agents: Agents, clock: VirtualClock
) -> None:
    agents.add("boom", lambda v, c: (_ for _ in ()).throw(AgentError("sensor offline")))
    engine = make_engine(store, agents, clock)
    engine.add_workflow("""
name: f
version: "1"
steps:
  - {id: a, agent: boom, retries: 1, retry_backoff: 1s}
  - {id: b, agent: noop, needs: [a]}
""")
    run = engine.submit("f", None)
    drive(engine, clock)
    ex = store.executions.get(run)
    assert ex["status"] == "failed"
    assert ex["output"] == {"error": {"step": "a", "message": "sensor offline"}}
    s = steps_of(store, run)
    assert s["a"]["status"] == "failed" and s["a"]["metrics"]["attempt"] == 2
    assert s["b"]["status"] == "cancelled"


def test_on_failure_continue_skips_dependents_unless_their_when_names_the_step(
    store: Store, agents: Agents, clock: VirtualClock
) -> None:
    agents.add("boom", lambda v, c: (_ for _ in ()).throw(AgentError("nope")))
    engine = make_engine(store, agents, clock)
    engine.add_workflow("""
name: c
version: "1"
steps:
  - {id: a, agent: boom, on_failure: continue}
  - {id: after, agent: noop, needs: [a]}
  - {id: on_fail, agent: noop, needs: [a], when: "${steps.a.output} == null", input: alert}
""")
    run = engine.submit("c", None)
    drive(engine, clock)
    s = steps_of(store, run)
    assert s["a"]["status"] == "failed"
    assert s["after"]["status"] == "skipped"
    assert s["on_fail"]["status"] == "succeeded" and s["on_fail"]["output"] == "alert"
    assert store.executions.get(run)["status"] == "succeeded"


def test_max_concurrent_workflows_queues_the_rest_in_order(
    store: Store, agents: Agents, clock: VirtualClock
) -> None:
    d = Dispatcher(eager=False)
    engine = make_engine(store, agents, clock, dispatcher=d, max_concurrent_workflows=2)
    engine.add_workflow("name: one\nversion: '1'\nsteps: [{id: s, agent: noop}]\n")
    ids = []
    for i in range(5):
        ids.append(engine.submit("one", i))
        clock.advance(0.001)  # distinct started_at: admission is oldest first
    engine.poll()
    assert sorted(engine.active_runs()) == sorted(ids[:2])
    assert [store.executions.get(i)["status"] for i in ids] == ["running"] * 2 + ["queued"] * 3
    order: list[str] = list(engine.active_runs())
    while engine.busy() or d.pending:
        d.finish_all()
        engine.poll()
        order += [r for r in engine.active_runs() if r not in order]
        assert len(engine.active_runs()) <= 2
    assert order == ids
    assert {store.executions.get(i)["status"] for i in ids} == {"succeeded"}


def test_max_memory_usage_caps_agents_running_at_once(
    store: Store, agents: Agents, clock: VirtualClock
) -> None:
    agents.add("big", lambda v, c: v, memory=300 * MB)
    d = Dispatcher(eager=False)
    engine = make_engine(store, agents, clock, dispatcher=d, max_memory_usage=512 * MB)
    engine.add_workflow("""
name: m
version: "1"
steps:
  - {id: a, agent: big}
  - {id: b, agent: big}
""")
    engine.submit("m", None)
    engine.poll()
    assert len(d.pending) == 1  # 600MB would pass 512MB: b waits for a's memory
    d.finish_all()
    engine.poll()
    assert len(d.pending) == 1
    d.finish_all()
    engine.poll()
    assert not engine.busy()


def test_an_agent_larger_than_the_runtime_budget_is_refused_at_submit(
    store: Store, agents: Agents, clock: VirtualClock
) -> None:
    agents.add("huge", lambda v, c: v, memory=1024 * MB)
    engine = make_engine(store, agents, clock, max_memory_usage=512 * MB)
    engine.add_workflow("name: h\nversion: '1'\nsteps: [{id: s, agent: huge}]\n")
    with pytest.raises(WorkflowError, match=r"max_memory 1GB, more than runtime.max_memory_usage"):
        engine.submit("h", None)


@pytest.mark.parametrize(
    ("mode", "online", "expected"),
    [("never", False, "succeeded"), ("always", True, "failed"), ("auto", True, "succeeded")],
)
def test_offline_mode_decides_network_steps(
    store: Store, agents: Agents, clock: VirtualClock, mode: str, online: bool, expected: str
) -> None:
    agents.network.add("notify")
    engine = make_engine(store, agents, clock, offline_mode=mode)
    engine.is_online = lambda: online
    engine.add_workflow("name: n\nversion: '1'\nsteps: [{id: s, agent: notify}]\n")
    run = engine.submit("n", None)
    drive(engine, clock)
    assert store.executions.get(run)["status"] == expected
    if expected == "failed":
        assert "offline_mode is 'always'" in steps_of(store, run)["s"]["metrics"]["error"]


def test_offline_auto_waits_for_the_link(store: Store, agents: Agents, clock: VirtualClock) -> None:
    agents.network.add("notify")
    link = {"up": False}
    engine = make_engine(store, agents, clock, offline_mode="auto")
    engine.is_online = lambda: link["up"]
    engine.add_workflow("name: n\nversion: '1'\nsteps: [{id: s, agent: notify}]\n")
    run = engine.submit("n", None)
    for _ in range(10):
        engine.poll()
        clock.advance(60)
    assert store.executions.get(run)["status"] == "running"
    assert agents.calls == []
    link["up"] = True
    drive(engine, clock)
    assert store.executions.get(run)["status"] == "succeeded"


class TickingClock(VirtualClock):
    """A virtual clock that moves 1 ms on every read, like a real one between two reads."""

    def time(self) -> float:
        self.advance(0.001)
        return super().time()


def test_a_step_cancelled_before_it_started_never_starts_after_it_ended(
    store: Store, agents: Agents
) -> None:
    agents.add("boom", lambda v, c: (_ for _ in ()).throw(AgentError("sensor offline")))
    clock = TickingClock()
    engine = make_engine(store, agents, clock)
    engine.add_workflow("""
name: f
version: "1"
steps:
  - {id: a, agent: boom}
  - {id: b, agent: noop, needs: [a]}
""")
    run = engine.submit("f", None)
    drive(engine, clock)
    b = steps_of(store, run)["b"]
    assert b["status"] == "cancelled"
    assert b["started_at"] <= b["completed_at"], b


def test_cancel_stops_a_run(store: Store, agents: Agents, clock: VirtualClock) -> None:
    d = Dispatcher(eager=False)
    engine = make_engine(store, agents, clock, dispatcher=d)
    engine.add_workflow("""
name: k
version: "1"
steps:
  - {id: a, agent: noop}
  - {id: b, agent: noop, needs: [a]}
""")
    run = engine.submit("k", None)
    engine.poll()
    engine.cancel(run)
    d.finish_all()
    engine.poll()
    assert store.executions.get(run)["status"] == "cancelled"
    assert steps_of(store, run)["a"]["status"] == "succeeded"  # it was in flight
    assert "b" not in steps_of(store, run) or steps_of(store, run)["b"]["status"] == "cancelled"


def test_unknown_workflow_names_the_known_ones(
    store: Store, agents: Agents, clock: VirtualClock
) -> None:
    engine = make_engine(store, agents, clock)
    engine.add_workflow("name: real\nversion: '1'\nsteps: [{id: s, agent: noop}]\n")
    with pytest.raises(NotFound, match=r"no workflow named 'raal' \(known: real\)"):
        engine.submit("raal", None)


def test_unknown_agent_is_refused_when_the_workflow_is_added(
    store: Store, agents: Agents, clock: VirtualClock
) -> None:
    engine = make_engine(store, agents, clock)
    with pytest.raises(WorkflowError, match="agent"):
        engine.add_workflow("name: x\nversion: '1'\nsteps: [{id: s, agent: nosuch}]\n")


def test_resume_after_a_crash_skips_finished_steps_and_reruns_the_one_in_flight(
    tmp_path: Path, clock: VirtualClock
) -> None:
    db = tmp_path / "e.db"
    store1 = open_store(db, clock=clock, changes=ChangeTracker)
    agents1 = Agents(store1)
    agents1.add("noop", lambda v, c: v)
    d1 = Dispatcher(eager=False)
    e1 = make_engine(store1, agents1, clock, dispatcher=d1)
    e1.add_workflow("""
name: chain
version: "1"
steps:
  - {id: a, agent: noop, input: 1}
  - {id: b, agent: noop, needs: [a], input: "${steps.a.output}"}
  - {id: c, agent: noop, needs: [b], input: "${steps.b.output}"}
""")
    run = e1.submit("chain", None)
    e1.poll()
    d1.finish_all()
    e1.poll()  # a committed; b dispatched but never finishes: the process "dies" here
    assert steps_of(store1, run)["b"]["status"] == "running"
    store1.close()  # no further writes from the dead engine

    store2 = open_store(db, clock=clock, changes=ChangeTracker)
    agents2 = Agents(store2)
    agents2.add("noop", lambda v, c: v)
    e2 = make_engine(store2, agents2, clock)
    assert e2.recover() == 1
    drive(e2, clock)
    assert store2.executions.get(run)["status"] == "succeeded"
    called = [(key, value) for _, value, key in agents2.calls]
    assert called == [(f"{run}:b", 1), (f"{run}:c", 1)]  # a never ran again; b same key
    assert steps_of(store2, run)["b"]["metrics"]["attempt"] == 2
    store2.close()


def test_lock_contention_delays_a_run_and_never_fails_it(
    tmp_path: Path, clock: VirtualClock
) -> None:
    db = tmp_path / "lock.db"
    store = open_store(db, clock=clock, busy_timeout_ms=20, lock_retries=1, changes=ChangeTracker)
    agents = Agents(store)
    agents.add("noop", lambda v, c: v)
    engine = make_engine(store, agents, clock)
    engine.add_workflow("name: l\nversion: '1'\nsteps: [{id: s, agent: noop}]\n")
    run = engine.submit("l", None)
    agents.agent_id("noop")
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    for _ in range(3):
        engine.poll()  # every commit is refused by the lock: deferred, not failed
    assert store.executions.get(run)["status"] == "queued"
    blocker.execute("COMMIT")
    blocker.close()
    drive(engine, clock)
    assert store.executions.get(run)["status"] == "succeeded"
    store.close()


def test_input_schema_is_checked_at_submit(
    store: Store, agents: Agents, clock: VirtualClock
) -> None:
    engine = make_engine(store, agents, clock)
    engine.add_workflow(
        "name: typed\nversion: '1'\ninput_schema: {device: string}\nsteps: [{id: s, agent: noop}]\n"
    )
    with pytest.raises(WorkflowError, match="needs input key 'device' \\(string\\)"):
        engine.submit("typed", {"dev": "x"})
    assert store.backend.count("workflow_executions") == 0
    engine.submit("typed", {"device": "pump-1"})


def test_an_inline_dispatcher_counts_the_call_in_the_step_duration(
    store: Store, agents: Agents, clock: VirtualClock
) -> None:
    # A browser tab or a microcontroller runs the agent inside submit: its time is the
    # step's time too (it used to be measured from after the call, so about 0 ms).
    agents.add("slow", lambda v, c: clock.advance(2.5) or v)
    engine = make_engine(store, agents, clock, dispatcher=Dispatcher(eager=True))
    engine.add_workflow(
        {"name": "nap", "version": "1.0.0", "steps": [{"id": "a", "agent": "slow"}]}
    )
    run = engine.submit("nap", 1)
    drive(engine, clock)
    metrics = steps_of(store, run)["a"]["metrics"]
    assert metrics["duration_ms"] == 2500.0, metrics
