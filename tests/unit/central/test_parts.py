"""The central's router is assembled from CENTRAL_PARTS: every route once, reachable."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from edge_min.central import parts
from edge_min.central.app import CentralApp
from edge_min.central.part import CentralPart
from edge_min.central.store import CentralStore, open_central_store
from edge_min.errors import ConfigError
from edge_min.routing import Request
from edge_min.subsystem import ApiRoute

# The reference central's routes and permissions: what devices and operators rely on.
CENTRAL_ROUTES = {
    ("POST", "/api/sync/push", "write"),
    ("GET", "/api/sync/pull", "read"),
    ("POST", "/api/attestation/challenge", "write"),
    ("POST", "/api/attestation/quote", "write"),
    ("GET", "/api/attestation/pending", "read"),
    ("GET", "/api/devices/{device_id}/attestation", "read"),
    ("POST", "/api/devices/{device_id}/attestation", "write"),
    ("GET", "/api/devices", "read"),
    ("GET", "/api/devices/{device_id}", "read"),
    ("DELETE", "/api/devices/{device_id}", "configure"),
    ("POST", "/api/devices/{device_id}/provision", "configure"),
    ("POST", "/api/devices/{device_id}/{action}", "write"),
    ("POST", "/api/bundles", "configure"),
    ("GET", "/api/bundles/{bundle_id}", "read"),
    ("POST", "/api/rollouts", "configure"),
    ("GET", "/api/rollouts", "read"),
    ("GET", "/api/rollouts/{rollout_id}", "read"),
    ("POST", "/api/rollouts/{rollout_id}/{action}", "write"),
    ("GET", "/api/updates/assigned", "read"),
    ("POST", "/api/updates/state", "write"),
    ("POST", "/api/alerts", "write"),
    ("GET", "/api/alerts", "read"),
    ("POST", "/api/metrics", "write"),
    ("GET", "/api/metrics", "read"),
    ("GET", "/health", "read"),
    ("GET", "/fleet", "read"),
    ("GET", "/fleet/{asset}", "read"),
    ("POST", "/api/enroll/tokens", "configure"),
    ("GET", "/api/enroll/ca", "read"),
    ("POST", "/api/enroll", "write"),
    ("GET", "/api/devices", "read"),
    ("POST", "/api/devices/self/report", "write"),
    ("POST", "/api/devices/self/retire", "write"),
}


class Enrollment(CentralPart):
    """A new part with a literal route under the registry's ``{action}``."""

    name = "enrollment"

    def routes(self) -> Sequence[ApiRoute]:
        return [ApiRoute("POST", "/api/devices/{device_id}/enroll", "configure", self.enroll)]

    def enroll(self, request: Request) -> dict[str, Any]:
        return {"enrolled": request.params["device_id"]}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CentralStore]:
    store = open_central_store(f"sqlite:///{tmp_path / 'central.db'}")
    yield store
    store.close()


def test_the_route_table_is_the_parts_routes_in_list_order(store: CentralStore) -> None:
    app = CentralApp(store)
    table = [(r.method, r.pattern, r.permission) for r in app.router().routes]
    declared = [
        (route.method, route.pattern, route.permission)
        for kind in parts.CENTRAL_PARTS
        for route in kind(app).routes()
    ]
    assert table == declared
    assert set(table) == CENTRAL_ROUTES and len(table) == len(CENTRAL_ROUTES)


def test_two_parts_declaring_one_route_is_an_error(store: CentralStore) -> None:
    class Again(CentralPart):
        name = "again"

        def routes(self) -> Sequence[ApiRoute]:
            return [ApiRoute("GET", "/api/alerts", "read", lambda request: {})]

    with pytest.raises(ConfigError, match="'telemetry' and 'again' both declare GET /api/alerts"):
        CentralApp(store, parts=(*parts.CENTRAL_PARTS, Again)).router()


def test_a_route_an_earlier_part_always_answers_is_an_error(store: CentralStore) -> None:
    app = CentralApp(store, parts=(*parts.CENTRAL_PARTS, Enrollment))
    with pytest.raises(ConfigError, match="list 'enrollment' before 'devices'"):
        app.router()


def test_a_part_added_to_the_list_answers_beside_the_others(
    store: CentralStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parts, "CENTRAL_PARTS", (Enrollment, *parts.CENTRAL_PARTS))
    router = CentralApp(store).router()
    enrolled = router.dispatch(Request("POST", "/api/devices/d1/enroll"))
    assert (enrolled.status, enrolled.body) == (200, {"enrolled": "d1"})
    provisioned = router.dispatch(Request("POST", "/api/devices/d1/provision"))
    assert (provisioned.status, provisioned.body["status"]) == (200, "provisioned")
    refused = router.dispatch(Request("POST", "/api/devices/d1/explode"))
    assert (refused.status, refused.body["error"]["code"]) == (404, "not_found")
