"""The central sync contract over real HTTP, run on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from edge_min.central.model import ProvisioningError
from edge_min.central.server import CentralServer
from edge_min.central.store import open_central_store

from .conftest import Client, HttpError, item

Start = Callable[..., CentralServer]


def test_push_then_pull_round_trips_every_field(start_central: Start) -> None:
    server = start_central()
    dev = Client(server.url, "dev-a")
    rows = [item(f"w{i}", row={"id": f"w{i}", "n": i, "text": "é✓", "x": None}) for i in range(5)]
    results = dev.push("workflows", rows)
    assert [r["status"] for r in results] == ["accepted"] * 5
    versions = [r["version"] for r in results]
    assert versions == sorted(versions) and len(set(versions)) == 5

    pulled = Client(server.url, "dev-b").pull("workflows", 0)
    assert [p["id"] for p in pulled] == [f"w{i}" for i in range(5)]
    for sent, got, version in zip(rows, pulled, versions, strict=True):
        assert got["version"] == version
        assert got["row"] == sent["row"]
        assert got["field_hlcs"] == sent["field_hlcs"]
        assert got["hlc"] == sent["hlc"]
        assert got["origin"] == "dev-a"
        assert got["deleted"] is False
    # Other entities are separate streams.
    assert dev.pull("agents", 0) == []


def test_pull_pages_in_version_order_after_a_cursor(start_central: Start) -> None:
    server = start_central()
    dev = Client(server.url, "dev-a")
    for start in range(0, 30, 10):
        dev.push("agents", [item(f"a{i}") for i in range(start, start + 10)])
    first = dev.pull("agents", 0, limit=7)
    assert len(first) == 7
    rest = dev.pull_all("agents", first[-1]["version"], limit=7)
    everything = first + rest
    assert [r["id"] for r in everything] == [f"a{i}" for i in range(30)]
    versions = [r["version"] for r in everything]
    assert versions == sorted(versions) and len(set(versions)) == 30
    assert dev.pull("agents", versions[-1]) == []


def test_compare_and_set_accepts_the_right_base_and_answers_conflicts(
    start_central: Start,
) -> None:
    server = start_central()
    a, b = Client(server.url, "dev-a"), Client(server.url, "dev-b")
    [first] = a.push("workflows", [item("w1", row={"name": "one"})])
    v1 = first["version"]

    # b edits on top of v1: accepted with a new, greater version.
    [second] = b.push("workflows", [item("w1", v1, row={"name": "two"})])
    assert second["status"] == "accepted" and second["version"] > v1
    v2 = second["version"]

    # a still thinks v1 is current: conflict, answered with central's record.
    [stale] = a.push("workflows", [item("w1", v1, row={"name": "stale"})])
    assert stale["status"] == "conflict"
    assert stale["current"]["version"] == v2
    assert stale["current"]["row"] == {"name": "two"}
    assert stale["current"]["origin"] == "dev-b"

    # a "new" row whose id central already has is a conflict too.
    [dup] = a.push("workflows", [item("w1", None)])
    assert dup["status"] == "conflict" and dup["current"]["version"] == v2

    # an edit based on a version of a row central never had: conflict with no current.
    [ghost] = a.push("workflows", [item("nope", 5)])
    assert ghost == {"id": "nope", "status": "conflict", "current": None}

    # a resolution re-pushed on top of the version it was resolved against is accepted.
    [fixed] = a.push("workflows", [item("w1", v2, row={"name": "merged"})])
    assert fixed["status"] == "accepted"
    [record] = a.pull("workflows", 0)
    assert record["row"] == {"name": "merged"} and record["version"] == fixed["version"]


def test_a_batch_is_all_or_nothing_and_ordered_within(start_central: Start) -> None:
    server = start_central()
    dev = Client(server.url, "dev-a")
    [seed] = dev.push("workflows", [item("w1")])
    # The second item for w1 in the same batch cannot know the version the first will get.
    results = dev.push(
        "workflows",
        [item("w1", seed["version"], row={"v": 1}), item("w1", seed["version"], row={"v": 2})],
    )
    assert results[0]["status"] == "accepted"
    assert results[1]["status"] == "conflict"
    assert results[1]["current"]["version"] == results[0]["version"]
    assert results[1]["current"]["row"] == {"v": 1}


def test_replaying_a_batch_returns_the_same_result_and_writes_nothing(
    start_central: Start,
) -> None:
    server = start_central()
    dev = Client(server.url, "dev-a")
    [seed] = dev.push("workflows", [item("w0")])
    batch = [item("w0", seed["version"], row={"edited": True}), item("w1"), item("w0", 999)]
    first = dev.push("workflows", batch, batch="batch-42")
    before = dev.pull("workflows", 0)

    again = dev.push("workflows", batch, batch="batch-42")
    assert again == first
    # Even with a changed payload the stored answer wins: the batch id is the identity.
    changed = dev.push("workflows", [item("other")], batch="batch-42")
    assert changed == first
    assert dev.pull("workflows", 0) == before

    # No version was spent by the replays: the next write follows directly.
    top = max(r["version"] for r in before)
    [nxt] = dev.push("workflows", [item("w2")])
    assert nxt["version"] == top + 1


def test_a_batch_id_of_another_device_or_entity_is_refused(start_central: Start) -> None:
    server = start_central()
    Client(server.url, "dev-a").push("workflows", [item("w1")], batch="shared-id")
    with pytest.raises(HttpError) as err:
        Client(server.url, "dev-b").push("workflows", [item("w2")], batch="shared-id")
    assert err.value.status == 409 and err.value.code == "batch_id_reused"
    with pytest.raises(HttpError) as err:
        Client(server.url, "dev-a").push("agents", [item("a1")], batch="shared-id")
    assert err.value.code == "batch_id_reused"
    assert Client(server.url, "dev-a").pull("agents", 0) == []


def test_tombstones_are_pulled_as_deleted(start_central: Start) -> None:
    server = start_central()
    dev = Client(server.url, "dev-a")
    [seed] = dev.push("agent_executions", [item("x1")])
    [gone] = dev.push("agent_executions", [item("x1", seed["version"], row={}, deleted=True)])
    assert gone["status"] == "accepted"
    [record] = dev.pull("agent_executions", seed["version"])
    assert record["deleted"] is True and record["version"] == gone["version"]


def test_versions_are_global_across_entities(start_central: Start) -> None:
    server = start_central()
    dev = Client(server.url, "dev-a")
    seen: list[int] = []
    for entity in ("workflows", "workflow_executions", "agents", "agent_executions"):
        seen += [r["version"] for r in dev.push(entity, [item("same-id"), item("other")])]
    assert len(set(seen)) == len(seen) == 8
    assert seen == sorted(seen)


def test_devices_register_on_first_contact_and_record_contact(start_central: Start) -> None:
    server = start_central()
    admin = Client(server.url, None)
    with pytest.raises(HttpError) as err:
        admin.json("GET", "/api/devices/dev-a")
    assert err.value.status == 404 and "provision" in err.value.body["error"]["message"]

    Client(server.url, "dev-a").pull("workflows", 0)
    device = admin.json("GET", "/api/devices/dev-a")
    assert device["id"] == "dev-a"
    assert device["status"] == "active"
    assert device["ip_address"] == "127.0.0.1"
    assert device["last_seen"]
    assert {"id", "status", "ip_address", "ssh_user", "last_seen"} <= set(device)

    Client(server.url, "dev-a").pull("workflows", 0)
    later = admin.json("GET", "/api/devices/dev-a")
    assert later["last_seen"] > device["last_seen"]


def test_device_lifecycle_provision_update_restart_decommission(start_central: Start) -> None:
    server = start_central()
    admin = Client(server.url, None)
    dev = admin.json(
        "POST", "/api/devices/gw-7/provision", {"ip_address": "10.0.0.7", "ssh_user": "edge"}
    )
    assert dev["status"] == "provisioned" and dev["ssh_user"] == "edge"
    assert dev["ip_address"] == "10.0.0.7" and dev["last_seen"] is None

    Client(server.url, "gw-7").pull("agents", 0)
    dev = admin.json("GET", "/api/devices/gw-7")
    assert dev["status"] == "active" and dev["ssh_user"] == "edge"

    for action in ("update", "restart"):
        dev = admin.json("POST", f"/api/devices/gw-7/{action}", {"version": "1.2.3"})
        assert dev["last_action"] == action and dev["last_action_at"]
    with pytest.raises(HttpError) as err:
        admin.json("POST", "/api/devices/unknown/restart")
    assert err.value.status == 404
    with pytest.raises(HttpError) as err:
        admin.json("POST", "/api/devices/gw-7/explode")
    assert err.value.status == 404

    dev = admin.json("DELETE", "/api/devices/gw-7")
    assert dev["status"] == "decommissioned"
    with pytest.raises(HttpError) as err:
        Client(server.url, "gw-7").pull("agents", 0)
    assert err.value.status == 403 and err.value.code == "device_decommissioned"
    # Provisioning again lets it back in.
    admin.json("POST", "/api/devices/gw-7/provision")
    assert Client(server.url, "gw-7").pull("agents", 0) == []


def test_provisioning_mistakes_are_bad_provisioning_and_change_nothing(
    start_central: Start,
) -> None:
    server = start_central()
    admin = Client(server.url, None)
    mistakes = [
        ("-gw", {}, "device id"),  # a device id must start with a letter or digit
        ("gw-8", {"sync_key": "not hex"}, "64 hex digits"),
        ("gw-8", {"sync_key": "abcd"}, "32 bytes"),  # hex, but 2 bytes: the store refuses it
        ("gw-8", {"ssh_user": 7}, "must be a string"),
        ("gw-8", {"firmware": "1.0"}, "unknown provisioning field(s) ['firmware']"),
    ]
    for device_id, body, says in mistakes:
        with pytest.raises(HttpError) as err:
            admin.json("POST", f"/api/devices/{device_id}/provision", body)
        assert (err.value.status, err.value.code) == (400, "bad_provisioning"), body
        assert says in err.value.body["error"]["message"]
    with pytest.raises(HttpError) as err:
        admin.json("GET", "/api/devices/gw-8")
    assert err.value.status == 404  # no refused request registered the device


def test_the_store_refuses_provisioning_mistakes_with_provisioning_error(db_url: str) -> None:
    store = open_central_store(db_url)
    try:
        with pytest.raises(ProvisioningError, match="sync_key must be 32 bytes"):
            store.provision_device("gw-9", sync_key=b"short")
        with pytest.raises(ProvisioningError, match="not JSON-representable"):
            store.provision_device("gw-9", details={"when": object()})
        store.provision_device("gw-9")
        with pytest.raises(ProvisioningError, match="unknown device action 'explode'"):
            store.record_device_action("gw-9", "explode", {})
        assert store.get_device("gw-9").last_action == "provision"
    finally:
        store.close()


def test_require_provisioned_refuses_unknown_devices(start_central: Start) -> None:
    server = start_central(require_provisioned=True)
    with pytest.raises(HttpError) as err:
        Client(server.url, "stranger").push("workflows", [item("w1")])
    assert err.value.status == 403 and err.value.code == "device_not_provisioned"
    assert "provision" in err.value.body["error"]["message"]
    admin = Client(server.url, None)
    with pytest.raises(HttpError):
        admin.json("GET", "/api/devices/stranger")  # not registered by the refused contact
    admin.json("POST", "/api/devices/stranger/provision")
    [ok] = Client(server.url, "stranger").push("workflows", [item("w1")])
    assert ok["status"] == "accepted"


def test_alerts_and_metrics_are_stored_per_device(start_central: Start) -> None:
    server = start_central()
    dev = Client(server.url, "dev-a")
    assert dev.json(
        "POST",
        "/api/alerts",
        {"alerts": [{"name": "high_cpu", "severity": "critical", "message": "cpu 97%"}]},
    ) == {"stored": 1}
    samples = [
        {"name": "cpu_usage", "value": 0.5 + i, "labels": {"core": str(i)}} for i in range(3)
    ]
    assert dev.json("POST", "/api/metrics", {"metrics": samples}) == {"stored": 3}
    Client(server.url, "dev-b").json("POST", "/api/alerts", {"name": "disk", "message": "full"})

    admin = Client(server.url, None)
    [alert] = admin.json("GET", "/api/alerts?node=dev-a")["alerts"]
    assert (alert["node"], alert["name"], alert["severity"]) == ("dev-a", "high_cpu", "critical")
    assert alert["message"] == "cpu 97%"
    assert len(admin.json("GET", "/api/alerts")["alerts"]) == 2
    metrics = admin.json("GET", "/api/metrics?node=dev-a")["metrics"]
    assert sorted(m["value"] for m in metrics) == [0.5, 1.5, 2.5]
    assert {m["labels"]["core"] for m in metrics} == {"0", "1", "2"}

    with pytest.raises(HttpError) as err:
        dev.json("POST", "/api/metrics", {"metrics": [{"name": "cpu", "value": "high"}]})
    assert err.value.status == 400 and "value" in err.value.body["error"]["message"]
    with pytest.raises(HttpError) as err:
        Client(server.url, None).json("POST", "/api/alerts", {"name": "x"})
    assert err.value.status == 400 and err.value.code == "missing_node"
    assert len(admin.json("GET", "/api/metrics")["metrics"]) == 3


def test_health_names_the_store(start_central: Start, db_url: str) -> None:
    server = start_central()
    body = Client(server.url, None).json("GET", "/health")
    assert body["status"] == "ok"
    assert body["store"] == ("sqlite" if db_url.startswith("sqlite") else "postgresql")
