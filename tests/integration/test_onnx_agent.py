"""onnxruntime agents end to end: add-time checks and warm, isolated workers (real sessions).

Every model is generated at test time (tests/fixtures/onnx); the shipped
models/out/text-classifier-lite.onnx is used when it has been built (make models).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from edge_min.agents.executors import InvocationContext, make_executor, validate_agent
from edge_min.agents.onnx import OnnxExecutor, validate_onnx_agent
from edge_min.agents.registry import AgentRegistry
from edge_min.errors import AgentError, AgentLimitExceeded, MissingDependency
from edge_min.platform.posix import PosixPlatform
from edge_min.store import open_store
from tests.fixtures.onnx import CLASSES, build_models, onnx_agent

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "models" / "out" / "text-classifier-lite.onnx"
MB = 1024 * 1024


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_models(tmp_path_factory.mktemp("onnx"))


@pytest.fixture(scope="module")
def platform() -> PosixPlatform:
    return PosixPlatform()


def ctx(timeout: float = 20.0, key: str = "wf-1:classify") -> InvocationContext:
    return InvocationContext(idempotency_key=key, timeout=timeout)


def executor(agent: Any, platform: PosixPlatform, tmp_path: Path) -> OnnxExecutor:
    made = make_executor(agent, platform, tmp_path / "work")
    assert isinstance(made, OnnxExecutor)
    return made


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[1][0] == "Z"
    except FileNotFoundError:
        return True


# -- warm and isolated -----------------------------------------------------------------------


def test_the_session_is_loaded_once_and_reused(
    models: dict[str, Path], platform: PosixPlatform, tmp_path: Path
) -> None:
    agent = onnx_agent(models["text"], input_format="text", classes=CLASSES, threads=2)
    ex = executor(agent, platform, tmp_path)
    try:
        assert ex.invoke("I love it", ctx())["label"] == "positive"
        pid = ex.worker_pid
        assert pid is not None and pid != os.getpid()
        assert ex.invoke({"text": "awful, broken"}, ctx())["label"] == "negative"
        batch = ex.invoke(["fine", "great"], ctx())
        assert [r["label"] for r in batch] == ["neutral", "positive"]
        assert ex.worker_pid == pid
        assert ex.last_meta == {"pid": pid, "served": 3, "sessions_created": 1}
        assert ex.info["providers"] == ["CPUExecutionProvider"]
        applied = ex._service.applied  # type: ignore[union-attr]
        # RLIMIT_AS = the worker after importing numpy + onnxruntime, + max_memory.
        baseline = applied["address_space"] - 128 * MB
        assert 100 * MB < baseline < 600 * MB
        assert applied["die_with_parent"] and applied["network"] in ("netns", "userns", "shared")
        # Telemetry is off: onnxruntime leaves nothing in the work directory.
        assert not any(files for _, _, files in os.walk(ex.work_dir))
    finally:
        ex.close()
    assert gone(pid) and ex.worker_pid is None


def test_a_slow_call_times_out_and_the_next_gets_a_fresh_worker(
    models: dict[str, Path], platform: PosixPlatform, tmp_path: Path
) -> None:
    ex = executor(onnx_agent(models["heavy"], max_memory="1GB"), platform, tmp_path)
    try:
        assert ex.invoke({"n": [4, 4]}, ctx()) == {"total": 64.0}
        first = ex.worker_pid
        assert first is not None
        started = time.monotonic()
        with pytest.raises(AgentLimitExceeded, match=r"timed out after 0.3s") as info:
            ex.invoke({"n": [4000, 4000]}, ctx(timeout=0.3))
        assert info.value.limit == "timeout" and time.monotonic() - started < 5
        assert gone(first)
        assert ex.invoke({"n": [3, 3]}, ctx()) == {"total": 27.0}
        assert ex.worker_pid not in (None, first)
    finally:
        ex.close()


def test_a_worker_killed_from_outside_is_a_memory_verdict_then_replaced(
    models: dict[str, Path], platform: PosixPlatform, tmp_path: Path
) -> None:
    # SIGKILL not sent by the supervisor is how the kernel's OOM killer ends a process.
    ex = executor(onnx_agent(models["scaled"]), platform, tmp_path)
    try:
        assert ex.invoke({"x": [1, 2, 3], "n": 2}, ctx()) == {"y": [2.0, 4.0, 6.0]}
        pid = ex.worker_pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(AgentLimitExceeded, match=r"memory limit 128MB exceeded"):
            ex.invoke({"x": [1, 2, 3], "n": 2}, ctx())
        assert ex.invoke({"x": [1, 2, 3], "n": -1}, ctx()) == {"y": [-1.0, -2.0, -3.0]}
        assert ex.worker_pid != pid and ex.last_meta["served"] == 1
    finally:
        ex.close()


def test_an_allocation_past_max_memory_fails_and_the_worker_is_replaced(
    models: dict[str, Path], platform: PosixPlatform, tmp_path: Path
) -> None:
    ex = executor(onnx_agent(models["heavy"]), platform, tmp_path)
    try:
        ex.invoke({"n": [2, 2]}, ctx())
        pid = ex.worker_pid
        with pytest.raises(AgentLimitExceeded, match=r"memory limit 128MB exceeded") as info:
            ex.invoke({"n": [20000, 20000]}, ctx())  # 1.6GB for one matrix
        assert info.value.limit == "memory" and "Failed to allocate memory" in str(info.value)
        assert ex.worker_pid is None and pid is not None and gone(pid)
        assert ex.invoke({"n": [2, 2]}, ctx()) == {"total": 8.0}
        # Within the limit: 2000 x 2000 floats three times over (48MB) fits in 128MB.
        total = ex.invoke({"n": [2000, 2000]}, ctx(timeout=60))["total"]
        assert total == pytest.approx(8e9, rel=0.02)  # float32 sums drift
    finally:
        ex.close()


def test_tensor_errors_name_the_input_and_keep_the_worker(
    models: dict[str, Path], platform: PosixPlatform, tmp_path: Path
) -> None:
    ex = executor(onnx_agent(models["rnn"]), platform, tmp_path)
    try:
        out = ex.invoke({"x": [[1, 0, 0, 0]], "h": [[0] * 8]}, ctx())
        assert set(out) == {"y", "h_out"} and len(out["h_out"][0]) == 8
        pid = ex.worker_pid
        with pytest.raises(
            AgentError,
            match=r"agent 'clf': input 'x': expected shape \[batch, 4\] "
            r"dtype float32, given shape \[4\] dtype int64",
        ):
            ex.invoke({"x": [1, 0, 0, 0], "h": [[0] * 8]}, ctx())
        again = ex.invoke({"x": [[1, 0, 0, 0]], "h": out["h_out"]}, ctx())
        assert again["h_out"] != out["h_out"] and ex.worker_pid == pid
    finally:
        ex.close()


def test_the_int8_model_runs_in_its_worker(
    models: dict[str, Path], platform: PosixPlatform, tmp_path: Path
) -> None:
    agent = onnx_agent(models["int8"], precision="int8", classes=["a", "b", "c"])
    info = validate_onnx_agent(agent, platform)
    assert info["scores_output"] == "probabilities"
    ex = executor(agent, platform, tmp_path)
    try:
        out = ex.invoke({"features": [[0.1] * 64]}, ctx())
        assert out["label"] in ("a", "b", "c") and abs(sum(out["scores"].values()) - 1) < 1e-3
    finally:
        ex.close()


# -- add-time checks -------------------------------------------------------------------------


def test_add_time_errors_name_the_problem(
    models: dict[str, Path], platform: PosixPlatform, tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(os.urandom(4096))
    empty_graph = tmp_path / "empty.onnx"
    empty_graph.write_bytes(b"\x08\x07\x3a\x00")  # ir_version 7 and an empty graph
    cases = [
        (onnx_agent(tmp_path / "absent.onnx"), r"model.path file not found"),
        (onnx_agent(garbage), r"is not an ONNX model"),
        (onnx_agent(models["int8"], precision="int8", max_storage="1KB"), r"larger than "),
        (onnx_agent(empty_graph), r"fails to load"),
        (onnx_agent(models["classifier"], precision="int8"), r"precision is int8 but .* fp32"),
        (
            onnx_agent(models["text"], input_format="text", classes=["a", "b"]),
            r"output.classes has 2 labels .* has 3 columns",
        ),
        (
            onnx_agent(models["classifier"], input_format="text", classes=["a", "b", "c"]),
            r"input.format text needs a model with exactly one input, of type tensor\(string\)",
        ),
        (
            onnx_agent(models["classifier"], acceleration="gpu", provider_fallback=False),
            r"acceleration gpu needs one of .*CUDAExecutionProvider.* has only .*"
            r"CPUExecutionProvider",
        ),
    ]
    for agent, pattern in cases:
        with pytest.raises(AgentError, match=pattern):
            validate_agent(agent, platform)


def test_a_model_too_big_for_max_memory_fails_at_add_time(
    models: dict[str, Path], platform: PosixPlatform
) -> None:
    with pytest.raises(AgentLimitExceeded, match=r"memory limit 1MB exceeded") as info:
        validate_agent(onnx_agent(models["int8"], precision="int8", max_memory="1MB"), platform)
    assert info.value.limit == "memory"


def test_a_missing_provider_falls_back_to_the_cpu_with_a_warning(
    models: dict[str, Path],
    platform: PosixPlatform,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    agent = onnx_agent(models["scaled"], acceleration="npu")
    ex = executor(agent, platform, tmp_path)
    try:
        with caplog.at_level(logging.WARNING, logger="edge_min.agents.onnx"):
            assert ex.invoke({"x": [1, 1, 1], "n": 5}, ctx()) == {"y": [5.0, 5.0, 5.0]}
        assert "acceleration npu needs one of QNNExecutionProvider" in caplog.text
        assert "running on CPUExecutionProvider" in caplog.text
    finally:
        ex.close()


def test_a_relative_model_path_is_found_under_the_storage_models_folder(
    models: dict[str, Path], platform: PosixPlatform, tmp_path: Path
) -> None:
    root = tmp_path / "edge-data"
    (root / "models").mkdir(parents=True)
    (root / "models" / "scaled.onnx").write_bytes(models["scaled"].read_bytes())
    work_root = root / "tmp" / "agents"
    agent = onnx_agent("scaled.onnx")
    with pytest.raises(AgentError, match="not found"):
        validate_agent(agent, platform)
    validate_agent(agent, platform, work_root)
    ex = make_executor(agent, platform, work_root)
    try:
        assert ex.invoke({"x": [1, 2, 3], "n": 1}, ctx()) == {"y": [1.0, 2.0, 3.0]}
    finally:
        ex.close()


def test_the_registry_refuses_a_bad_onnx_agent_when_it_is_added(
    tmp_path: Path, platform: PosixPlatform
) -> None:
    store = open_store(str(tmp_path / "edge.db"))
    registry = AgentRegistry(store, work_root=tmp_path / "work", platform=platform)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"definitely not a model")
    try:
        with pytest.raises(AgentError, match="is not an ONNX model"):
            registry.add(onnx_agent(bad))
        assert "clf" not in registry.names()
    finally:
        registry.close()
        store.close()


def test_without_onnxruntime_adding_says_how_to_install_and_the_rest_runs(
    models: dict[str, Path], tmp_path: Path
) -> None:
    script = textwrap.dedent(
        f"""
        import importlib.abc, json, sys

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "onnxruntime":
                    raise ModuleNotFoundError("No module named 'onnxruntime'", name=name)
                return None

        sys.meta_path.insert(0, Block())
        from edge_min.agents.executors import InvocationContext, make_executor, validate_agent
        from edge_min.errors import MissingDependency
        from edge_min.platform.posix import PosixPlatform
        from tests.fixtures.agents import make_agent
        from tests.fixtures.onnx import onnx_agent

        p = PosixPlatform()
        try:
            validate_agent(onnx_agent({str(models["classifier"])!r}), p)
        except MissingDependency as exc:
            print("MISSING", exc)
        agent = make_agent("py", entry="py_agents:echo")
        validate_agent(agent, p)
        out = make_executor(agent, p, {str(tmp_path)!r}).invoke(
            [1], InvocationContext("k", timeout=20)
        )
        print("PYTHON", json.dumps(out["input"]))
        print("LOADED", "onnxruntime" in sys.modules)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "MISSING the onnxruntime agent executor needs the 'onnxruntime' package" in done.stdout
    assert "pip install 'edge-min[onnx]'" in done.stdout
    assert "PYTHON [1]" in done.stdout and "LOADED False" in done.stdout


