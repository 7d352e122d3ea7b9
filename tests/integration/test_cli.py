"""The edge-min command line, run as a real subprocess where it matters."""

from __future__ import annotations

import argparse
import json
import signal
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from edge_min import __version__
from edge_min.cli import COMMANDS, build_parser, main
from tests.conftest import SPEC_CONFIGS, edge_min_cmd, http, run_cli


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_command_has_help_with_an_example() -> None:
    parser = build_parser()
    assert "example:" in parser.format_help()
    top = _subparsers(parser)
    seen = 0
    for path in (c.path for c in COMMANDS):
        p = top[path[0]]
        if len(path) == 2:
            p = _subparsers(p)[path[1]]
        text = p.format_help()
        assert "example: edge-min" in text, f"{' '.join(path)} help has no example"
        seen += 1
    assert seen == len(COMMANDS) >= 15


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    assert capsys.readouterr().out.strip() == f"edge-min {__version__}"


def test_config_check_spec_files_ok() -> None:
    files = sorted(str(p) for p in SPEC_CONFIGS.glob("*.yaml"))
    assert len(files) == 5
    res = run_cli("config", "check", *files)
    assert res.returncode == 0, res.stdout + res.stderr
    assert [line.endswith(": OK") for line in res.stdout.splitlines()] == [True] * 5


def test_config_check_reports_errors_and_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "edge-config.yaml"
    bad.write_text("runtime:\n  max_concurent_workflows: 5\n  offline_mode: sometimes\n")
    good = SPEC_CONFIGS / "sync-config.yaml"
    res = run_cli("config", "check", str(good), str(bad))
    assert res.returncode == 1
    assert f"{good}: OK" in res.stdout
    assert "did you mean 'max_concurrent_workflows'?" in res.stdout
    assert "sometimes" in res.stdout
    assert "Traceback" not in res.stdout + res.stderr


def test_user_error_is_one_line_exit_2_no_traceback(tmp_path: Path) -> None:
    cfg = tmp_path / "edge-config.yaml"
    cfg.write_text("runtime:\n  offline_mode: sometimes\n")
    res = run_cli("--config", str(cfg), "--data-dir", str(tmp_path / "d"), "status")
    assert res.returncode == 2
    assert res.stderr.startswith("edge-min: error: ")
    assert len(res.stderr.strip().splitlines()) == 1
    assert "Traceback" not in res.stderr


def test_init_writes_five_files_and_refuses_to_clobber(tmp_path: Path) -> None:
    target = tmp_path / "cfg"
    res = run_cli("init", str(target))
    assert res.returncode == 0, res.stderr
    names = sorted(p.name for p in target.iterdir())
    assert names == sorted(
        [
            "edge-config.yaml",
            "sync-config.yaml",
            "edge-monitoring.yaml",
            "edge-security.yaml",
            "edge-agent-config.yaml",
        ]
    )
    check = run_cli("config", "check", *(str(p) for p in target.iterdir()))
    assert check.returncode == 0, check.stdout
    again = run_cli("init", str(target))
    assert again.returncode == 2
    assert "--force" in again.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_run_serves_health_and_stops_cleanly(runtime_process: Any, sig: int) -> None:
    rp = runtime_process()
    status, body = http("GET", rp.url + "/health")
    assert status == 200
    assert body["status"] == "ok" and body["version"] == __version__
    rp.proc.send_signal(sig)
    assert rp.proc.wait(15) == 0


def test_second_runtime_on_same_data_dir_is_refused(runtime_process: Any, tmp_path: Path) -> None:
    rp = runtime_process()
    res = run_cli("--data-dir", str(rp.data_dir), "run", "--port", "0")
    assert res.returncode == 2
    assert "already holds" in res.stderr
    assert rp.stop() == 0


