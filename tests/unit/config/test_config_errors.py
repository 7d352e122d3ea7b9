"""Malformed configs: each error names the file, the key path, the bad value and what is allowed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge_min.config import (
    ConfigError,
    check_file,
    load_agent_config,
    load_config,
    parse_agent_config,
    parse_config,
)

EDGE = "edge-config.yaml"
SYNC = "sync-config.yaml"
MON = "edge-monitoring.yaml"
SEC = "edge-security.yaml"
AGENT = "edge-agent-config.yaml"
SECURITY = "edge-security.yaml"


def messages_of(tmp_path: Path, name: str, text: str) -> list[str]:
    """The error lines check_file gives for ``text`` saved as ``name`` (paths shown relative)."""
    path = tmp_path / name
    path.write_text(text)
    return [line.replace(f"{tmp_path}/", "") for line in check_file(path)]


# (file name, file text, the exact error line)
CASES: list[tuple[str, str, str]] = [
    (
        EDGE,
        "runtime:\n  max_concurent_workflows: 5\n",
        "edge-config.yaml: unknown key 'max_concurent_workflows' in runtime; "
        "did you mean 'max_concurrent_workflows'?",
    ),
    (
        EDGE,
        "runtim:\n  mode: edge\n",
        "edge-config.yaml: unknown key 'runtim' in the top level; did you mean 'runtime'?",
    ),
    (
        EDGE,
        "runtime:\n  offline_mode: sometimes\n",
        "edge-config.yaml: runtime.offline_mode: unknown value 'sometimes'; "
        "allowed: auto, always, never",
    ),
    (
        EDGE,
        "runtime:\n  offline_mode: alwyas\n",
        "edge-config.yaml: runtime.offline_mode: unknown value 'alwyas'; "
        "allowed: auto, always, never; did you mean 'always'?",
    ),
    (
        EDGE,
        "runtime:\n  max_concurrent_workflows: five\n",
        "edge-config.yaml: runtime.max_concurrent_workflows: expected an integer, "
        "got string 'five'",
    ),
    (
        EDGE,
        "runtime:\n  max_concurrent_workflows: true\n",
        "edge-config.yaml: runtime.max_concurrent_workflows: expected an integer, got boolean true",
    ),
    (
        EDGE,
        "runtime:\n  max_concurrent_workflows: 0\n",
        "edge-config.yaml: runtime.max_concurrent_workflows: must be at least 1, got 0",
    ),
    (
        EDGE,
        "runtime:\n  - mode\n  - edge\n",
        "edge-config.yaml: runtime: expected a mapping for runtime, got a list",
    ),
    (
        EDGE,
        "runtime:\n  max_memory_usage: 512 MegaBytes\n",
        "edge-config.yaml: runtime.max_memory_usage: expected a size such as 512MB, 2GB or 100KB, "
        "got '512 MegaBytes'",
    ),
    (
        EDGE,
        "runtime:\n  max_storage_usage: -5\n",
        "edge-config.yaml: runtime.max_storage_usage: must not be negative, got -5",
    ),
    (
        EDGE,
        "sync:\n  sync_interval: -300\n",
        "edge-config.yaml: sync.sync_interval: must not be negative, got -300",
    ),
    (
        EDGE,
        "sync:\n  sync_interval: soon\n",
        "edge-config.yaml: sync.sync_interval: expected a duration such as 300, 30s, 5m, 1h or 7d, "
        "got 'soon'",
    ),
    (
        EDGE,
        "sync:\n  central_url: ftp://central.example.com\n",
        "edge-config.yaml: sync.central_url: expected an http:// or https:// URL, "
        "got 'ftp://central.example.com'",
    ),
    (
        EDGE,
        "sync:\n  conflict_resolution: newest\n",
        "edge-config.yaml: sync.conflict_resolution: unknown value 'newest'; "
        "allowed: last_modified, central_wins, edge_wins, merge, manual",
    ),
    (
        EDGE,
        "storage:\n  synchronous: EXTRA\n",
        "edge-config.yaml: storage.synchronous: unknown value 'EXTRA'; allowed: FULL, NORMAL, OFF",
    ),
    (
        EDGE,
        "storage:\n  backup_keep: 0\n",
        "edge-config.yaml: storage.backup_keep: must be at least 1, got 0",
    ),
    (
        EDGE,
        "api:\n  port: 70000\n",
        "edge-config.yaml: api.port: must be at most 65535, got 70000",
    ),
    (
        EDGE,
        "monitoring:\n  metrics_collection: yes please\n",
        "edge-config.yaml: monitoring.metrics_collection: expected true or false, "
        "got string 'yes please'",
    ),
    (
        EDGE,
        "- runtime\n- sync\n",
        "edge-config.yaml: the top level must be a mapping of edge-config sections, got a list",
    ),
    (
        EDGE,
        "runtime:\n  mode: edge\n   offline_mode: auto\n",
        "edge-config.yaml: line 3, column 16: invalid YAML: mapping values are not allowed here",
    ),
    (
        EDGE,
        "runtime:\n  mode: edge\n  mode: edge\n",
        "edge-config.yaml: line 3: key 'mode' appears twice",
    ),
    (
        SYNC,
        "sync:\n  entities:\n    workflows:\n      batch_size: 0\n",
        "sync-config.yaml: sync.entities.workflows.batch_size: must be at least 1, got 0",
    ),
    (
        SYNC,
        "sync:\n  entities:\n    workflows:\n      batch_size: -10\n",
        "sync-config.yaml: sync.entities.workflows.batch_size: must be at least 1, got -10",
    ),
    (
        SYNC,
        "sync:\n  entities:\n    workflow:\n      priority: high\n",
        "sync-config.yaml: unknown key 'workflow' in sync.entities; did you mean 'workflows'?",
    ),
    (
        SYNC,
        "sync:\n  entities:\n    agents:\n      priority: urgent\n",
        "sync-config.yaml: sync.entities.agents.priority: unknown value 'urgent'; "
        "allowed: high, medium, low",
    ),
    (
        SYNC,
        "sync:\n  entities:\n    - workflows\n",
        "sync-config.yaml: sync.entities: expected a mapping for sync.entities, got a list",
    ),
    (
        SYNC,
        "sync:\n  retry:\n    backoff_factor: 0.5\n",
        "sync-config.yaml: sync.retry.backoff_factor: must be at least 1, got 0.5",
    ),
    (
        SYNC,
        "sync:\n  retry:\n    initial_delay: 2h\n    max_delay: 1h\n",
        "sync-config.yaml: sync.retry.initial_delay: must not exceed max_delay (3600 s), "
        "got 7200 s",
    ),
    (
        SYNC,
        "sync:\n  network:\n    max_bandwidth: fast\n",
        "sync-config.yaml: sync.network.max_bandwidth: expected a size such as 512MB, 2GB or "
        "100KB, got 'fast'",
    ),
    (
        SYNC,
        "sync:\n  schedule:\n    agents: 0\n",
        "sync-config.yaml: sync.schedule.agents: must be greater than 0 seconds, got 0",
    ),
    (
        MON,
        "health_checks:\n  - {name: a, command: 'true'}\n  - {name: a, command: 'true'}\n",
        "edge-monitoring.yaml: health_checks[1].name: duplicate health check name 'a'",
    ),
    (
        MON,
        "health_checks:\n  - {name: a, command: 'true'}\n  - {name: b, command: 'true', "
        "timeout: -1}\n",
        "edge-monitoring.yaml: health_checks[1].timeout: must not be negative, got -1",
    ),
    (
        MON,
        "health_checks:\n  - {name: a, interval: 5, command: 'true', timeout: 10}\n",
        "edge-monitoring.yaml: health_checks[0].timeout: must not exceed interval (5 s), got 10 s",
    ),
    (
        MON,
        "health_checks:\n  - name: a\n",
        "edge-monitoring.yaml: health_checks[0].command: is required: "
        "a shell command that exits 0 when healthy",
    ),
    (
        MON,
        "alerts:\n  - name: hot\n    condition: cpu_usage > 90\n    actions: [log, email]\n",
        "edge-monitoring.yaml: alerts[0].actions[1]: unknown value 'email'; "
        "allowed: log, notify_central, cleanup_temp, restart_sync",
    ),
    (
        MON,
        "alerts:\n  - name: hot\n    condition: cpu_usage is high\n    actions: [log]\n",
        "edge-monitoring.yaml: alerts[0].condition: cannot read condition 'cpu_usage is high': "
        "expected METRIC OP VALUE [for DURATION] with OP one of >=, <=, ==, !=, >, <, "
        "e.g. 'cpu_usage > 90 for 5m'",
    ),
    (
        MON,
        "alerts:\n  - name: hot\n    condition: cpu_usage > 90 for ages\n    actions: [log]\n",
        "edge-monitoring.yaml: alerts[0].condition: cannot read the duration 'ages' in condition "
        "'cpu_usage > 90 for ages': expected e.g. 30s, 5m or 1h",
    ),
    (
        MON,
        "alerts:\n  - {name: x, condition: a > 1, actions: [log]}\n"
        "  - {name: x, condition: b > 1, actions: [log]}\n",
        "edge-monitoring.yaml: alerts[1].name: duplicate alert name 'x'",
    ),
    (
        MON,
        "metrics:\n  buffer_size: 100\n  upload_threshold: 800\n",
        "edge-monitoring.yaml: metrics.upload_threshold: must not exceed buffer_size (100), "
        "got 800",
    ),
    (
        SEC,
        "access_control:\n  authorization:\n    roles:\n      - name: ops\n"
        "        permissions: [read, delete]\n",
        "edge-security.yaml: access_control.authorization.roles[0].permissions[1]: "
        "unknown value 'delete'; allowed: read, write, execute, configure",
    ),
    (
        SEC,
        "access_control:\n  authorization:\n    roles:\n      - {name: ops, permissions: [read]}\n"
        "      - {name: ops, permissions: [write]}\n",
        "edge-security.yaml: access_control.authorization.roles[1].name: duplicate role name 'ops'",
    ),
    (
        SEC,
        "tamper_detection:\n  response: explode\n",
        "edge-security.yaml: tamper_detection.response: unknown value 'explode'; "
        "allowed: lockdown, alert, log",
    ),
    (
        SEC,
        "tamper_detection:\n  checks: [boot_integrity, cpu_integrity]\n",
        "edge-security.yaml: tamper_detection.checks[1]: unknown value 'cpu_integrity'; "
        "allowed: boot_integrity, filesystem_integrity, hardware_integrity",
    ),
    (
        SEC,
        "encryption:\n  communication:\n    protocol: TLS 1.0\n",
        "edge-security.yaml: encryption.communication.protocol: unknown value 'TLS 1.0'; "
        "allowed: TLS 1.3, TLS 1.2; did you mean 'TLS 1.3'?",
    ),
    (
        SEC,
        "encryption:\n  storage:\n    key_rotation_days: 30 days\n",
        "edge-security.yaml: encryption.storage.key_rotation_days: expected an integer, "
        "got string '30 days'",
    ),
    (
        SEC,
        "access_control:\n  authentication:\n    method: password\n",
        "edge-security.yaml: access_control.authentication.method: unknown value 'password'; "
        "allowed: certificate, token, any",
    ),
    (
        SEC,
        "attestation:\n  method: local\n  server: https://attest.example.com\n",
        "edge-security.yaml: attestation.server: is only used with method remote; remove it, "
        "or set method: remote",
    ),
    (
        AGENT,
        "name: a\nversion: '1'\nruntime: {executor: onnxruntime}\noutput: {classes: [x]}\n",
        "edge-agent-config.yaml: model: is required with executor onnxruntime: "
        "give model.path to an .onnx file",
    ),
    (
        AGENT,
        "name: a\nversion: 1.10\nruntime: {executor: command, command: [echo]}\n",
        "edge-agent-config.yaml: version: expected a string, got number 1.1 "
        '(quote it in YAML, e.g. "1.0.0")',
    ),
    (
        AGENT,
        "name: a\nversion: '1'\nmodel: {path: m.onnx, precision: int4}\noutput: {classes: [x]}\n",
        "edge-agent-config.yaml: model.precision: unknown value 'int4'; allowed: int8, fp16, fp32; "
        "did you mean 'int8'?",
    ),
    (
        SECURITY,
        "encryption:\n  storage:\n    algorithm: ChaCha20\n",
        "edge-security.yaml: encryption.storage.algorithm: unknown value 'ChaCha20'; "
        "allowed: AES-256-GCM",
    ),
    (
        AGENT,
        "name: a\nversion: '1'\nmodel: {path: m.onnx, type: quantized, precision: fp32}\n"
        "output: {classes: [x]}\n",
        "edge-agent-config.yaml: model.precision: is fp32 but model.type is quantized, which "
        "takes int8 or fp16; set model.type: full or a matching precision",
    ),
    (
        AGENT,
        "name: a\nversion: '1'\nmodel: {path: m.onnx, type: full, precision: int8}\n"
        "output: {classes: [x]}\n",
        "edge-agent-config.yaml: model.precision: is int8 but model.type is full, which "
        "takes fp32; set model.type: quantized or a matching precision",
    ),
    (
        AGENT,
        "name: a\nversion: '1'\ntype: cloud\nruntime: {executor: command, command: [echo]}\n",
        "edge-agent-config.yaml: type: unknown value 'cloud'; allowed: edge",
    ),
    (
        AGENT,
        "name: a\nversion: '1'\nmodel: {path: m.onnx, format: tflite}\noutput: {classes: [x]}\n",
        "edge-agent-config.yaml: model.format: unknown value 'tflite'; allowed: onnx",
    ),
    (
        AGENT,
        "name: a\nversion: '1'\nmodel: {path: m.onnx}\noutput: {format: xml, classes: [x]}\n",
        "edge-agent-config.yaml: output.format: unknown value 'xml'; allowed: json",
    ),
    (
        AGENT,
        "name: a\nversion: '1'\nmodel: {path: m.onnx}\n",
        "edge-agent-config.yaml: output.classes: is required with executor onnxruntime, "
        "text input and json output: the label of each output",
    ),
    (
        AGENT,
        "name: a\nversion: '1'\nruntime: {executor: python, entry: 'pkg.mod'}\n",
        "edge-agent-config.yaml: runtime.entry: expected 'module:function', got 'pkg.mod'",
    ),
    (
        AGENT,
        "name: a\nversion: '1'\nruntime: {executor: command, command: [run], env: {PORT: 80}}\n",
        "edge-agent-config.yaml: runtime.env.PORT: expected a string, got number 80 (quote it)",
    ),
    (
        AGENT,
        "name: a\nversion: '1'\nruntime: {executor: command}\n",
        "edge-agent-config.yaml: runtime.command: is required with executor command: "
        "an argv list or a command string",
    ),
    (
        AGENT,
        "name: a\nversion: '1'\nresources: {max_memory: 0}\n"
        "runtime: {executor: command, command: run}\n",
        "edge-agent-config.yaml: resources.max_memory: must be at least 1, got 0",
    ),
    (
        AGENT,
        "name: a\nversion: '1'\nruntime: {executor: command, command: 'run \"x'}\n",
        "edge-agent-config.yaml: runtime.command: cannot split command 'run \"x': "
        "No closing quotation",
    ),
    (
        AGENT,
        "name: a\nversion: '1'\nruntime: {executor: command, command: run, entry: 'm:f'}\n",
        "edge-agent-config.yaml: runtime.entry: is only used by executor python, not command",
    ),
]


@pytest.mark.parametrize(("name", "text", "expected"), CASES, ids=[c[2][:70] for c in CASES])
def test_malformed_file_gives_exact_message(
    tmp_path: Path, name: str, text: str, expected: str
) -> None:
    assert messages_of(tmp_path, name, text) == [expected]


def test_all_errors_of_a_file_are_collected(tmp_path: Path) -> None:
    text = (
        "runtime:\n  max_concurrent_workflows: 0\n  offline_mode: sometimes\n"
        "storage:\n  typ: sqlite\n"
    )
    (tmp_path / EDGE).write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / EDGE)
    err = info.value
    assert len(err.errors) == 3
    assert [e.path for e in err.errors] == [
        "runtime.max_concurrent_workflows",
        "runtime.offline_mode",
        "storage.typ",
    ]
    assert [e.value for e in err.errors] == [0, "sometimes", "typ"]
    assert all(e.file == str(tmp_path / EDGE) for e in err.errors)
    assert str(err).splitlines() == [e.message for e in err.errors]


def test_errors_of_several_files_are_collected_together(tmp_path: Path) -> None:
    (tmp_path / EDGE).write_text("runtime:\n  offline_mode: sometimes\n")
    (tmp_path / SYNC).write_text("sync:\n  retry:\n    max_attempts: 0\n")
    (tmp_path / MON).write_text("metrics: [1]\n")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / EDGE)
    files = [e.file for e in info.value.errors]
    assert files == [str(tmp_path / n) for n in (EDGE, SYNC, MON)]


def test_yaml_error_in_a_companion_file_names_that_file_and_line(tmp_path: Path) -> None:
    (tmp_path / EDGE).write_text("runtime:\n  mode: edge\n")
    (tmp_path / SEC).write_text("encryption:\n  storage: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / EDGE)
    assert str(info.value).startswith(f"{tmp_path / SEC}: line 3, column 1: invalid YAML:")


def test_invalid_json_gives_line_and_column(tmp_path: Path) -> None:
    lines = messages_of(tmp_path, "edge-config.json", '{\n  "runtime": {"mode": "edge",}\n}')
    assert len(lines) == 1
    # The wording after "invalid JSON:" is the json module's and varies across Pythons.
    assert lines[0].startswith("edge-config.json: line 2, column 30: invalid JSON: ")


def test_top_level_scalar_is_refused_for_agent() -> None:
    with pytest.raises(ConfigError) as info:
        parse_agent_config("just a string", "a.yaml")
    assert str(info.value) == (
        "a.yaml: the top level must be a mapping of agent keys, got string 'just a string'"
    )


def test_parse_config_source_names_the_error() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"runtime": {"max_memory_usage": [1]}}, "inline")
    assert str(info.value) == (
        "inline: runtime.max_memory_usage: expected a size such as 512MB, got a list"
    )


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"api": {"port": 8000.5}}, "api.port: expected an integer, got number 8000.5"),
        ({"sync": {"sync_on_connect": "true"}}, "sync.sync_on_connect: expected true or false"),
        ({"storage": {"type": "postgres"}}, "storage.type: unknown value 'postgres'"),
        ({"runtime": {"mode": "cloud"}}, "runtime.mode: unknown value 'cloud'; allowed: edge"),
        ({"api": {"host": ""}}, "api.host: must not be empty"),
        ({"security": {"key_rotation_interval": "5 fortnights"}}, "expected a duration"),
    ],
)
def test_more_wrong_values(data: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "x.yaml")
    assert expected in str(info.value)
    assert len(info.value.errors) <= 1


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_agent_config(tmp_path / "nope.yaml")
    assert str(info.value) == f"{tmp_path / 'nope.yaml'}: file not found"
