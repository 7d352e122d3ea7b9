"""The spec's five files, the defaults, includes resolution and file-kind detection."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge_min.config import (
    FILE_NAMES,
    AlertSpec,
    ConfigError,
    EdgeConfig,
    EntitySync,
    HealthCheckSpec,
    Role,
    check_file,
    default_files,
    detect_kind,
    load_agent_config,
    load_config,
    parse_condition,
    parse_config,
)
from edge_min.runtime import Paths

SPEC = Path(__file__).resolve().parents[2] / "fixtures" / "spec_configs"
MB = 1024 * 1024


@pytest.fixture
def spec_dir(tmp_path: Path) -> Path:
    """A copy of the spec's five files, so tests may add or remove some."""
    folder = tmp_path / "etc"
    shutil.copytree(SPEC, folder)
    return folder


def test_spec_edge_config_values_and_units(spec_dir: Path) -> None:
    cfg = load_config(spec_dir / "edge-config.yaml")
    assert cfg.runtime.mode == "edge"
    assert cfg.runtime.max_concurrent_workflows == 5
    assert cfg.runtime.max_memory_usage == 512 * MB
    assert cfg.runtime.max_storage_usage == 2 * 1024 * MB
    assert cfg.runtime.offline_mode == "auto"
    assert cfg.sync.central_url == "https://central.meta-agent.example.com"
    assert cfg.sync.sync_interval == 300.0
    assert cfg.sync.sync_on_connect is True
    assert cfg.sync.conflict_resolution == "last_modified"
    assert cfg.storage.type == "sqlite"
    assert cfg.storage.path == "/data/meta-agent-edge.db"
    assert Paths.resolve(cfg, "/elsewhere").db == Path("/data/meta-agent-edge.db")
    assert cfg.storage.backup_interval == 86400.0
    assert (cfg.storage.synchronous, cfg.storage.backup_keep, cfg.storage.root) == ("FULL", 7, None)
    assert cfg.security.key_rotation_interval == 30 * 86400.0
    assert cfg.security.encryption_enabled and cfg.security.secure_boot
    assert cfg.security.attestation_enabled
    assert cfg.monitoring.metrics_retention == 7 * 86400.0
    assert cfg.monitoring.health_check_interval == 60.0
    assert cfg.monitoring.resource_check_interval == 300.0
    assert cfg.monitoring.metrics_collection is True
    assert (cfg.api.host, cfg.api.port, cfg.api.health_open) == ("127.0.0.1", 8000, True)
    assert cfg.api.max_request_bytes == MB
    assert cfg.source == str(spec_dir / "edge-config.yaml")


def test_spec_sync_config(spec_dir: Path) -> None:
    sc = load_config(spec_dir / "edge-config.yaml").sync_config
    assert sc.entities == {
        "workflows": EntitySync("high", "central_wins", 50),
        "workflow_executions": EntitySync("medium", "last_modified", 100),
        "agents": EntitySync("high", "central_wins", 20),
        "agent_executions": EntitySync("low", "last_modified", 200),
    }
    assert sc.schedule == {
        "workflows": 300.0,
        "workflow_executions": 600.0,
        "agents": 3600.0,
        "agent_executions": 1800.0,
    }
    assert (sc.retry.max_attempts, sc.retry.initial_delay, sc.retry.max_delay) == (5, 30.0, 3600.0)
    assert sc.retry.backoff_factor == 2.0
    assert [sc.retry.delay(n) for n in (1, 2, 3, 8)] == [30.0, 60.0, 120.0, 3600.0]
    assert sc.network.max_bandwidth == MB
    assert sc.network.compression and sc.network.encryption


def test_spec_monitoring_config(spec_dir: Path) -> None:
    mc = load_config(spec_dir / "edge-config.yaml").monitoring_config
    assert (mc.metrics.collection_interval, mc.metrics.buffer_size) == (60.0, 1000)
    assert (mc.metrics.upload_interval, mc.metrics.upload_threshold) == (3600.0, 800)
    assert mc.health_checks[0] == HealthCheckSpec(
        "service_status", 300.0, "systemctl is-active meta-agent-edge", 5.0
    )
    assert [h.name for h in mc.health_checks] == ["service_status", "database_check", "sync_check"]
    assert [h.timeout for h in mc.health_checks] == [5.0, 5.0, 10.0]
    assert mc.alerts[1] == AlertSpec(
        "low_storage", "free_storage < 100MB", ("log", "notify_central", "cleanup_temp")
    )
    assert mc.alerts[2].actions == ("log", "notify_central", "restart_sync")


