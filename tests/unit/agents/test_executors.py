"""Command and Python executors through real worker subprocesses: JSON in and out, errors."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from edge_min.agents.executors import (
    CommandExecutor,
    InvocationContext,
    PythonExecutor,
    check_output,
    make_executor,
    prepare_input,
    register_executor,
    validate_agent,
)
from edge_min.config.agent import load_agent_config
from edge_min.errors import AgentError
from edge_min.platform.inprocess import InProcessPlatform
from edge_min.platform.posix import PosixPlatform
from tests.fixtures.agents import HERE, make_agent, script


@pytest.fixture(scope="module")
def platform() -> PosixPlatform:
    return PosixPlatform()


def ctx(key: str = "wf-1:step-a", **kw: Any) -> InvocationContext:
    return InvocationContext(idempotency_key=key, timeout=kw.pop("timeout", 20), **kw)


def with_command(agent: Any, command: Any) -> Any:
    return dataclasses.replace(agent, runtime=dataclasses.replace(agent.runtime, command=command))


# -- command executor ------------------------------------------------------------------------


def test_command_round_trips_json_and_sees_the_key(
    platform: PosixPlatform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGE_MIN_TEST_SECRET", "do-not-leak")
    agent = make_agent(
        "echo-cmd", executor="command", command=script("json_echo.py"), env={"MODE": "fast"}
    )
    ex = make_executor(agent, platform, tmp_path)
    assert isinstance(ex, CommandExecutor)
    out = ex.invoke({"text": "héllo", "n": [1, 2]}, ctx("wf-9:classify"))
    assert out["input"] == {"text": "héllo", "n": [1, 2]}
    assert out["idempotency_key"] == "wf-9:classify"
    work = str(tmp_path / "echo-cmd")
    assert os.path.realpath(out["cwd"]) == os.path.realpath(work)
    env = out["env"]
    assert env["TMPDIR"] == work and env["HOME"] == work
    assert env["MODE"] == "fast" and env["EDGE_MIN_AGENT"] == "echo-cmd"
    assert "EDGE_MIN_TEST_SECRET" not in env


def test_the_agent_env_cannot_shadow_the_idempotency_key(
    platform: PosixPlatform, tmp_path: Path
) -> None:
    agent = make_agent(
        executor="command",
        command=script("json_echo.py"),
        env={"EDGE_MIN_IDEMPOTENCY_KEY": "forged"},
    )
    out = make_executor(agent, platform, tmp_path).invoke(1, ctx("real-key"))
    assert out["idempotency_key"] == "real-key"


def test_a_command_string_runs_through_sh(platform: PosixPlatform, tmp_path: Path) -> None:
    agent = with_command(make_agent(executor="command", command=["true"]), 'read x; echo "[$x]"')
    assert make_executor(agent, platform, tmp_path).invoke(7, ctx()) == [7]


def test_non_zero_exit_quotes_the_tail_of_stderr(platform: PosixPlatform, tmp_path: Path) -> None:
    cmd = "for i in $(seq 1 50); do echo line$i >&2; done; echo 'model file missing' >&2; exit 3"
    agent = with_command(make_agent(executor="command", command=["true"]), cmd)
    with pytest.raises(AgentError) as info:
        make_executor(agent, platform, tmp_path).invoke(None, ctx())
    text = str(info.value)
    assert "exited with code 3" in text and "model file missing" in text
    assert "line50" in text and "line1\n" not in text


def test_invalid_json_quotes_the_first_200_bytes(platform: PosixPlatform, tmp_path: Path) -> None:
    agent = with_command(
        make_agent(executor="command", command=["true"]), "printf 'not json %0300d' 0"
    )
    with pytest.raises(AgentError) as info:
        make_executor(agent, platform, tmp_path).invoke(None, ctx())
    text = str(info.value)
    assert "invalid JSON" in text and "not json 000" in text
    assert "0" * 300 not in text and "0" * 150 in text


def test_empty_output_is_an_error(platform: PosixPlatform, tmp_path: Path) -> None:
    agent = make_agent(executor="command", command=["true"])
    with pytest.raises(AgentError, match="printed nothing"):
        make_executor(agent, platform, tmp_path).invoke(None, ctx())


def test_a_missing_program_is_reported(platform: PosixPlatform, tmp_path: Path) -> None:
    agent = make_agent(executor="command", command=["/nonexistent/agent-binary"])
    with pytest.raises(AgentError, match=r"(?s)code 127.*cannot run '/nonexistent/agent-binary'"):
        make_executor(agent, platform, tmp_path).invoke(None, ctx())


def test_large_input_and_output_do_not_deadlock(platform: PosixPlatform, tmp_path: Path) -> None:
    agent = make_agent(executor="command", command=["cat"])
    big = ["x" * 1000] * 3000  # 3MB each way, far past a pipe buffer
    assert make_executor(agent, platform, tmp_path).invoke(big, ctx()) == big


def test_background_children_do_not_outlive_the_call(
    platform: PosixPlatform, tmp_path: Path
) -> None:
    cmd = "sleep 30 & echo $! > bg.pid; echo 1"
    agent = with_command(make_agent("bg", executor="command", command=["true"]), cmd)
    ex = make_executor(agent, platform, tmp_path)
    assert ex.invoke(None, ctx(timeout=10)) == 1
    pid = int((tmp_path / "bg" / "bg.pid").read_text())
    assert process_state(pid) in ("gone", "Z")  # a zombie left for init to reap is dead


def process_state(pid: int) -> str:
    """The one-letter state of a process from /proc, or ``gone``."""
    for _ in range(100):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return "gone"
        if state in "ZX":
            return state
        time.sleep(0.01)  # SIGKILL is delivered asynchronously
    return state


# -- python executor -------------------------------------------------------------------------


def test_python_round_trips_with_context(platform: PosixPlatform, tmp_path: Path) -> None:
    agent = make_agent("py-echo", entry="py_agents:echo", env={"AGENT_GREETING": "hi"})
    ex = make_executor(agent, platform, tmp_path)
    assert isinstance(ex, PythonExecutor)
    out = ex.invoke({"a": [1, "b"]}, ctx("wf-2:step-x", attempt=3))
    assert out["input"] == {"a": [1, "b"]}
    assert out["idempotency_key"] == "wf-2:step-x"
    assert out["agent"] == "py-echo" and out["attempt"] == 3
    assert out["work_dir"] == str(tmp_path / "py-echo")
    assert os.path.realpath(out["cwd"]) == os.path.realpath(out["work_dir"])
    assert out["env"]["EDGE_MIN_IDEMPOTENCY_KEY"] == "wf-2:step-x"
    assert out["env"]["AGENT_GREETING"] == "hi"


def test_concurrent_calls_each_get_their_own_worker(
    platform: PosixPlatform, tmp_path: Path
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    agent = make_agent("many", entry="py_agents:echo", max_cpu=0.5)
    ex = make_executor(agent, platform, tmp_path)
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda i: ex.invoke(i, ctx(f"key-{i}")), range(8)))
    assert [(o["input"], o["idempotency_key"]) for o in outs] == [(i, f"key-{i}") for i in range(8)]


def test_context_work_dir_overrides_the_default(platform: PosixPlatform, tmp_path: Path) -> None:
    agent = make_agent(entry="py_agents:echo")
    out = make_executor(agent, platform, tmp_path).invoke(0, ctx(work_dir=str(tmp_path / "w")))
    assert out["work_dir"] == str(tmp_path / "w") and (tmp_path / "w").is_dir()


def test_prints_in_agent_code_do_not_corrupt_the_result(
    platform: PosixPlatform, tmp_path: Path
) -> None:
    ex = make_executor(make_agent(entry="py_agents:chatty"), platform, tmp_path)
    assert ex.invoke({"k": "v"}, ctx()) == {"k": "v"}
    assert ex.last_result is not None and b"goes to stderr" in ex.last_result.stderr  # type: ignore[attr-defined]


def test_an_exception_in_the_agent_is_an_agent_error(
    platform: PosixPlatform, tmp_path: Path
) -> None:
    with pytest.raises(AgentError, match=r"py_agents:fail raised ValueError: bad input 42"):
        make_executor(make_agent(entry="py_agents:fail"), platform, tmp_path).invoke(42, ctx())


def test_a_result_that_is_not_json_is_refused(platform: PosixPlatform, tmp_path: Path) -> None:
    with pytest.raises(AgentError, match="not JSON"):
        make_executor(make_agent(entry="py_agents:not_json"), platform, tmp_path).invoke(1, ctx())


def test_a_missing_module_names_the_entry(platform: PosixPlatform, tmp_path: Path) -> None:
    ex = make_executor(make_agent(entry="no_such_module:run"), platform, tmp_path)
    with pytest.raises(AgentError, match=r"cannot load runtime\.entry no_such_module:run"):
        ex.invoke(1, ctx())


def test_pythonpath_in_the_agent_env_finds_the_module(
    platform: PosixPlatform, tmp_path: Path
) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "elsewhere_agent.py").write_text(
        "def run(value, context):\n    return value * 2\n"
    )
    agent = dataclasses.replace(
        make_agent(entry="elsewhere_agent:run", env={"PYTHONPATH": str(tmp_path / "lib")}),
        source=None,
    )
    assert make_executor(agent, platform, tmp_path).invoke(21, ctx()) == 42


def test_an_agent_loaded_from_yaml_runs(platform: PosixPlatform, tmp_path: Path) -> None:
    agent = load_agent_config(HERE / "echo-agent.yaml")
    out = make_executor(agent, platform, tmp_path).invoke("x", ctx())
    assert out["env"]["AGENT_GREETING"] == "hello" and out["agent"] == "echo-agent"


# -- input, output, factories ----------------------------------------------------------------


def test_input_max_length_truncates_or_refuses() -> None:
    cut = make_agent(entry="py_agents:echo", input_spec={"format": "text", "max_length": 5})
    assert prepare_input(cut, "abcdefgh") == "abcde"
    assert prepare_input(cut, {"not": "text"}) == {"not": "text"}
    strict = make_agent(
        entry="py_agents:echo", input_spec={"format": "text", "max_length": 5, "truncate": False}
    )
    with pytest.raises(AgentError, match=r"8 characters, over input.max_length 5"):
        prepare_input(strict, "abcdefgh")


def test_output_labels_must_be_known_classes() -> None:
    agent = make_agent(
        entry="py_agents:echo", output_spec={"format": "json", "classes": ["positive", "negative"]}
    )
    assert check_output(agent, {"label": "positive", "score": 0.9})["label"] == "positive"
    with pytest.raises(AgentError, match=r"'neutral', not one of output\.classes"):
        check_output(agent, {"label": "neutral"})


def test_a_registered_executor_factory_replaces_the_builtin_one(tmp_path: Path) -> None:
    from edge_min.config.agent import parse_agent_config

    agent = parse_agent_config(json.loads((HERE / "onnx-agent.json").read_text()))
    # The builtin onnxruntime executor loads on demand and checks the model file first.
    with pytest.raises(AgentError, match=r"model\.path"):
        make_executor(agent, PosixPlatform(), tmp_path)

    class Fake:
        def __init__(self, *args: Any) -> None:
            self.args = args

        def invoke(self, input_value: Any, context: InvocationContext) -> Any:
            return {"label": "positive"}

        def close(self) -> None:
            pass

    from edge_min.agents import executors

    register_executor("onnxruntime", Fake)
    try:
        made = make_executor(agent, PosixPlatform(), tmp_path)
        assert isinstance(made, Fake) and made.invoke("t", ctx()) == {"label": "positive"}
    finally:
        executors._FACTORIES.pop("onnxruntime")


def test_in_process_platform_runs_python_but_refuses_commands(tmp_path: Path) -> None:
    inproc = InProcessPlatform()
    assert inproc.cpu_limit_mode == "none"
    agent = make_agent("inproc", entry="py_agents:echo")
    out = make_executor(agent, inproc, tmp_path).invoke([1], ctx("k-1"))
    assert out["input"] == [1] and out["idempotency_key"] == "k-1"
    assert out["env"].get("EDGE_MIN_IDEMPOTENCY_KEY") != "k-1"  # no isolation: documented
    with pytest.raises(AgentError, match="bad input 1"):
        make_executor(make_agent(entry="py_agents:fail"), inproc, tmp_path).invoke(1, ctx())
    cmd = make_agent(executor="command", command=["true"])
    with pytest.raises(AgentError, match=r"the inprocess platform cannot start"):
        validate_agent(cmd, inproc)


def test_in_process_limits_are_checked_after_the_call(tmp_path: Path) -> None:
    # A tab cannot interrupt a call, so its limits are checked when it returns: over one,
    # the call fails the step as on a gateway and its output is discarded.
    from edge_min.errors import AgentLimitExceeded

    inproc = InProcessPlatform()
    slow = make_executor(make_agent(entry="py_agents:burn"), inproc, tmp_path)
    assert slow.invoke({"seconds": 0.05}, ctx(timeout=5))["wall"] >= 0.05
    with pytest.raises(AgentLimitExceeded) as late:
        slow.invoke({"seconds": 0.4}, ctx(timeout=0.2))
    assert late.value.limit == "timeout"
    assert "past its timeout of 0.2s" in late.value.message
    assert "cannot be interrupted, so it ran to its end" in late.value.message

    hungry = make_executor(
        make_agent(entry="py_agents:allocate", max_memory="16MB"), inproc, tmp_path
    )
    assert hungry.invoke({"mb": 2}, ctx()) == 2 * 1024 * 1024
    with pytest.raises(AgentLimitExceeded) as big:
        hungry.invoke({"mb": 40}, ctx())
    assert big.value.limit == "memory" and "memory limit 16MB exceeded" in big.value.message
    assert "bytes of Python memory in the call" in big.value.message

    filler = make_executor(
        make_agent(entry="py_agents:one_big_file", max_storage="2MB"), inproc, tmp_path
    )
    assert filler.invoke({"mb": 1}, ctx(work_dir=str(tmp_path / "w1"))) == 1
    with pytest.raises(AgentLimitExceeded) as full:
        filler.invoke({"mb": 3}, ctx(work_dir=str(tmp_path / "w2")))
    assert full.value.limit == "storage" and "storage limit 2MB exceeded" in full.value.message
