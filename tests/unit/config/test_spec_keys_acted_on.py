"""Every key of the spec's five config files is acted on, and a test shows it.

The rule: a config key the product reads but does not act on is a defect; a setting that
claims protection and does nothing is the worst one. Parsing and validating a key is not
acting on it. A key is acted on when changing its value changes what the product does, and
``ACTED_ON`` names, for every key, the test that shows this (e.g.
``runtime.max_concurrent_workflows`` -> a test that submits more runs than the limit and sees
the rest queued).

Key paths are computed from the YAML files in tests/fixtures/spec_configs/ (copies of the
spec's, /work/shared/spec/configs/), written ``<file>:<dotted.path>``:

- a mapping key is ``parent.key``; a key under the items of a list of mappings is
  ``parent[].key`` (``access_control.authorization.roles[].permissions``);
- a list of scalars (``tamper_detection.checks``, ``alerts[].actions``) is one leaf;
- a section (a mapping, or a list of mappings) maps to ``"section"``: it is acted on through
  its children, which have entries of their own.

A key whose only allowed value is the one the spec writes (``runtime.mode: edge``,
``storage.type: sqlite``) is acted on by refusing every other value; its entry names the test
that shows the refusal.

Adding a key to a spec file: add ``"<file>:<path>": "tests/<file>.py::<test function>"`` to
``ACTED_ON``, naming a test that changes that key's value and sees the behaviour change. If
no such test exists, write it; do not point at a test that only parses the value. A key that
nothing proves yet goes in ``PENDING`` with one line saying what is missing, and fails
``test_no_pending_key_outside_the_security_work`` or ``test_no_security_key_is_pending``:
PENDING is empty, and a gap is a failing test, not a tolerated one.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]
SPEC = REPO / "tests" / "fixtures" / "spec_configs"
SPEC_FILES = (
    "edge-config.yaml",
    "sync-config.yaml",
    "edge-monitoring.yaml",
    "edge-security.yaml",
    "edge-agent-config.yaml",
)
SECTION = "section"

# -- the table -----------------------------------------------------------------------------

ENGINE = "tests/unit/engine/test_engine.py"
RUNTIME = "tests/unit/test_runtime.py"
CONFIG_ERRORS = "tests/unit/config/test_config_errors.py"
CONFIG_FILES = "tests/unit/config/test_config_files.py"
ATTESTATION = "tests/unit/security/test_attestation_config.py"
ATREST = "tests/unit/security/test_atrest.py"
TAMPER = "tests/unit/security/test_tamper.py"
BOOT = "tests/unit/security/test_boot.py"
MANAGER = "tests/unit/sync/test_manager.py"
RUNTIME_SYNC = "tests/integration/test_runtime_sync.py"
MONITOR = "tests/unit/monitor/test_monitor.py"
METRICS = "tests/unit/monitor/test_metrics.py"
HEALTH = "tests/unit/monitor/test_health.py"
ALERTS = "tests/unit/monitor/test_alerts.py"
TLS_CONFIG = "tests/unit/security/test_tls_config.py"
TLS = "tests/integration/test_tls.py"
API_ACCESS = "tests/integration/test_api_access.py"
LIMITS = "tests/integration/test_agent_limits.py"
ONNX_GRAPH = "tests/unit/agents/test_onnx_graph.py"
ONNX_AGENT = "tests/integration/test_onnx_agent.py"
EXECUTORS = "tests/unit/agents/test_executors.py"

ACTED_ON: dict[str, str] = {
    "edge-config.yaml:security.encryption_enabled": ATREST
    + "::test_edge_configs_encryption_enabled_switches_sealing",
    "edge-config.yaml:security.key_rotation_interval": ATREST
    + "::test_rotation_interval_is_exact_in_seconds_or_whole_days",
    "edge-config.yaml:security.secure_boot": BOOT
    + "::test_secure_boot_true_on_an_unverified_chain_is_a_startup_error",
    "edge-security.yaml:encryption.storage.enabled": ATREST
    + "::test_key_ring_is_none_when_encryption_is_off",
    "edge-security.yaml:encryption.storage.algorithm": CONFIG_ERRORS
    + "::test_malformed_file_gives_exact_message",
    "edge-security.yaml:encryption.storage.key_rotation_days": ATREST
    + "::test_rotation_interval_is_exact_in_seconds_or_whole_days",
    "edge-security.yaml:tamper_detection.enabled": TAMPER
    + "::test_tamper_detection_keys_are_acted_on",
    "edge-security.yaml:tamper_detection.checks": TAMPER
    + "::test_tamper_detection_keys_are_acted_on",
    "edge-security.yaml:tamper_detection.interval": TAMPER
    + "::test_a_changed_config_is_logged_within_two_intervals",
    "edge-security.yaml:tamper_detection.response": TAMPER
    + "::test_lockdown_refuses_runs_drops_keys_and_survives_a_restart",
    "edge-config.yaml:security.attestation_enabled": ATTESTATION
    + "::test_enabled_false_attests_nothing",
    "edge-security.yaml:attestation.enabled": ATTESTATION + "::test_enabled_false_attests_nothing",
    "edge-security.yaml:attestation.method": ATTESTATION + "::test_local_compares_on_the_device",
    "edge-security.yaml:attestation.interval": ATTESTATION
    + "::test_remote_quotes_at_start_and_every_interval",
    "edge-security.yaml:attestation.server": ATTESTATION + "::test_a_server_of_its_own",
    "edge-config.yaml:sync.conflict_resolution": (
        "tests/integration/sync/test_commands.py::"
        "test_edge_config_conflict_resolution_is_the_policy_of_entities_without_one"
    ),
    "edge-config.yaml:storage.path": (
        "tests/integration/test_cli.py::test_storage_path_puts_the_database_there"
    ),
    "edge-agent-config.yaml:version": (
        "tests/integration/test_cli.py::test_an_agents_version_is_stored_shown_and_replaced_on_add"
    ),
    "edge-agent-config.yaml:type": CONFIG_ERRORS + "::test_malformed_file_gives_exact_message",
    "edge-agent-config.yaml:model.type": (
        CONFIG_ERRORS + "::test_malformed_file_gives_exact_message"
    ),
    "edge-agent-config.yaml:model.format": (
        CONFIG_ERRORS + "::test_malformed_file_gives_exact_message"
    ),
    "edge-agent-config.yaml:output.format": (
        CONFIG_ERRORS + "::test_malformed_file_gives_exact_message"
    ),
    "edge-agent-config.yaml:runtime.threads": (
        "tests/integration/test_onnx_agent.py::test_runtime_threads_sizes_the_workers_thread_pool"
    ),
    # -- edge-config.yaml ------------------------------------------------------------------
    "edge-config.yaml:runtime": SECTION,
    "edge-config.yaml:runtime.mode": f"{CONFIG_ERRORS}::test_more_wrong_values",
    "edge-config.yaml:runtime.max_concurrent_workflows": (
        f"{ENGINE}::test_max_concurrent_workflows_queues_the_rest_in_order"
    ),
    "edge-config.yaml:runtime.max_memory_usage": (
        f"{ENGINE}::test_max_memory_usage_caps_agents_running_at_once"
    ),
    "edge-config.yaml:runtime.max_storage_usage": (
        "tests/unit/store/test_files.py::test_a_write_over_the_quota_fails_and_leaves_nothing"
    ),
    "edge-config.yaml:runtime.offline_mode": f"{ENGINE}::test_offline_mode_decides_network_steps",
    "edge-config.yaml:sync": SECTION,
    "edge-config.yaml:sync.central_url": (
        f"{RUNTIME_SYNC}::test_the_runtime_pushes_on_schedule_and_reports_success"
    ),
    "edge-config.yaml:sync.sync_interval": (
        f"{MANAGER}::test_every_entity_is_due_at_the_first_tick_then_on_its_own_schedule"
    ),
    "edge-config.yaml:sync.sync_on_connect": (
        f"{MANAGER}::test_sync_on_connect_off_keeps_the_schedule"
    ),
    "edge-config.yaml:storage": SECTION,
    "edge-config.yaml:storage.type": f"{CONFIG_ERRORS}::test_more_wrong_values",
    "edge-config.yaml:storage.backup_interval": (
        f"{RUNTIME}::test_backups_follow_backup_interval_and_rotate"
    ),
    "edge-config.yaml:security": SECTION,
    "edge-config.yaml:monitoring": SECTION,
    "edge-config.yaml:monitoring.metrics_collection": (
        f"{MONITOR}::test_with_collection_off_resources_are_checked_but_nothing_is_buffered"
    ),
    "edge-config.yaml:monitoring.metrics_retention": (
        f"{METRICS}::test_samples_older_than_the_retention_are_pruned"
    ),
    # The interval of a health check that names none (every spec check names one).
    "edge-config.yaml:monitoring.health_check_interval": (
        f"{CONFIG_FILES}::test_companion_defaults_use_edge_config_intervals"
    ),
    # The sampling interval while metrics_collection is off.
    "edge-config.yaml:monitoring.resource_check_interval": (
        f"{MONITOR}::test_with_collection_off_resources_are_checked_but_nothing_is_buffered"
    ),
    # -- sync-config.yaml ------------------------------------------------------------------
    "sync-config.yaml:sync": SECTION,
    "sync-config.yaml:sync.entities": SECTION,
    "sync-config.yaml:sync.entities.workflows": SECTION,
    "sync-config.yaml:sync.entities.workflows.priority": (
        f"{MANAGER}::test_high_priority_moves_first_and_gets_more_batches_per_round"
    ),
    "sync-config.yaml:sync.entities.workflows.conflict_resolution": (
        "tests/unit/sync/test_changes.py::test_central_wins_and_edge_wins"
    ),
    "sync-config.yaml:sync.entities.workflows.batch_size": (
        f"{MANAGER}::test_a_lost_push_answer_resends_the_same_batch_once_and_central_applies_it_once"
    ),
    "sync-config.yaml:sync.entities.workflow_executions": SECTION,
    "sync-config.yaml:sync.entities.workflow_executions.priority": (
        f"{MANAGER}::test_high_priority_moves_first_and_gets_more_batches_per_round"
    ),
    "sync-config.yaml:sync.entities.workflow_executions.conflict_resolution": (
        "tests/unit/sync/test_changes.py::"
        "test_a_causally_later_edit_wins_under_last_modified_despite_skew"
    ),
    # Same lookup (SyncManager.batch_size) as the other three; no test counts this one's.
    "sync-config.yaml:sync.entities.workflow_executions.batch_size": (
        f"{MANAGER}::test_progress_is_reported_per_batch"
    ),
    "sync-config.yaml:sync.entities.agents": SECTION,
    "sync-config.yaml:sync.entities.agents.priority": (
        f"{MANAGER}::test_high_priority_moves_first_and_gets_more_batches_per_round"
    ),
    "sync-config.yaml:sync.entities.agents.conflict_resolution": (
        "tests/unit/sync/test_changes.py::test_central_wins_and_edge_wins"
    ),
    "sync-config.yaml:sync.entities.agents.batch_size": (
        f"{MANAGER}::test_progress_is_reported_per_batch"
    ),
    "sync-config.yaml:sync.entities.agent_executions": SECTION,
    "sync-config.yaml:sync.entities.agent_executions.priority": (
        f"{MANAGER}::test_high_priority_moves_first_and_gets_more_batches_per_round"
    ),
    "sync-config.yaml:sync.entities.agent_executions.conflict_resolution": (
        "tests/unit/sync/test_changes.py::"
        "test_a_causally_later_edit_wins_under_last_modified_despite_skew"
    ),
    "sync-config.yaml:sync.entities.agent_executions.batch_size": (
        f"{MANAGER}::test_low_priority_is_not_starved_by_endless_high_priority_work"
    ),
    "sync-config.yaml:sync.schedule": SECTION,
    "sync-config.yaml:sync.schedule.workflows": (
        f"{RUNTIME_SYNC}::test_the_runtime_pushes_on_schedule_and_reports_success"
    ),
    "sync-config.yaml:sync.schedule.workflow_executions": (
        f"{RUNTIME_SYNC}::test_the_runtime_pushes_on_schedule_and_reports_success"
    ),
    "sync-config.yaml:sync.schedule.agents": (
        f"{MANAGER}::test_every_entity_is_due_at_the_first_tick_then_on_its_own_schedule"
    ),
    "sync-config.yaml:sync.schedule.agent_executions": (
        f"{RUNTIME_SYNC}::test_the_runtime_pushes_on_schedule_and_reports_success"
    ),
    "sync-config.yaml:sync.retry": SECTION,
    "sync-config.yaml:sync.retry.max_attempts": (
        "tests/unit/sync/test_retry.py::"
        "test_tracker_retries_until_max_attempts_then_gives_up_and_starts_over"
    ),
    "sync-config.yaml:sync.retry.initial_delay": (
        "tests/unit/sync/test_retry.py::test_base_delay_grows_by_the_factor_and_stops_at_max_delay"
    ),
    "sync-config.yaml:sync.retry.max_delay": (
        "tests/unit/sync/test_retry.py::test_base_delay_grows_by_the_factor_and_stops_at_max_delay"
    ),
    "sync-config.yaml:sync.retry.backoff_factor": (
        "tests/unit/sync/test_retry.py::test_base_delay_grows_by_the_factor_and_stops_at_max_delay"
    ),
    "sync-config.yaml:sync.network": SECTION,
    "sync-config.yaml:sync.network.max_bandwidth": (
        "tests/unit/sync/test_bandwidth.py::"
        "test_measured_rate_on_a_real_link_is_within_10_percent_of_the_cap"
    ),
    "sync-config.yaml:sync.network.compression": (
        "tests/unit/sync/test_protocol.py::test_choose_compression"
    ),
    # encryption: false syncs in plain frames with a central that has no key.
    "sync-config.yaml:sync.network.encryption": (
        "tests/integration/sync/test_commands.py::test_sync_run_status_and_conflicts"
    ),
    # -- edge-monitoring.yaml --------------------------------------------------------------
    "edge-monitoring.yaml:metrics": SECTION,
    "edge-monitoring.yaml:metrics.collection_interval": (
        f"{MONITOR}::test_samples_are_uploaded_every_upload_interval"
    ),
    "edge-monitoring.yaml:metrics.buffer_size": (
        f"{METRICS}::test_a_full_buffer_drops_the_oldest_and_counts_them"
    ),
    "edge-monitoring.yaml:metrics.upload_interval": (
        f"{MONITOR}::test_samples_are_uploaded_every_upload_interval"
    ),
    "edge-monitoring.yaml:metrics.upload_threshold": (
        f"{MONITOR}::test_samples_are_uploaded_once_the_threshold_waits"
    ),
    "edge-monitoring.yaml:health_checks": SECTION,
    # The spec's check names pick the built-in each falls back to.
    "edge-monitoring.yaml:health_checks[].name": (
        f"{HEALTH}::test_the_spec_checks_fall_back_to_builtins_when_the_tool_is_missing"
    ),
    "edge-monitoring.yaml:health_checks[].interval": (
        f"{HEALTH}::test_checks_run_on_their_own_intervals"
    ),
    "edge-monitoring.yaml:health_checks[].command": (
        f"{HEALTH}::test_a_command_passes_on_exit_0_and_fails_otherwise"
    ),
    "edge-monitoring.yaml:health_checks[].timeout": (
        f"{HEALTH}::test_a_check_past_its_timeout_is_killed_and_counted_failed"
    ),
    "edge-monitoring.yaml:alerts": SECTION,
    "edge-monitoring.yaml:alerts[].name": (
        f"{ALERTS}::test_notify_central_is_queued_offline_and_sent_once"
    ),
    "edge-monitoring.yaml:alerts[].condition": (
        f"{MONITOR}::test_alerts_fire_act_and_resolve_on_the_schedule"
    ),
    "edge-monitoring.yaml:alerts[].actions": (
        f"{ALERTS}::test_a_failing_action_does_not_stop_the_others"
    ),
    # -- edge-security.yaml ----------------------------------------------------------------
    "edge-security.yaml:encryption": SECTION,
    "edge-security.yaml:encryption.storage": SECTION,
    "edge-security.yaml:encryption.communication": SECTION,
    "edge-security.yaml:encryption.communication.enabled": (
        f"{TLS_CONFIG}::test_from_config_client_and_server"
    ),
    "edge-security.yaml:encryption.communication.protocol": (
        f"{TLS_CONFIG}::test_from_config_client_and_server"
    ),
    "edge-security.yaml:encryption.communication.certificate_path": (
        f"{TLS}::test_contexts_from_config_talk_to_each_other"
    ),
    "edge-security.yaml:encryption.communication.key_path": (
        f"{TLS_CONFIG}::test_from_config_garbage_and_mismatched_files"
    ),
    "edge-security.yaml:encryption.communication.ca_path": (
        "tests/integration/sync/test_transport.py::"
        "test_https_refuses_a_central_signed_by_another_ca"
    ),
    "edge-security.yaml:access_control": SECTION,
    "edge-security.yaml:access_control.authentication": SECTION,
    "edge-security.yaml:access_control.authentication.method": (
        f"{API_ACCESS}::test_method_certificate_refuses_bearer_tokens_by_name"
    ),
    "edge-security.yaml:access_control.authentication.token_expiry": (
        f"{API_ACCESS}::test_token_issue_prints_only_the_token_and_revoke_revokes_it"
    ),
    "edge-security.yaml:access_control.authorization": SECTION,
    "edge-security.yaml:access_control.authorization.default_policy": (
        f"{API_ACCESS}::test_default_policy_allow_lets_any_authenticated_role_through"
    ),
    "edge-security.yaml:access_control.authorization.roles": SECTION,
    "edge-security.yaml:access_control.authorization.roles[].name": (
        f"{API_ACCESS}::test_a_role_dropped_from_the_config_is_forbidden"
    ),
    "edge-security.yaml:access_control.authorization.roles[].permissions": (
        f"{API_ACCESS}::test_route_role_token_matrix"
    ),
    "edge-security.yaml:attestation": SECTION,
    "edge-security.yaml:tamper_detection": SECTION,
    # -- edge-agent-config.yaml ------------------------------------------------------------
    "edge-agent-config.yaml:name": (
        "tests/integration/test_feedback_triage.py::test_agent_run_prints_the_classification"
    ),
    "edge-agent-config.yaml:resources": SECTION,
    "edge-agent-config.yaml:resources.max_memory": (
        f"{LIMITS}::test_python_agent_allocating_twice_its_memory_fails"
    ),
    "edge-agent-config.yaml:resources.max_cpu": (
        f"{LIMITS}::test_the_cpu_quota_mode_is_reported_and_applied"
    ),
    "edge-agent-config.yaml:resources.max_storage": f"{LIMITS}::test_one_file_past_the_quota_fails",
    "edge-agent-config.yaml:model": SECTION,
    "edge-agent-config.yaml:model.path": (
        f"{ONNX_AGENT}::test_a_relative_model_path_is_found_under_the_storage_models_folder"
    ),
    "edge-agent-config.yaml:model.precision": (
        f"{ONNX_GRAPH}::test_precision_mismatch_names_what_was_found"
    ),
    "edge-agent-config.yaml:runtime": SECTION,
    "edge-agent-config.yaml:runtime.executor": (
        f"{EXECUTORS}::test_in_process_platform_runs_python_but_refuses_commands"
    ),
    "edge-agent-config.yaml:runtime.acceleration": (
        f"{ONNX_AGENT}::test_a_missing_provider_falls_back_to_the_cpu_with_a_warning"
    ),
    "edge-agent-config.yaml:input": SECTION,
    "edge-agent-config.yaml:input.format": f"{ONNX_GRAPH}::test_tensor_input_is_left_alone",
    "edge-agent-config.yaml:input.max_length": (
        f"{ONNX_GRAPH}::test_long_text_is_truncated_by_default"
    ),
    "edge-agent-config.yaml:output": SECTION,
    "edge-agent-config.yaml:output.classes": (
        f"{EXECUTORS}::test_output_labels_must_be_known_classes"
    ),
}

ISSUE_12 = "issue #12 [security]: "

PENDING: dict[str, str] = {
    # -- security (issue #12, being built: filled in at merge) -----------------------------
}

# -- key paths from the YAML -----------------------------------------------------------------


def _walk(node: Any, prefix: str, out: dict[str, bool]) -> None:
    """Record every key path under ``node`` as path -> is it a section."""
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            is_section = isinstance(value, dict) or (
                isinstance(value, list) and any(isinstance(item, dict) for item in value)
            )
            out.setdefault(path, is_section)
            _walk(value, path, out)
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, dict):
                _walk(item, f"{prefix}[]", out)


@cache
def spec_keys() -> dict[str, bool]:
    """``"<file>:<path>"`` -> whether it is a section, for every key of the five spec files."""
    keys: dict[str, bool] = {}
    for name in SPEC_FILES:
        found: dict[str, bool] = {}
        _walk(yaml.safe_load((SPEC / name).read_text()), "", found)
        keys.update({f"{name}:{path}": section for path, section in found.items()})
    return keys


def is_security_key(entry: str) -> bool:
    """edge-security.yaml, or edge-config.yaml's ``security:`` section."""
    name, _, path = entry.partition(":")
    return name == "edge-security.yaml" or (
        name == "edge-config.yaml" and (path == "security" or path.startswith("security."))
    )