def test_spec_security_config(spec_dir: Path) -> None:
    sec = load_config(spec_dir / "edge-config.yaml").security_config
    assert sec.encryption.storage.algorithm == "AES-256-GCM"
    assert sec.encryption.storage.key_rotation_days == 30
    assert sec.encryption.communication.protocol == "TLS 1.3"
    assert sec.encryption.communication.certificate_path == "/etc/meta-agent/certs/device.crt"
    assert sec.encryption.communication.key_path == "/etc/meta-agent/certs/device.key"
    assert sec.encryption.communication.ca_path == "/etc/meta-agent/certs/ca.crt"
    assert sec.access_control.authentication.method == "certificate"
    assert sec.access_control.authentication.token_expiry == 86400.0
    authz = sec.access_control.authorization
    assert authz.default_policy == "deny"
    assert authz.roles == (
        Role("admin", ("read", "write", "execute", "configure")),
        Role("operator", ("read", "execute")),
        Role("monitor", ("read",)),
    )
    assert authz.role("operator") == Role("operator", ("read", "execute"))
    assert authz.role("nobody") is None
    assert (sec.attestation.method, sec.attestation.interval) == ("remote", 86400.0)
    assert sec.attestation.server == "https://attestation.meta-agent.example.com"
    td = sec.tamper_detection
    assert td.checks == ("boot_integrity", "filesystem_integrity", "hardware_integrity")
    assert (td.interval, td.response, td.enabled) == (3600.0, "lockdown", True)


def test_spec_agent_config() -> None:
    agent = load_agent_config(SPEC / "edge-agent-config.yaml")
    assert (agent.name, agent.version, agent.type) == ("text-classifier-lite", "1.0.0", "edge")
    assert agent.resources.max_memory == 128 * MB
    assert agent.resources.max_storage == 100 * MB
    assert agent.resources.max_cpu == 1.0
    assert agent.model is not None
    assert agent.model.path == "/models/text-classifier-lite.onnx"
    assert (agent.model.type, agent.model.format, agent.model.precision) == (
        "quantized",
        "onnx",
        "int8",
    )
    assert (agent.runtime.executor, agent.runtime.threads) == ("onnxruntime", 2)
    assert agent.runtime.acceleration == "cpu"
    assert agent.runtime.needs_network is False and agent.runtime.provider_fallback is True
    assert (agent.input.format, agent.input.max_length, agent.input.truncate) == ("text", 512, True)
    assert agent.output.classes == ("positive", "negative", "neutral")


@pytest.mark.parametrize("name", sorted(FILE_NAMES.values()))
def test_check_file_accepts_each_spec_file(name: str) -> None:
    assert check_file(SPEC / name) == []


@pytest.mark.parametrize(("kind", "name"), sorted(FILE_NAMES.items()))
def test_kind_is_detected_by_content_when_the_name_says_nothing(
    tmp_path: Path, kind: str, name: str
) -> None:
    renamed = tmp_path / "device-7.yaml"
    shutil.copy(SPEC / name, renamed)
    import yaml

    assert detect_kind(renamed, yaml.safe_load(renamed.read_text())) == kind
    assert detect_kind(tmp_path / name) == kind
    assert check_file(renamed) == []


def test_check_file_finds_errors_under_an_unhelpful_name(tmp_path: Path) -> None:
    odd = tmp_path / "site.yaml"
    odd.write_text("metrics:\n  buffer_size: 0\n")
    assert check_file(odd) == [f"{odd}: metrics.buffer_size: must be at least 1, got 0"]


def test_check_file_refuses_an_unknown_kind(tmp_path: Path) -> None:
    odd = tmp_path / "site.yaml"
    odd.write_text("colour: blue\n")
    (line,) = check_file(odd)
    assert line.startswith(f"{odd}: cannot tell which config file this is: name it one of ")


def test_defaults_without_any_file() -> None:
    cfg = load_config(None)
    assert cfg == EdgeConfig()
    assert cfg.source is None
    assert set(cfg.files.values()) == {"<defaults>"}
    assert cfg.storage.path is None
    assert Paths.resolve(cfg, "/var/lib/edge").db == Path("/var/lib/edge/meta-agent-edge.db")
    assert cfg.sync.central_url == "http://127.0.0.1:8765"
    assert cfg.runtime.max_memory_usage == 512 * MB
    assert cfg.sync_config.entities["agents"].batch_size == 20
    assert len(cfg.monitoring_config.health_checks) == 3
    assert cfg.security_config.tamper_detection.response == "lockdown"


