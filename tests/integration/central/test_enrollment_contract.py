"""The enrollment and inventory tables and routes on both backends (SQLite and PostgreSQL)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_min.central.ca import CentralCA
from edge_min.central.enrollment import make_token, token_hash
from edge_min.central.enrollment_store import EnrollmentRefused
from edge_min.central.server import CentralServer
from edge_min.central.store import CentralStore, open_central_store
from edge_min.clock import VirtualClock
from edge_min.lifecycle.enroll import _key_and_csr
from edge_min.security.certs import init_certs
from tests.integration.central.conftest import Client, HttpError


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CentralCA:
    pki = init_certs(tmp_path_factory.mktemp("pki"))
    return CentralCA(pki["ca_cert"], pki["ca_key"])


def claim(
    store: CentralStore, ca: CentralCA, token: str, device_id: str | None = None
) -> dict[str, object]:
    csr = _key_and_csr(device_id)[1]

    def issue(bound: str | None) -> tuple[str, str, str, str]:
        name = bound or device_id
        assert name is not None
        pem, serial, not_after = ca.sign_csr(csr, name)
        return name, pem, serial, not_after

    return store.enroll(
        token_hash(token), issue, sync_key=secrets.token_bytes(32), attestation_key="ab" * 32
    )


def test_a_token_is_used_once_expires_and_refusals_write_nothing(
    db_url: str, ca: CentralCA
) -> None:
    clock = VirtualClock()
    store = open_central_store(db_url, clock=clock)
    try:
        token, expires = make_token(store, ttl=60, device_id="gw-1", tags=["lab", "lab", "b"])
        assert expires == clock.time() + 60
        done = claim(store, ca, token)
        assert done["device_id"] == "gw-1" and done["tags"] == ["b", "lab"]
        device = store.get_device("gw-1")
        assert device.status == "provisioned" and device.sync_key is not None
        assert store.attestation_info("gw-1")["key"]["source"] == "enrollment"
        with pytest.raises(EnrollmentRefused) as used:
            claim(store, ca, token)
        assert used.value.code == "enroll_token_used"
        late, _ = make_token(store, ttl=60)
        clock.advance(61)
        with pytest.raises(EnrollmentRefused) as expired:
            claim(store, ca, late, "gw-2")
        assert expired.value.code == "enroll_token_expired"
        with pytest.raises(EnrollmentRefused) as unknown:
            claim(store, ca, "emt_unknown", "gw-2")
        assert unknown.value.code == "enroll_token_unknown"
        assert store.list_inventory(after=None, limit=10) and [
            d["id"] for d in store.list_inventory(after=None, limit=10)
        ] == ["gw-1"]  # the refused claims registered nothing
        # Re-enrolling revokes the old certificate; decommissioning revokes the new one.
        first = str(done["serial"])
        again = claim(store, ca, make_token(store, ttl=60, device_id="gw-1")[0])
        assert store.certificate_revoked(first)
        assert not store.certificate_revoked(str(again["serial"]))
        assert store.revoke_device_certs("gw-1") == [again["serial"]]
        assert store.certificate_revoked(str(again["serial"]))
        assert store.revoke_device_certs("gw-1") == []
    finally:
        store.close()


def test_inventory_filters_and_pages(
    db_url: str, ca: CentralCA, start_central: Callable[..., CentralServer]
) -> None:
    server = start_central()
    store = server.store
    for i in range(7):
        name = f"dev-{i}"
        claim(store, ca, make_token(store, ttl=60, tags=["even" if i % 2 == 0 else "odd"])[0], name)
        Client(server.url, name).json(
            "POST",
            "/api/devices/self/report",
            {
                "version": "1.1" if i < 3 else "1.0",
                "slot": "a",
                "health": "unhealthy" if i == 4 else "healthy",
                "alerts_firing": ["disk"] if i == 4 else [],
                "rollout": None,
            },
        )
    op = Client(server.url, None)
    op.json("DELETE", "/api/devices/dev-6")
    everyone = op.json("GET", "/api/devices")
    assert [d["id"] for d in everyone["devices"]] == [f"dev-{i}" for i in range(7)]
    assert everyone["next"] is None
    first = everyone["devices"][0]
    assert first["status"] == "active" and first["slot"] == "a" and first["version"] == "1.1"
    assert first["attestation"]["trust"] == "unknown" and first["rollout"] is None

    def ids(query: str) -> list[str]:
        return [d["id"] for d in op.json("GET", f"/api/devices?{query}")["devices"]]

    assert ids("status=retired") == ["dev-6"]
    assert ids("tag=odd") == ["dev-1", "dev-3", "dev-5"]
    assert ids("version=1.1") == ["dev-0", "dev-1", "dev-2"]
    assert ids("health=unhealthy") == ["dev-4"]
    assert op.json("GET", "/api/devices?health=unhealthy")["devices"][0]["alerts_firing"] == 1
    assert ids("tag=even&version=1.0") == ["dev-4", "dev-6"]
    assert ids("attestation=untrusted") == []
    # Pages of 3 with the cursor cover everyone once, in order.
    seen: list[str] = []
    after = ""
    while True:
        page = op.json("GET", f"/api/devices?limit=3&after={after}")
        seen += [d["id"] for d in page["devices"]]
        if page["next"] is None:
            break
        after = page["next"]
    assert seen == [f"dev-{i}" for i in range(7)]
    # Paging with a filter on computed trust still fills the pages.
    page = op.json("GET", "/api/devices?attestation=unknown&limit=4")
    assert len(page["devices"]) == 4 and page["next"] == "dev-3"
    for bad, field in (
        ("status=gone", "status"),
        ("health=fine", "health"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("colour=red", "colour"),
    ):
        with pytest.raises(HttpError) as refused:
            op.json("GET", f"/api/devices?{bad}")
        assert refused.value.status == 400 and field in refused.value.body["error"]["message"]
    with pytest.raises(HttpError) as refused:
        Client(server.url, "dev-0").json("POST", "/api/devices/self/report", {"slot": 3})
    assert refused.value.status == 400 and "slot" in refused.value.body["error"]["message"]
    with pytest.raises(HttpError) as refused:
        Client(server.url, "dev-0").json("POST", "/api/devices/self/report", {"mood": "ok"})
    assert "mood" in refused.value.body["error"]["message"]
    # A retired device's report is refused like its sync.
    with pytest.raises(HttpError) as refused:
        Client(server.url, "dev-6").json("POST", "/api/devices/self/report", {})
    assert refused.value.code == "device_decommissioned"


def test_a_tab_reports_its_storage_and_bad_storage_reports_are_refused(
    db_url: str, ca: CentralCA, start_central: Callable[..., CentralServer]
) -> None:
    server = start_central()
    claim(server.store, ca, make_token(server.store, ttl=60)[0], "tab-1")
    claim(server.store, ca, make_token(server.store, ttl=60)[0], "gw-1")
    tab, op = Client(server.url, "tab-1"), Client(server.url, None)
    storage = {"backend": "idbfs", "persisted": False, "quota": 10_000_000, "usage": 123_456}
    tab.json("POST", "/api/devices/self/report", {"version": "1.0", "storage": storage})
    Client(server.url, "gw-1").json("POST", "/api/devices/self/report", {"version": "1.0"})
    devices = {d["id"]: d for d in op.json("GET", "/api/devices")["devices"]}
    assert devices["tab-1"]["storage"] == storage and devices["gw-1"]["storage"] is None
    # A later report without storage keeps the last one that had it.
    tab.json("POST", "/api/devices/self/report", {"version": "1.1"})
    again = {d["id"]: d for d in op.json("GET", "/api/devices")["devices"]}["tab-1"]
    assert again["version"] == "1.1" and again["storage"] == storage
    for bad, words in (
        ({**storage, "persisted": "yes"}, "storage.persisted 'yes' must be bool"),
        ({**storage, "quota": -1}, "storage.quota -1 must be int (at least 0) or null"),
        ({**storage, "usage": True}, "storage.usage True must be int"),
        ({"backend": "idbfs"}, "missing ['persisted', 'quota', 'usage']"),
        ({**storage, "colour": "red"}, "unknown ['colour']"),
        ({**storage, "backend": None}, "storage.backend None must be str"),
    ):
        with pytest.raises(HttpError) as refused:
            tab.json("POST", "/api/devices/self/report", {"storage": bad})
        assert refused.value.status == 400, bad
        assert words in refused.value.body["error"]["message"], refused.value.body
    after = {d["id"]: d for d in op.json("GET", "/api/devices")["devices"]}["tab-1"]
    assert {**after, "last_seen": None} == {**again, "last_seen": None}  # nothing kept of them


def test_enrollment_routes_without_a_ca_say_how_to_turn_it_on(
    start_central: Callable[..., CentralServer], tmp_path: Path
) -> None:
    server = start_central()
    with pytest.raises(HttpError) as refused:
        Client(server.url, None).json("POST", "/api/enroll/tokens", {})
    assert (
        refused.value.status == 501 and "--enroll-ca-key" in refused.value.body["error"]["message"]
    )