def test_api_section_sets_the_address(tmp_path: Path, runtime_process: Any) -> None:
    from tests.conftest import free_port

    port = free_port()
    cfg = tmp_path / "data" / "edge-config.yaml"
    cfg.parent.mkdir()
    cfg.write_text(f"api:\n  host: 127.0.0.1\n  port: {port}\n")
    import subprocess

    proc = subprocess.Popen(
        [*edge_min_cmd(), "--data-dir", str(cfg.parent), "run"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert f"127.0.0.1:{port}" in line
        assert http("GET", f"http://127.0.0.1:{port}/health")[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


def test_status_backup_and_restore(tmp_path: Path, runtime_process: Any) -> None:
    data = tmp_path / "data"
    rp = runtime_process(data)
    assert rp.stop() == 0
    st = run_cli("--data-dir", str(data), "status")
    assert st.returncode == 0, st.stderr
    info = json.loads(st.stdout)
    assert info["database"].endswith("meta-agent-edge.db")
    assert info["runtime_running"] is False
    b = run_cli("--data-dir", str(data), "backup")
    assert b.returncode == 0, b.stderr
    backup_file = Path(b.stdout.strip())
    assert backup_file.parent == data / "backups" and backup_file.exists()
    # Damage a copy: restore must refuse it and leave the database alone.
    bad = tmp_path / "bad.db"
    raw = bytearray(backup_file.read_bytes())
    for i in range(4096, min(len(raw), 4096 * 3)):
        raw[i] = 0xFF
    bad.write_bytes(bytes(raw))
    r = run_cli("--data-dir", str(data), "restore", str(bad))
    assert r.returncode == 2
    assert "integrity" in r.stderr.lower() or "not an edge_min database" in r.stderr
    ok = run_cli("--data-dir", str(data), "restore", str(backup_file))
    assert ok.returncode == 0, ok.stderr
    with sqlite3.connect(data / "meta-agent-edge.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_restore_is_refused_while_the_runtime_runs(runtime_process: Any, tmp_path: Path) -> None:
    rp = runtime_process()
    b = run_cli("--data-dir", str(rp.data_dir), "backup")
    assert b.returncode == 0, b.stderr
    r = run_cli("--data-dir", str(rp.data_dir), "restore", b.stdout.strip())
    assert r.returncode == 2 and "stop it before restoring" in r.stderr
    assert rp.stop() == 0


@pytest.mark.slow
def test_run_stops_on_sigterm_even_when_it_comes_twice(tmp_path: Path) -> None:
    """What make, systemd and container stops do: SIGTERM to the group, sometimes twice."""
    import signal
    import subprocess
    import time

    for attempt in range(6):
        proc = subprocess.Popen(
            [*edge_min_cmd(), "--data-dir", str(tmp_path / "d"), "run", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert proc.stdout is not None and "API on" in proc.stdout.readline()
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.01 * attempt)
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(20) == 0, f"attempt {attempt}"
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            raise AssertionError(f"attempt {attempt}: still running 20 s after SIGTERM") from exc


@pytest.mark.parametrize("where", ["nested/custom.db", "ABS"])
def test_storage_path_puts_the_database_there(tmp_path: Path, where: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    db = tmp_path / "elsewhere" / "abs.db" if where == "ABS" else data / where
    (data / "edge-config.yaml").write_text(
        f"storage:\n  path: {db if where == 'ABS' else where}\nruntime:\n  offline_mode: always\n"
    )
    opened = run_cli("--data-dir", str(data), "workflow", "list")
    assert opened.returncode == 0, opened.stderr
    status = run_cli("--data-dir", str(data), "status")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["database"] == str(db)
    tables = {r[0] for r in sqlite3.connect(db).execute("SELECT name FROM sqlite_master")}
    assert {"workflows", "agents", "workflow_executions"} <= tables
    assert not (data / "meta-agent-edge.db").exists()


def test_an_agents_version_is_stored_shown_and_replaced_on_add(tmp_path: Path) -> None:
    data = tmp_path / "data"
    source = (Path(__file__).parents[2] / "examples" / "agents" / "notify.yaml").read_text()
    assert "version: 1.0.0" in source
    agent = tmp_path / "notify.yaml"
    for version in ("1.0.0", "1.1.0"):
        agent.write_text(source.replace("version: 1.0.0", f"version: {version}"))
        added = run_cli("--data-dir", str(data), "agent", "add", str(agent))
        assert added.returncode == 0, added.stderr
        listed = run_cli("--data-dir", str(data), "agent", "list")
        assert json.loads(listed.stdout) == [{"name": "notify", "type": "edge", "version": version}]
    rows = sqlite3.connect(data / "meta-agent-edge.db").execute(
        "SELECT version, sync_status FROM agents"
    )
    assert rows.fetchall() == [("1.1.0", "pending")]  # one row, its new version to sync


def test_a_command_prints_only_its_own_output_and_v_shows_the_runtime_log(tmp_path: Path) -> None:
    # The runtime a command opens has no central (127.0.0.1:9 refuses): it says so at INFO,
    # which is for services (run, central serve, update supervise), not for commands.
    cfg = tmp_path / "edge-config.yaml"
    cfg.write_text("sync:\n  central_url: http://127.0.0.1:9\n")
    flow = tmp_path / "flow.yaml"
    flow.write_text("name: quiet\nversion: 1.0.0\nsteps:\n  - id: one\n    agent: echo\n")
    base = ("--config", str(cfg), "--data-dir", str(tmp_path / "d"))
    added = run_cli(*base, "workflow", "add", str(flow))
    assert added.returncode == 0, added.stderr
    assert added.stderr == "", added.stderr
    listed = run_cli(*base, "workflow", "list")
    assert listed.returncode == 0 and "quiet" in listed.stdout
    assert listed.stderr == "", listed.stderr
    loud = run_cli(*base, "-v", "workflow", "list")
    assert loud.returncode == 0
    assert "INFO" in loud.stderr or "DEBUG" in loud.stderr, loud.stderr


def test_run_refuses_a_plain_http_central_elsewhere_unless_allowed(tmp_path: Path) -> None:
    import subprocess
    import time

    config = tmp_path / "edge-config.yaml"
    # TEST-NET-1: never routed, so nothing answers; what matters is what run allows
    config.write_text("sync:\n  central_url: http://192.0.2.1:9\napi:\n  port: 0\n")
    base = [*edge_min_cmd(), "--config", str(config), "--data-dir", str(tmp_path / "d"), "run"]
    refused = subprocess.run(base, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2, refused.stderr
    assert "refusing plain http:// to a host that is not loopback" in refused.stderr
    assert "--allow-insecure-http" in refused.stderr and "Traceback" not in refused.stderr
    proc = subprocess.Popen([*base, "--allow-insecure-http"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "d" / "runtime.json").exists() and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        assert (tmp_path / "d" / "runtime.json").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "allowed by the insecure-HTTP flag" in err