def test_default_files_load_to_the_defaults(tmp_path: Path) -> None:
    files = default_files()
    assert list(files) == list(FILE_NAMES.values())
    for name, text in files.items():
        assert text.startswith(f"# {name}:")
        (tmp_path / name).write_text(text)
    for name in files:
        assert check_file(tmp_path / name) == [], name
    cfg = load_config(tmp_path / "edge-config.yaml")
    assert cfg == load_config(None)
    assert cfg.files["sync_config"] == str(tmp_path / "sync-config.yaml")
    agent = load_agent_config(tmp_path / "edge-agent-config.yaml")
    assert agent.model is not None
    assert agent.model.path == str(tmp_path / "models" / "text-classifier-lite.onnx")


def test_includes_named_paths_are_relative_to_edge_config(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "s.yaml").write_text("sync:\n  retry:\n    max_attempts: 9\n")
    (tmp_path / "policies" / "m.json").write_text(json.dumps({"metrics": {"buffer_size": 900}}))
    (tmp_path / "conf" / "edge-config.yaml").write_text(
        "includes:\n  sync: ../policies/s.yaml\n  monitoring: ../policies/m.json\n"
    )
    # A beside file that must be ignored because includes names another one.
    (tmp_path / "conf" / "sync-config.yaml").write_text("sync:\n  retry:\n    max_attempts: 2\n")
    cfg = load_config(tmp_path / "conf" / "edge-config.yaml")
    assert cfg.sync_config.retry.max_attempts == 9
    assert cfg.monitoring_config.metrics.buffer_size == 900
    assert cfg.files["sync_config"] == str(tmp_path / "policies" / "s.yaml")
    assert cfg.files["monitoring_config"] == str(tmp_path / "policies" / "m.json")
    assert cfg.files["security_config"] == "<defaults>"


def test_includes_found_beside_edge_config(spec_dir: Path) -> None:
    cfg = load_config(spec_dir / "edge-config.yaml")
    for key, name in [
        ("sync_config", "sync-config.yaml"),
        ("monitoring_config", "edge-monitoring.yaml"),
        ("security_config", "edge-security.yaml"),
    ]:
        assert cfg.files[key] == str(spec_dir / name)


def test_absent_companions_take_defaults(tmp_path: Path) -> None:
    (tmp_path / "edge-config.yaml").write_text("runtime:\n  max_concurrent_workflows: 2\n")
    cfg = load_config(tmp_path / "edge-config.yaml")
    assert cfg.runtime.max_concurrent_workflows == 2
    assert cfg.sync_config == EdgeConfig().sync_config
    assert cfg.files["monitoring_config"] == "<defaults>"


def test_named_include_that_is_missing_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "edge-config.yaml").write_text("includes:\n  security: sec/edge-security.yaml\n")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "edge-config.yaml")
    assert str(info.value) == (
        f"{tmp_path / 'edge-config.yaml'}: includes.security: file not found: "
        f"{tmp_path / 'sec' / 'edge-security.yaml'}"
    )


def test_a_folder_is_accepted_as_the_config_path(spec_dir: Path, tmp_path: Path) -> None:
    assert load_config(spec_dir) == load_config(spec_dir / "edge-config.yaml")
    only = tmp_path / "only-sync"
    only.mkdir()
    (only / "sync-config.yml").write_text("sync:\n  network:\n    max_bandwidth: 256KB/s\n")
    cfg = load_config(only)
    assert cfg.sync_config.network.max_bandwidth == 256 * 1024
    assert cfg.source is None


def test_relative_storage_paths_resolve_against_the_file(tmp_path: Path) -> None:
    (tmp_path / "edge-config.yaml").write_text("storage:\n  path: db/edge.db\n  root: data\n")
    cfg = load_config(tmp_path / "edge-config.yaml")
    assert cfg.storage.path == str(tmp_path / "db" / "edge.db")
    assert cfg.storage.root == str(tmp_path / "data")


def test_durations_accept_unit_strings() -> None:
    data = {"sync": {"sync_interval": "2m"}, "monitoring": {"health_check_interval": "45s"}}
    cfg = parse_config(data)
    assert cfg.sync.sync_interval == 120.0
    assert cfg.monitoring.health_check_interval == 45.0