def test_a_worker_interpreter_without_onnxruntime_says_how_to_install(
    models: dict[str, Path], tmp_path: Path
) -> None:
    # The runtime has onnxruntime but the workers' interpreter does not.
    bare = getattr(sys, "_base_executable", None) or sys.executable
    probe = subprocess.run([bare, "-s", "-c", "import onnxruntime"], capture_output=True)
    if probe.returncode == 0:
        pytest.skip("the base interpreter has onnxruntime too")
    with pytest.raises(MissingDependency, match=r"pip install 'edge-min\[onnx\]'"):
        validate_agent(onnx_agent(models["scaled"]), PosixPlatform(python=bare))


# -- the shipped model -----------------------------------------------------------------------


@pytest.mark.skipif(not SHIPPED.exists(), reason="models/out/text-classifier-lite.onnx not built")
def test_the_shipped_text_classifier_runs_warm(platform: PosixPlatform, tmp_path: Path) -> None:
    agent = onnx_agent(
        SHIPPED,
        name="text-classifier-lite",
        precision="int8",
        input_format="text",
        classes=["positive", "negative", "neutral"],
        max_length=512,
        threads=2,
    )
    validate_agent(agent, platform)
    ex = executor(agent, platform, tmp_path)
    try:
        good = ex.invoke("I love this, it works great and the support was excellent", ctx())
        bad = ex.invoke("Terrible. It broke after a day and nobody answered my emails.", ctx())
        assert good["label"] == "positive" and bad["label"] == "negative"
        assert set(good["scores"]) == {"positive", "negative", "neutral"}
        assert ex.last_meta["sessions_created"] == 1 and ex.last_meta["served"] == 2
        assert ex.invoke("x" * 5000, ctx())["label"] in CLASSES  # cut to max_length
    finally:
        ex.close()


def test_runtime_threads_sizes_the_workers_thread_pool(
    models: dict[str, Path], platform: PosixPlatform, tmp_path: Path
) -> None:
    # intra_op_num_threads = runtime.threads: with 1 the worker runs on its main thread
    # alone, with 3 onnxruntime's pool adds threads of its own (at least 2); OMP_NUM_THREADS
    # tells any OpenMP inside the same.
    threads = 3
    counts = {}
    for n in (1, threads):
        ex = executor(onnx_agent(models["scaled"], threads=n), platform, tmp_path / f"t{n}")
        try:
            assert ex.invoke({"x": [1, 2, 3], "n": 2}, ctx()) == {"y": [2.0, 4.0, 6.0]}
            pid = ex.worker_pid
            assert pid is not None
            counts[n] = len(os.listdir(f"/proc/{pid}/task"))
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            assert f"OMP_NUM_THREADS={n}".encode() in environ
        finally:
            ex.close()
    assert counts[1] == 1 and counts[threads] >= 1 + threads - 1, counts
