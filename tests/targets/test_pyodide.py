"""edge_min inside Pyodide under Node.js, offline: config, a store round trip, a monitor sample.

The harness is wasm/run_python.mjs (pinned pyodide from wasm/node_modules, local wheels from
wasm/.cache/wheels, the working tree's edge_min/ copied in; network fetches refused).
wasm/setup.sh installs all of it. A missing harness FAILS these tests rather than skipping
them: CI runs the setup first, so a skip would only hide a broken setup.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.pyodide

REPO = Path(__file__).resolve().parents[2]
WASM = REPO / "wasm"
RUNNER = WASM / "run_python.mjs"
CHECK = Path(__file__).with_name("pyodide_core_check.py")
PYODIDE_ENTRY = WASM / "node_modules" / "pyodide" / "pyodide.mjs"
WHEELS = WASM / ".cache" / "wheels"
# A boot takes 2-4 s on an idle 2-core machine, up to ~8 s under load (so the tests that
# boot are also marked slow); the limit only stops a hung run from stalling the suite.
RUN_TIMEOUT_S = 120
SETUP_HINT = "run `bash wasm/setup.sh` (or `make wasm-setup`) first"


def _node() -> str:
    """The node binary, after checking the harness is installed; fails the test otherwise."""
    node = shutil.which("node")
    if node is None:
        pytest.fail(f"node not found on PATH: install Node.js >= 20, then {SETUP_HINT}")
    if not PYODIDE_ENTRY.is_file():
        pytest.fail(f"{PYODIDE_ENTRY} is missing: {SETUP_HINT}")
    if not any(WHEELS.glob("*.whl")):
        pytest.fail(f"no wheels in {WHEELS}: {SETUP_HINT}")
    return node


def run_in_pyodide(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `node wasm/run_python.mjs ARGS...` from the repo root."""
    return subprocess.run(
        [_node(), str(RUNNER), *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        cwd=REPO,
        check=False,
    )


def last_json_line(stdout: str) -> dict[str, Any]:
    """The check's result: the last non-empty stdout line, as JSON."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert lines, "the check printed nothing"
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def timings(stderr: str) -> dict[str, int]:
    """The `run_python timings {...}` line that --timings adds to stderr."""
    for line in stderr.splitlines():
        if line.startswith("run_python timings "):
            parsed: dict[str, int] = json.loads(line.removeprefix("run_python timings "))
            return parsed
    raise AssertionError(f"no timings line in stderr:\n{stderr}")


@pytest.fixture(scope="module")
def pyodide_check() -> dict[str, Any]:
    """Run pyodide_core_check.py in Pyodide once for the module; its JSON result plus timings."""
    started = time.monotonic()
    proc = run_in_pyodide("--timings", str(CHECK))
    wall_ms = round((time.monotonic() - started) * 1000)
    assert proc.returncode == 0, (
        f"check failed in Pyodide (exit {proc.returncode})\n"
        f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    )
    result = last_json_line(proc.stdout)
    result["_timings"] = {**timings(proc.stderr), "wall_ms": wall_ms}
    return result


@pytest.mark.slow
def test_core_check_runs_in_pyodide(
    pyodide_check: dict[str, Any], record_property: Callable[[str, object], None]
) -> None:
    result = pyodide_check
    record_property("pyodide_timings", result["_timings"])
    # Really Pyodide, really the copied working tree, really the local pure wheels.
    assert result["platform"] == "emscripten"
    assert result["python"].startswith("3.14.")
    assert result["edge_min_file"] == "/lib/python3.14/site-packages/edge_min/__init__.py"
    assert result["yaml_version"] == "6.0.3"
    assert result["yaml_libyaml"] is False
    assert result["cbor2_version"] == "5.9.0"
    assert result["sqlite_version"].startswith("3.")

    config = result["config"]
    assert config["max_memory_usage"] == 256 * 1024 * 1024
    assert config["max_concurrent_workflows"] == 3
    assert config["offline_mode"] == "always"
    assert config["sync_interval"] == 300.0
    assert config["conflict_resolution"] == "edge_wins"
    assert config["storage_path"].endswith("/data/edge.db")
    assert config["bad_value_rejected"] is True

    store = result["store"]
    assert store["name"] == "pyodide-check"
    assert store["version"] == "1.2.0"
    assert store["definition_equal"] is True
    assert store["rows"] == 1
    assert store["created_at"] == "2023-11-14T22:13:20.000000Z"
    assert uuid.UUID(store["workflow_id"])
    assert store["db_file_bytes"] > 0

    # No host to read in a tab: the in-process platform's reader gives nothing, and the
    # monitor's samples carry the runtime's own metrics only.
    assert result["monitor"] == {
        "platform": "inprocess",
        "reader": "NoResources",
        "host_metrics": [],
        "sample_metrics": ["queue_depth"],
    }


@pytest.mark.slow
def test_core_check_gives_the_same_facts_under_cpython(pyodide_check: dict[str, Any]) -> None:
    proc = subprocess.run(
        [sys.executable, str(CHECK)],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 0, f"check failed under CPython:\n{proc.stderr}"
    cpython = last_json_line(proc.stdout)
    assert cpython["platform"] != "emscripten"
    # Paths, ids and file sizes (SQLite version) vary; everything else must match.
    for facts in (cpython, pyodide_check):
        facts["config"].pop("storage_path")
        facts["store"].pop("workflow_id")
        facts["store"].pop("db_file_bytes")
    assert cpython["config"] == pyodide_check["config"]
    assert cpython["store"] == pyodide_check["store"]


@pytest.mark.slow
def test_python_exception_exits_nonzero_with_traceback() -> None:
    code = (
        "print('before')\n"
        "from edge_min.errors import ConfigError\n"
        "raise ConfigError('runtime.mode: bad value', file='edge-config.yaml')\n"
    )
    proc = run_in_pyodide("-c", code)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == "before\n"
    assert "Traceback (most recent call last)" in proc.stderr
    assert "ConfigError" in proc.stderr
    assert "runtime.mode: bad value" in proc.stderr


@pytest.mark.slow
def test_runs_the_source_tree_it_is_given(tmp_path: Path) -> None:
    # A copy of the package with one extra module: only a run that copies --src sees it.
    shutil.copytree(REPO / "edge_min", tmp_path / "edge_min")
    marker = uuid.uuid4().hex
    (tmp_path / "edge_min" / "_harness_marker.py").write_text(f"VALUE = {marker!r}\n")
    code = (
        "import sys\n"
        "from edge_min import _harness_marker\n"
        "print(_harness_marker.VALUE, *sys.argv[1:])\n"
    )
    proc = run_in_pyodide("--src", str(tmp_path), "-c", code, "arg-one", "arg two")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{marker} arg-one arg two\n"


def test_harness_usage_error_exits_2() -> None:
    proc = run_in_pyodide(str(REPO / "tests" / "targets" / "no_such_check.py"))
    assert proc.returncode == 2
    assert "no_such_check.py: no such file" in proc.stderr


def test_missing_harness_fails_with_the_setup_hint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(sys.modules[__name__], "PYODIDE_ENTRY", tmp_path / "pyodide.mjs")
    with pytest.raises(pytest.fail.Exception, match=r"wasm/setup\.sh"):
        _node()