def test_companion_defaults_use_edge_config_intervals(tmp_path: Path) -> None:
    (tmp_path / "edge-config.yaml").write_text(
        "sync:\n  sync_interval: 2m\nmonitoring:\n  health_check_interval: 45\n"
    )
    (tmp_path / "sync-config.yaml").write_text("sync:\n  schedule:\n    agents: 1h\n")
    (tmp_path / "edge-monitoring.yaml").write_text(
        "health_checks:\n  - name: ping\n    command: 'true'\n    timeout: 1\n"
    )
    cfg = load_config(tmp_path / "edge-config.yaml")
    assert cfg.sync_config.schedule["agents"] == 3600.0
    assert cfg.sync_config.schedule["workflows"] == 120.0
    assert cfg.monitoring_config.health_checks == (HealthCheckSpec("ping", 45.0, "true", 1.0),)


def test_security_file_follows_edge_switches_when_silent(tmp_path: Path) -> None:
    (tmp_path / "edge-config.yaml").write_text(
        "security:\n  encryption_enabled: false\n  key_rotation_interval: 7d\n"
        "  attestation_enabled: false\n"
    )
    sec = load_config(tmp_path / "edge-config.yaml").security_config
    assert sec.encryption.storage.enabled is False
    assert sec.encryption.storage.key_rotation_days == 7
    assert sec.attestation.enabled is False


def test_security_switches_that_disagree_are_an_error(tmp_path: Path) -> None:
    (tmp_path / "edge-config.yaml").write_text("security:\n  key_rotation_interval: 7d\n")
    (tmp_path / "edge-security.yaml").write_text(
        "encryption:\n  storage:\n    key_rotation_days: 30\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "edge-config.yaml")
    assert str(info.value) == (
        f"{tmp_path / 'edge-config.yaml'}: security.key_rotation_interval: is '7d' but "
        f"{tmp_path / 'edge-security.yaml'} sets encryption.storage.key_rotation_days: 30; "
        "make them agree or remove one"
    )


def test_yaml_quirks_are_handled() -> None:
    # Unquoted OFF is the boolean false in YAML 1.1; "5m" durations are accepted too.
    cfg = parse_config({"storage": {"synchronous": False, "backup_interval": "5m"}})
    assert cfg.storage.synchronous == "OFF"
    assert cfg.storage.backup_interval == 300.0
    assert parse_config({"storage": {"synchronous": "normal"}}).storage.synchronous == "NORMAL"


def test_conflict_resolution_merge_is_accepted() -> None:
    assert parse_config({"sync": {"conflict_resolution": "merge"}}).sync.conflict_resolution == (
        "merge"
    )


def test_parse_condition_splits_the_spec_conditions() -> None:
    high = parse_condition("cpu_usage > 90 for 5m")
    assert (high.metric, high.op, high.value, high.duration) == ("cpu_usage", ">", 90.0, 300.0)
    low = parse_condition("free_storage < 100MB")
    assert (low.metric, low.op, low.value, low.duration) == ("free_storage", "<", 100.0 * MB, 0)
    assert parse_condition("memory_usage >= 85%").value == 85.0
    with pytest.raises(ValueError, match="METRIC OP VALUE"):
        parse_condition("cpu_usage")


def test_config_imports_without_yaml_and_reads_json(tmp_path: Path) -> None:
    (tmp_path / "edge-config.json").write_text(json.dumps({"api": {"port": 9001}}))
    code = (
        "import sys; sys.modules['yaml'] = None\n"
        "import edge_min, edge_min.config as c\n"
        f"cfg = c.load_config({str(tmp_path / 'edge-config.json')!r})\n"
        "assert cfg.api.port == 9001, cfg.api\n"
        "try:\n"
        f"    c.load_config({str(SPEC / 'edge-config.yaml')!r})\n"
        "except c.ConfigError: raise\n"
        "except Exception as e: print(type(e).__name__, e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("MissingDependency ")
    assert "PyYAML" in out.stdout


def test_yaml_anchors_and_merge_keys_still_work(tmp_path: Path) -> None:
    (tmp_path / "sync-config.yaml").write_text(
        "sync:\n  entities:\n    workflows: &hot {priority: high, batch_size: 10}\n"
        "    agents:\n      <<: *hot\n      batch_size: 5\n"
    )
    (tmp_path / "edge-config.yaml").write_text("")
    entities = load_config(tmp_path / "edge-config.yaml").sync_config.entities
    assert entities["agents"] == EntitySync("high", "central_wins", 5)
    assert entities["workflows"] == EntitySync("high", "central_wins", 10)