@cache
def _functions(test_file: str) -> frozenset[str]:
    """Names of the module-level functions and class methods of ``test_file``."""
    tree = ast.parse((REPO / test_file).read_text(), filename=test_file)
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names.update(
                item.name
                for item in node.body
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
            )
    return frozenset(names)


def _problem_with(test_ref: str) -> str | None:
    """Why ``tests/x.py::test_y`` does not name a test function, or None when it does."""
    file, sep, func = test_ref.partition("::")
    if not sep or not file.startswith("tests/") or not file.endswith(".py") or not func:
        return "is not 'tests/<path>.py::<test function>'"
    if not (REPO / file).is_file():
        return f"{file} does not exist"
    if not func.startswith("test") or func not in _functions(file):
        return f"{file} has no test function {func}"
    return None


def _lines(items: dict[str, str] | list[str]) -> str:
    rows = [f"{k}: {v}" for k, v in items.items()] if isinstance(items, dict) else items
    return "\n  " + "\n  ".join(rows)


# -- the tests -------------------------------------------------------------------------------


def test_the_spec_files_give_the_key_paths_this_table_was_written_for() -> None:
    keys = spec_keys()
    assert keys["edge-security.yaml:access_control.authorization.roles"] is True
    assert keys["edge-security.yaml:access_control.authorization.roles[].permissions"] is False
    assert keys["edge-monitoring.yaml:alerts[].actions"] is False
    assert keys["sync-config.yaml:sync.entities.agents"] is True
    assert keys["edge-security.yaml:tamper_detection.checks"] is False


