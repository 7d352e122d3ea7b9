"""Isolation policy without processes: specs from configs, limits named from worker ends."""

from __future__ import annotations

import json
from typing import Any

import pytest

from edge_min.agents.isolation import build_worker_spec, limit_hit, raise_for_limits, worker_env
from edge_min.errors import AgentLimitExceeded
from edge_min.platform import WorkerResult, WorkerSpec
from tests.fixtures.agents import HERE, MB, make_agent


def spec(**kw: Any) -> WorkerSpec:
    base: dict[str, Any] = {
        "name": "clf",
        "work_dir": "/data/tmp/agents/clf",
        "argv": ("agent",),
        "max_memory": 128 * MB,
        "max_storage": 100 * MB,
        "max_cpu": 1.0,
        "timeout": 10.0,
    }
    base.update(kw)
    return WorkerSpec(**base)


def ended(**kw: Any) -> WorkerResult:
    base: dict[str, Any] = {"returncode": 0, "stdout": b"{}", "stderr": b"", "duration": 0.1}
    base.update(kw)
    return WorkerResult(**base)


def frame(kind: str) -> bytes:
    return json.dumps({"ok": False, "kind": kind, "type": "X", "message": "m"}).encode()


def test_the_spec_carries_the_agent_resources_and_context() -> None:
    agent = make_agent("clf", entry="py_agents:echo", max_memory="64MB", max_cpu=0.5)
    s = build_worker_spec(
        agent, work_dir="/w", idempotency_key="k", timeout=3.0, stdin=b"1", entry="py_agents:echo"
    )
    assert (s.max_memory, s.max_cpu, s.max_storage, s.timeout) == (64 * MB, 0.5, 100 * MB, 3.0)
    assert s.sys_path == (str(HERE),) and s.needs_network is False
    assert s.context["idempotency_key"] == "k" and s.context["agent"] == "clf"


def test_the_env_is_minimal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    agent = make_agent(entry="m:f", env={"A": "1"})
    env = worker_env(agent, work_dir="/w", idempotency_key="key-1", attempt=2)
    assert env["A"] == "1" and env["EDGE_MIN_IDEMPOTENCY_KEY"] == "key-1"
    assert env["EDGE_MIN_ATTEMPT"] == "2" and env["TMPDIR"] == "/w"
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert set(env) <= {
        "PATH", "LANG", "LC_ALL", "HOME", "MALLOC_ARENA_MAX", "TMPDIR", "TMP", "TEMP",
        "OMP_NUM_THREADS",
        "EDGE_MIN_AGENT", "EDGE_MIN_WORK_DIR", "EDGE_MIN_ATTEMPT", "EDGE_MIN_IDEMPOTENCY_KEY", "A",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("result", "limit"),
    [
        (ended(), None),
        (ended(returncode=1, stderr=b"boom"), None),
        (ended(returncode=-9, signal="SIGKILL", killed_for="timeout"), "timeout"),
        (ended(returncode=-9, signal="SIGKILL", killed_for="storage"), "storage"),
        (ended(returncode=None, killed_for="storage", storage_used=200 * MB), "storage"),
        (ended(returncode=-25, signal="SIGXFSZ"), "storage"),
        (ended(returncode=153, stderr=b"File size limit exceeded\n"), "storage"),
        (ended(returncode=1, storage_used=100 * MB), "storage"),
        (ended(returncode=0, storage_used=100 * MB), "storage"),
        (ended(returncode=0, storage_used=99 * MB), None),
        (ended(returncode=-24, signal="SIGXCPU"), "cpu"),
        (ended(returncode=-9, signal="SIGKILL", applied={"cpu_seconds": 10}), "cpu"),
        (ended(returncode=1, stderr=b"Traceback...\nMemoryError\n"), "memory"),
        (ended(returncode=-11, signal="SIGSEGV"), "memory"),
        (ended(returncode=-9, signal="SIGKILL"), "memory"),
    ],
)
def test_a_worker_end_names_its_limit(result: WorkerResult, limit: str | None) -> None:
    assert limit_hit(result, spec()) == limit


def test_python_frames_name_memory_and_storage() -> None:
    py = spec(argv=(), entry="m:f")
    assert limit_hit(ended(returncode=1, stdout=frame("memory")), py) == "memory"
    assert limit_hit(ended(returncode=1, stdout=frame("storage")), py) == "storage"
    assert limit_hit(ended(returncode=1, stdout=frame("error")), py) is None


def test_no_memory_limit_means_no_memory_verdict() -> None:
    assert limit_hit(ended(returncode=-11, signal="SIGSEGV"), spec(max_memory=None)) is None


@pytest.mark.parametrize(
    ("result", "text"),
    [
        (ended(returncode=1, stderr=b"MemoryError"), "agent 'clf': memory limit 128MB exceeded"),
        (ended(returncode=-9, killed_for="timeout"), "agent 'clf' timed out after 10s"),
        (ended(returncode=-9, killed_for="storage", storage_used=120 * MB), "storage limit 100MB"),
        (ended(returncode=-24, signal="SIGXCPU", applied={"cpu_seconds": 10}), "10 CPU seconds"),
    ],
)
def test_limit_errors_say_why(result: WorkerResult, text: str) -> None:
    with pytest.raises(AgentLimitExceeded) as info:
        raise_for_limits(result, spec())
    assert text in str(info.value)
    assert info.value.limit == limit_hit(result, spec())
