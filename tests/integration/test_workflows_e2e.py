"""Workflows end to end: real agents in worker subprocesses, the real CLI and the real API."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import http, run_cli

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "agents"


def _agent_file(tmp_path: Path, name: str, entry: str, **resources: str) -> Path:
    res = {"max_memory": "64MB", "max_cpu": 1.0, "max_storage": "10MB", **resources}
    config = {
        "name": name,
        "version": "1.0.0",
        "type": "edge",
        "resources": res,
        "runtime": {"executor": "python", "entry": entry, "env": {"PYTHONPATH": str(FIXTURES)}},
        "input": {"format": "json"},
        "output": {"format": "json"},
    }
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(config))
    return path


SHELL_AGENT = """
name: upper
version: 1.0.0
type: edge
resources: {max_memory: 64MB, max_cpu: 0.5, max_storage: 10MB}
runtime:
  executor: command
  command: "tr a-z A-Z"
input: {format: json}
output: {format: json}
"""

PIPELINE = """
name: pipeline
version: 1.0.0
steps:
  - id: shout
    agent: upper
    input: "${input.text}"
  - id: seen
    agent: echo-agent
    needs: [shout]
    input: {loud: "${steps.shout.output}"}
"""


@pytest.fixture
def data(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    (tmp_path / "upper.yaml").write_text(SHELL_AGENT)
    for args in (
        ["agent", "add", str(tmp_path / "upper.yaml")],
        ["agent", "add", str(FIXTURES / "echo-agent.yaml")],
    ):
        res = run_cli("--data-dir", str(d), *args)
        assert res.returncode == 0, res.stderr
    (tmp_path / "pipeline.yaml").write_text(PIPELINE)
    res = run_cli("--data-dir", str(d), "workflow", "add", str(tmp_path / "pipeline.yaml"))
    assert res.returncode == 0, res.stderr
    return d


def test_agents_are_listed_and_shown(data: Path) -> None:
    res = run_cli("--data-dir", str(data), "agent", "list")
    names = {a["name"] for a in json.loads(res.stdout)}
    assert {"upper", "echo-agent"} <= names
    show = run_cli("--data-dir", str(data), "agent", "show", "upper")
    assert json.loads(show.stdout)["config"]["runtime"]["command"] == "tr a-z A-Z"
    missing = run_cli("--data-dir", str(data), "agent", "show", "nope")
    assert missing.returncode == 2 and "no agent named 'nope'" in missing.stderr


def test_workflow_run_in_the_foreground_with_wait(data: Path) -> None:
    res = run_cli(
        "--data-dir",
        str(data),
        "workflow",
        "run",
        "pipeline",
        "--input",
        '{"text": "hi"}',
        "--wait",
    )
    assert res.returncode == 0, res.stderr
    execution_id, rest = res.stdout.split("\n", 1)
    view = json.loads(rest)
    assert view["id"] == execution_id and view["status"] == "succeeded"
    steps = {s["step"]: s for s in view["steps"]}
    assert steps["shout"]["output"] == "HI"  # "hi" as JSON, upper-cased by the shell agent
    seen = steps["seen"]["output"]
    assert seen["input"] == {"loud": "HI"}
    assert seen["idempotency_key"] == f"{execution_id}:seen"
    assert seen["env"]["EDGE_MIN_IDEMPOTENCY_KEY"] == f"{execution_id}:seen"
    # exec list / show see the same run
    listed = json.loads(
        run_cli("--data-dir", str(data), "exec", "list", "--status", "succeeded").stdout
    )
    assert [e["id"] for e in listed] == [execution_id]
    shown = json.loads(run_cli("--data-dir", str(data), "exec", "show", execution_id).stdout)
    assert shown["status"] == "succeeded"


def test_a_failing_run_exits_1(tmp_path: Path, data: Path) -> None:
    agent = _agent_file(tmp_path, "failer", "py_agents:fail")
    assert run_cli("--data-dir", str(data), "agent", "add", str(agent)).returncode == 0
    wf = tmp_path / "bad.yaml"
    wf.write_text("name: bad\nversion: '1'\nsteps: [{id: s, agent: failer, input: 7}]\n")
    assert run_cli("--data-dir", str(data), "workflow", "add", str(wf)).returncode == 0
    res = run_cli("--data-dir", str(data), "workflow", "run", "bad", "--wait")
    assert res.returncode == 1
    view = json.loads(res.stdout.split("\n", 1)[1])
    assert view["status"] == "failed"
    assert "bad input 7" in view["output"]["error"]["message"]


def test_workflow_run_is_queued_for_the_running_runtime(data: Path, runtime_process: Any) -> None:
    rp = runtime_process(data)
    res = run_cli(
        "--data-dir",
        str(data),
        "workflow",
        "run",
        "pipeline",
        "--input",
        '{"text": "queued"}',
        "--wait",
        "--timeout",
        "60",
    )
    assert res.returncode == 0, res.stderr
    view = json.loads(res.stdout.split("\n", 1)[1])
    assert view["status"] == "succeeded"
    # The runtime, not the CLI, ran it: the API sees it too.
    status, body = http("GET", f"{rp.url}/executions/{view['id']}")
    assert status == 200 and body["status"] == "succeeded"
    assert rp.stop() == 0


def test_the_api_adds_runs_and_reports(data: Path, runtime_process: Any) -> None:
    rp = runtime_process(data)
    status, body = http("GET", rp.url + "/agents")
    assert status == 200 and {"upper", "echo-agent"} <= {a["name"] for a in body}
    agent = json.loads(_agent_file(data.parent, "echo2", "py_agents:echo").read_text())
    status, body = http("POST", rp.url + "/agents", agent)
    assert status == 201 and body["name"] == "echo2"
    status, body = http(
        "POST", rp.url + "/workflows", b"name: two\nversion: '1'\nsteps: [{id: s, agent: echo2}]\n"
    )
    assert status == 201 and body["name"] == "two"
    status, body = http("GET", rp.url + "/workflows")
    assert {"two", "pipeline"} <= {w["name"] for w in body}
    status, body = http("POST", rp.url + "/workflows/two/run", {"x": 1})
    assert status == 202
    execution_id = body["execution_id"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status, view = http("GET", f"{rp.url}/executions/{execution_id}")
        if view["status"] in ("succeeded", "failed"):
            break
        time.sleep(0.1)
    assert view["status"] == "succeeded"
    assert view["steps"][0]["output"]["input"] == {"x": 1}
    status, body = http("GET", rp.url + "/executions?status=succeeded")
    assert execution_id in {e["id"] for e in body}
    # Errors: bad JSON, unknown workflow, unknown execution, wrong method, bad definition.
    assert http("POST", rp.url + "/workflows/two/run", b"{nope")[0] == 400
    status, body = http("POST", rp.url + "/workflows/zzz/run", {})
    assert status == 404 and "no workflow named 'zzz'" in body["error"]["message"]
    assert http("GET", rp.url + "/executions/none")[0] == 404
    assert http("DELETE", rp.url + "/workflows")[0] == 405
    status, body = http("POST", rp.url + "/workflows", b"name: x\nversion: '1'\nsteps: []\n")
    assert status == 400 and body["error"]["code"] == "workflow_invalid"
    assert rp.stop() == 0


@pytest.mark.parametrize(
    ("entry", "resources", "step_extra", "message"),
    [
        (
            "py_agents:allocate",
            {"max_memory": "64MB"},
            "input: {mb: 256}",
            "memory limit 64MB exceeded",
        ),
        ("py_agents:spin", {}, "timeout: 1s", "timed out after 1s"),
        (
            "py_agents:fill_disk",
            {"max_storage": "2MB"},
            "input: {mb: 8, sleep: 5}",
            "storage limit 2MB exceeded",
        ),
    ],
    ids=["memory", "timeout", "storage"],
)
def test_an_agent_past_its_limit_fails_its_step_and_never_hangs_the_run(
    tmp_path: Path, entry: str, resources: dict[str, str], step_extra: str, message: str
) -> None:
    d = tmp_path / "d"
    agent = _agent_file(tmp_path, "hog", entry, **resources)
    assert run_cli("--data-dir", str(d), "agent", "add", str(agent)).returncode == 0
    wf = tmp_path / "hog.yaml"
    wf.write_text(
        "name: hog\nversion: '1'\nsteps:\n  - id: s\n    agent: hog\n    " + step_extra + "\n"
    )
    assert run_cli("--data-dir", str(d), "workflow", "add", str(wf)).returncode == 0
    started = time.monotonic()
    res = run_cli("--data-dir", str(d), "workflow", "run", "hog", "--wait", timeout=60)
    assert time.monotonic() - started < 30
    assert res.returncode == 1, res.stderr
    view = json.loads(res.stdout.split("\n", 1)[1])
    assert view["status"] == "failed"
    assert message in view["steps"][0]["error"], view["steps"][0]["error"]


def test_agent_run_by_hand_over_cli_and_api(data: Path, runtime_process: Any) -> None:
    res = run_cli("--data-dir", str(data), "agent", "run", "upper", "--input", '"quiet"')
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == "QUIET"
    res = run_cli("--data-dir", str(data), "agent", "run", "echo-agent", "--input", '{"a": 1}')
    out = json.loads(res.stdout)
    assert out["input"] == {"a": 1} and out["idempotency_key"].startswith("adhoc:")
    bad = run_cli("--data-dir", str(data), "agent", "run", "nope", "--input", "1")
    assert bad.returncode == 1 and "no agent named 'nope'" in bad.stderr
    rp = runtime_process(data)
    status, body = http("POST", rp.url + "/agents/upper/invoke", "loud")
    assert (status, body) == (200, "LOUD")
    status, body = http("POST", rp.url + "/agents/nope/invoke", 1)
    assert status == 404 and "no agent named 'nope'" in body["error"]["message"]
    assert rp.stop() == 0