def test_every_spec_key_has_an_entry() -> None:
    missing = sorted(k for k in spec_keys() if k not in ACTED_ON and k not in PENDING)
    assert not missing, (
        "spec keys with no entry in ACTED_ON (or PENDING); name the test that shows the "
        "product acts on each:" + _lines(missing)
    )


def test_no_entry_is_stale_or_listed_twice() -> None:
    keys = spec_keys()
    stale = sorted(k for k in (*ACTED_ON, *PENDING) if k not in keys)
    assert not stale, "entries for keys no spec file has any more:" + _lines(stale)
    both = sorted(set(ACTED_ON) & set(PENDING))
    assert not both, "keys both acted on and pending: remove the PENDING entry:" + _lines(both)


def test_sections_and_leaves_are_marked_as_what_they_are() -> None:
    keys = spec_keys()
    wrong = [
        f"{key}: {'a section' if keys[key] else 'a leaf'}, but the entry is {ref!r}"
        for key, ref in ACTED_ON.items()
        if key in keys and keys[key] != (ref == SECTION)
    ]
    wrong += [f"{key}: a section needs no PENDING entry" for key in PENDING if keys.get(key)]
    assert not wrong, "sections map to 'section', leaves to a test:" + _lines(wrong)


def test_every_named_test_exists() -> None:
    bad = {
        key: f"{ref} {problem}"
        for key, ref in ACTED_ON.items()
        if ref != SECTION and (problem := _problem_with(ref)) is not None
    }
    assert not bad, "ACTED_ON names tests that do not exist:" + _lines(bad)


def test_no_pending_key_outside_the_security_work() -> None:
    gaps = {key: why for key, why in PENDING.items() if not is_security_key(key)}
    assert not gaps, (
        "spec keys no test shows the product acting on (write the test, then move the "
        "entry to ACTED_ON):" + _lines(gaps)
    )


def test_pending_security_entries_name_issue_12() -> None:
    unnamed = [
        k for k, why in PENDING.items() if is_security_key(k) and not why.startswith(ISSUE_12)
    ]
    assert not unnamed, f"pending security entries must start {ISSUE_12!r}:" + _lines(unnamed)


def test_no_security_key_is_pending() -> None:
    pending = {key: why for key, why in PENDING.items() if is_security_key(key)}
    assert not pending, "security keys not acted on yet:" + _lines(pending)
