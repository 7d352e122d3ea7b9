"""Rollouts on central: cohorts, ranges, validation, and the phase machine on a real SQLite store.

The router is the central's own (``CentralApp.router()``), fed real ``Request``s; the store is
a real SQLite file with a virtual clock (the rate limit is per minute).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_min.central.app import CentralApp
from edge_min.central.rollout_store import cohorts
from edge_min.central.rollouts import byte_range, rollout_state_of
from edge_min.central.sqlite_store import SqliteCentralStore
from edge_min.clock import VirtualClock
from edge_min.routing import Request, Response, Router

BUNDLE = b"edge-min test bundle 2.0\n" + bytes(range(256)) * 40


class Central:
    """A central app on a SQLite file, asked through its router."""

    def __init__(self, path: Path) -> None:
        self.clock = VirtualClock()
        self.store = SqliteCentralStore(path, clock=self.clock)
        self.app = CentralApp(self.store)
        self.router: Router = self.app.router()

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        node: str | None = None,
        headers: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
    ) -> Response:
        raw = (
            body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
        )
        sent = dict(headers or {})
        if node:
            sent["x-edge-node"] = node
        return self.router.dispatch(Request(method, path, query or {}, sent, raw))

    def ok(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        resp = self.call(method, path, body, **kw)
        assert resp.status < 300, (resp.status, resp.body)
        return resp.body

    def devices(self, n: int, *, tags: dict[int, list[str]] | None = None) -> list[str]:
        ids = [f"dev-{i:02d}" for i in range(n)]
        for i, d in enumerate(ids):
            details = {"tags": (tags or {}).get(i, [])}
            self.ok("POST", f"/api/devices/{d}/provision", {"details": details})
        return ids

    def bundle(self, data: bytes = BUNDLE, version: str = "2.0") -> str:
        resp = self.call("POST", "/api/bundles", data, query={"version": version})
        assert resp.status == 201, resp.body
        return str(resp.body["id"])

    def rollout(self, **fields: Any) -> dict[str, Any]:
        resp = self.call("POST", "/api/rollouts", fields)
        assert resp.status == 201, resp.body
        return dict(resp.body)

    def assigned(self, node: str) -> dict[str, Any] | None:
        resp = self.call("GET", "/api/updates/assigned", node=node)
        assert resp.status in (200, 204), resp.body
        return None if resp.status == 204 else dict(resp.body)

    def report(self, node: str, rollout: str, state: str, reason: str | None = None) -> Any:
        body = {"rollout": rollout, "state": state, "reason": reason, "version": "x"}
        return self.ok("POST", "/api/updates/state", body, node=node)


@pytest.fixture
def central(tmp_path: Path) -> Iterator[Central]:
    c = Central(tmp_path / "central.db")
    yield c
    c.store.close()


def test_cohorts_are_sticky_sized_by_percent_and_move_with_the_salt() -> None:
    ids = [f"d{i}" for i in range(40)]
    first = cohorts("salt-a", ids, [5, 25, 100])
    assert first == cohorts("salt-a", list(reversed(ids)), [5, 25, 100])  # order-free
    sizes = [sum(1 for p in first.values() if p == i) for i in range(3)]
    assert sizes == [2, 8, 30]  # ceil(5% of 40), ceil(25%) - 2, the rest
    other = cohorts("salt-b", ids, [5, 25, 100])
    assert {d for d, p in other.items() if p == 0} != {d for d, p in first.items() if p == 0}
    # A share that rounds to less than one device still gets one; an empty phase stays empty.
    assert sorted(cohorts("s", ["a", "b", "c"], [5, 25, 100]).values()) == [0, 2, 2]


def test_byte_ranges() -> None:
    assert byte_range(None, 100) is None
    assert byte_range("bytes=0-9", 100) == (0, 9)
    assert byte_range("bytes=90-", 100) == (90, 99)
    assert byte_range("bytes=90-500", 100) == (90, 99)
    assert byte_range("bytes=-10", 100) == (90, 99)
    assert byte_range("bytes=100-", 100) == "unsatisfiable"
    assert byte_range("bytes=0-1,5-6", 100) is None  # several ranges: the whole bundle
    assert byte_range("items=0-1", 100) is None


def test_bundle_upload_is_content_addressed_and_downloads_resume(central: Central) -> None:
    bundle_id = central.bundle()
    again = central.call("POST", "/api/bundles", BUNDLE)
    assert again.body["id"] == bundle_id and again.body["version"] == "2.0"
    assert again.body["sha256"] == hashlib.sha256(BUNDLE).hexdigest()
    assert again.body["length"] == len(BUNDLE)
    whole = central.call("GET", f"/api/bundles/{bundle_id}")
    assert whole.status == 200 and whole.encode() == BUNDLE
    assert whole.headers["Accept-Ranges"] == "bytes"
    part = central.call("GET", f"/api/bundles/{bundle_id}", headers={"range": "bytes=1000-"})
    assert part.status == 206 and part.encode() == BUNDLE[1000:]
    assert part.headers["Content-Range"] == f"bytes 1000-{len(BUNDLE) - 1}/{len(BUNDLE)}"
    past = central.call("GET", f"/api/bundles/{bundle_id}", headers={"range": "bytes=99999-"})
    assert past.status == 416 and past.headers["Content-Range"] == f"bytes */{len(BUNDLE)}"
    assert central.call("GET", "/api/bundles/nope").status == 404
    empty = central.call("POST", "/api/bundles", b"")
    assert (empty.status, empty.body["error"]["code"]) == (400, "bad_bundle")


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"bundle": "b", "devices": "all"}, "version is required"),
        ({"version": "", "bundle": "b", "devices": "all"}, "field version"),
        ({"version": "2.0", "bundle": 3, "devices": "all"}, "field bundle"),
        ({"version": "2.0", "bundle": "b", "devices": "some"}, "field devices "),
        ({"version": "2.0", "bundle": "b", "devices": {"tag": ""}}, "devices.tag"),
        ({"version": "2.0", "bundle": "b", "devices": {"ids": []}}, "devices.ids"),
        ({"version": "2.0", "bundle": "b", "devices": "all", "phases": [5, 50]}, "last phase"),
        ({"version": "2.0", "bundle": "b", "devices": "all", "phases": [50, 5, 100]}, "phases"),
        ({"version": "2.0", "bundle": "b", "devices": "all", "phases": [0, 100]}, "phases"),
        ({"version": "2.0", "bundle": "b", "devices": "all", "phases": "5,100"}, "phases"),
        (
            {"version": "2.0", "bundle": "b", "devices": "all", "max_failure_percent": 101},
            "max_failure_percent",
        ),
        (
            {"version": "2.0", "bundle": "b", "devices": "all", "max_failure_percent": True},
            "max_failure_percent",
        ),
        ({"version": "2.0", "bundle": "b", "devices": "all", "min_devices": 0}, "min_devices"),
        ({"version": "2.0", "bundle": "b", "devices": "all", "rate_limit": 1.5}, "rate_limit"),
        ({"version": "2.0", "bundle": "b", "devices": "all", "salt": ""}, "salt"),
        ({"version": "2.0", "bundle": "b", "devices": "all", "phase": [100]}, "'phase'"),
        ({"version": "2.0", "bundle": "nope", "devices": "all"}, "bundle: 'nope'"),
    ],
)
def test_a_malformed_rollout_is_a_400_naming_the_field(
    central: Central, fields: dict[str, Any], named: str
) -> None:
    central.devices(2)
    if fields.get("bundle") == "b":
        fields["bundle"] = central.bundle()
    resp = central.call("POST", "/api/rollouts", fields)
    assert resp.status == 400, resp.body
    assert resp.body["error"]["code"] == "bad_rollout"
    assert named in resp.body["error"]["message"], resp.body


def test_targets_must_exist_and_the_version_match_the_bundle(central: Central) -> None:
    bundle = central.bundle()
    nobody = central.call(
        "POST", "/api/rollouts", {"version": "2.0", "bundle": bundle, "devices": "all"}
    )
    assert nobody.status == 400 and "no device is registered" in nobody.body["error"]["message"]
    central.devices(3, tags={0: ["lab"], 1: ["lab", "eu"]})
    for devices, message in [
        ({"ids": ["dev-00", "ghost"]}, "unknown device(s) ['ghost']"),
        ({"tag": "moon"}, "no registered device has tag 'moon'"),
    ]:
        resp = central.call(
            "POST", "/api/rollouts", {"version": "2.0", "bundle": bundle, "devices": devices}
        )
        assert resp.status == 400 and message in resp.body["error"]["message"], resp.body
    wrong = central.call(
        "POST", "/api/rollouts", {"version": "3.0", "bundle": bundle, "devices": "all"}
    )
    assert wrong.status == 400 and "version" in wrong.body["error"]["message"]
    lab = central.rollout(version="2.0", bundle=bundle, devices={"tag": "lab"})
    assert sorted(d["id"] for d in lab["device_states"]) == ["dev-00", "dev-01"]
    central.ok("DELETE", "/api/devices/dev-02")
    every = central.rollout(version="2.0", bundle=bundle, devices="all")
    assert sorted(d["id"] for d in every["device_states"]) == ["dev-00", "dev-01"]


def test_a_good_rollout_advances_phase_by_phase_to_completion(central: Central) -> None:
    ids = central.devices(10)
    bundle = central.bundle()
    doc = central.rollout(version="2.0", bundle=bundle, devices="all", phases=[10, 50, 100])
    assert [p["devices"] for p in doc["progress"]] == [1, 4, 5] and doc["phase"] == 1
    for phase in (1, 2, 3):
        members = [d["id"] for d in doc["device_states"] if d["phase"] == phase]
        later = [d["id"] for d in doc["device_states"] if d["phase"] > phase]
        assert all(central.assigned(d) is None for d in later)  # not released yet
        for device in members:
            got = central.assigned(device)
            assert got is not None and got["version"] == "2.0" and got["bundle"] == bundle
            assert got["sha256"] == hashlib.sha256(BUNDLE).hexdigest()
            assert got["bundle_url"] == f"/api/bundles/{bundle}"
            for state in ("downloading", "downloaded", "installing", "installed"):
                central.report(device, got["rollout"], state)
        doc = central.ok("GET", f"/api/rollouts/{doc['id']}")
        assert doc["phase"] == phase  # installed is not committed: no advance yet
        for device in members:
            answer = central.report(device, doc["id"], "committed")
        doc = central.ok("GET", f"/api/rollouts/{doc['id']}")
        assert answer["phase"] == min(phase + 1, 3)
    assert doc["status"] == "completed"
    assert {d["state"] for d in doc["device_states"]} == {"committed"}
    assert all(central.assigned(d) is None for d in ids)  # done: nothing more
    state = rollout_state_of(central.app, "dev-03")
    assert state is not None and state["state"] == "committed" and state["rollout"] == doc["id"]
    assert rollout_state_of(central.app, "nobody") is None
    listed = central.ok("GET", "/api/rollouts")["rollouts"]
    assert [r["id"] for r in listed] == [doc["id"]] and "device_states" not in listed[0]


def test_failures_past_the_threshold_halt_the_rollout_within_its_phase(central: Central) -> None:
    central.devices(20)
    bundle = central.bundle()
    doc = central.rollout(
        version="2.0",
        bundle=bundle,
        devices="all",
        phases=[20, 100],
        max_failure_percent=40,
        min_devices=3,
    )
    first = [d["id"] for d in doc["device_states"] if d["phase"] == 1]
    assert len(first) == 4
    for d in first:
        assert central.assigned(d) is not None
    # Two failures of two reports: under min_devices, so no halt yet.
    central.report(first[0], doc["id"], "failed", "health check failed")
    central.report(first[1], doc["id"], "rolled_back", "3 failed starts")
    assert central.ok("GET", f"/api/rollouts/{doc['id']}")["status"] == "active"
    # The third report: 2 of 3 failed, 67% > 40%: halted.
    answer = central.report(first[2], doc["id"], "committed")
    assert answer["status"] == "halted"
    doc = central.ok("GET", f"/api/rollouts/{doc['id']}")
    assert doc["phase"] == 1 and "2 of 3 devices that reported failed" in doc["reason"]
    assert central.assigned(first[3]) is None  # mid-way: told nothing more
    later = [d["id"] for d in doc["device_states"] if d["phase"] == 2]
    assert all(central.assigned(d) is None for d in later)
    assert all(d["state"] == "pending" for d in doc["device_states"] if d["phase"] == 2)
    # A late report is still recorded; a halted rollout stays halted.
    central.report(first[3], doc["id"], "committed")
    resumed = central.call("POST", f"/api/rollouts/{doc['id']}/resume")
    assert resumed.status == 409 and resumed.body["error"]["code"] == "rollout_conflict"
    assert central.ok("POST", f"/api/rollouts/{doc['id']}/cancel")["status"] == "cancelled"
    state = rollout_state_of(central.app, first[0])
    assert state is not None and state["state"] == "failed" and state["reason"]


def test_a_one_device_canary_halts_even_below_min_devices(central: Central) -> None:
    central.devices(20)
    doc = central.rollout(
        version="2.0", bundle=central.bundle(), devices="all", phases=[5, 100], min_devices=5
    )
    [canary] = [d["id"] for d in doc["device_states"] if d["phase"] == 1]
    central.assigned(canary)
    assert central.report(canary, doc["id"], "rolled_back", "health failed")["status"] == "halted"


def test_pause_resume_cancel_and_the_rate_limit(central: Central) -> None:
    ids = central.devices(6)
    doc = central.rollout(version="2.0", bundle=central.bundle(), devices="all", rate_limit=2)
    rid = doc["id"]
    got = [d for d in ids if central.assigned(d) is not None]
    assert len(got) == 2  # two a minute
    central.clock.advance(61)
    assert central.assigned(got[0]) is not None  # an assigned device keeps its assignment
    paused = central.ok("POST", f"/api/rollouts/{rid}/pause")
    assert paused["status"] == "paused"
    assert central.ok("POST", f"/api/rollouts/{rid}/pause")["status"] == "paused"  # idempotent
    waiting = [d for d in ids if d not in got]
    assert all(central.assigned(d) is None for d in waiting)  # paused: nobody new
    assert central.assigned(got[1]) is not None  # but a started device goes on
    central.ok("POST", f"/api/rollouts/{rid}/resume")
    assert len([d for d in waiting if central.assigned(d) is not None]) == 2
    assert central.ok("POST", f"/api/rollouts/{rid}/cancel")["status"] == "cancelled"
    assert all(central.assigned(d) is None for d in ids)
    again = central.call("POST", f"/api/rollouts/{rid}/pause")
    assert again.status == 409 and "cancelled" in again.body["error"]["message"]
    assert central.call("POST", f"/api/rollouts/{rid}/explode").status == 404
    assert central.call("POST", "/api/rollouts/r-none/pause").status == 404


def test_state_reports_are_checked(central: Central) -> None:
    central.devices(2)
    doc = central.rollout(version="2.0", bundle=central.bundle(), devices={"ids": ["dev-00"]})
    for body, code in [
        ({"rollout": doc["id"], "state": "exploded"}, "bad_update_state"),
        ({"state": "failed"}, "bad_update_state"),
        ({"rollout": doc["id"], "state": "failed", "reason": 3}, "bad_update_state"),
        ({"rollout": doc["id"], "state": "failed", "extra": 1}, "bad_update_state"),
    ]:
        resp = central.call("POST", "/api/updates/state", body, node="dev-00")
        assert (resp.status, resp.body["error"]["code"]) == (400, code), resp.body
    other = central.call(
        "POST", "/api/updates/state", {"rollout": doc["id"], "state": "failed"}, node="dev-01"
    )
    assert (other.status, other.body["error"]["code"]) == (409, "not_in_rollout")
    ghost = central.call(
        "POST", "/api/updates/state", {"rollout": "r-ghost", "state": "failed"}, node="dev-00"
    )
    assert ghost.status == 404
    anonymous = central.call("GET", "/api/updates/assigned")
    assert anonymous.status == 400 and anonymous.body["error"]["code"] == "missing_node"


def test_the_newest_rollout_of_a_device_is_its_assignment(central: Central) -> None:
    central.devices(1)
    old = central.rollout(version="2.0", bundle=central.bundle(), devices="all")
    new_bundle = central.bundle(BUNDLE + b"3", "3.0")
    new = central.rollout(version="3.0", bundle=new_bundle, devices="all")
    got = central.assigned("dev-00")
    assert got is not None and got["rollout"] == new["id"] and got["version"] == "3.0"
    central.ok("POST", f"/api/rollouts/{new['id']}/cancel")
    got = central.assigned("dev-00")
    assert got is not None and got["rollout"] == old["id"]
    states = central.store.rollout_states_of(["dev-00", "nobody"])
    assert list(states) == ["dev-00"] and states["dev-00"]["rollout"] == new["id"]
