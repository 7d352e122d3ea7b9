"""Enrollment, inventory and decommissioning end to end: a real central over HTTPS with
mutual TLS on 127.0.0.1, real device runtimes, the real CLI.

The device starts with nothing but its config files (central's URL, where its TLS files go)
and a claim token: ``edge-min enroll`` makes its key, gets its certificate, the CA and its
sync key, and the runtime then syncs over mutual TLS with no other step (central has no
shared key: the device's own key came with the enrollment).
"""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import sqlite3
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edge_min import __version__
from edge_min.central.ca import CentralCA, sign_with
from edge_min.central.server import CentralServer
from edge_min.cli import main
from edge_min.clock import VirtualClock
from edge_min.config import load_config
from edge_min.errors import MasterKeyMismatch
from edge_min.lifecycle.enroll import EnrollmentError, enroll, enrollment_record
from edge_min.lifecycle.subsystem import Lifecycle
from edge_min.routing import Request
from edge_min.runtime import Paths, Runtime
from edge_min.security.atrest import check_backup_keys
from edge_min.security.certs import certificate_cn, init_certs
from edge_min.security.quote import load_attestation_key
from edge_min.security.tls import client_context
from tests.integration import enroll_central
from tests.integration.enroll_central import call as central_call

SECRET_STEP = "s-very-private-step-name"
WORKFLOW = f"name: w\nversion: '1'\nsteps: [{{id: {SECRET_STEP}, agent: noop}}]\n"


@dataclass
class Central:
    server: CentralServer
    clock: VirtualClock
    pki: dict[str, Path]
    pin: str

    @property
    def url(self) -> str:
        return self.server.url

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        cert: tuple[Path, Path] | None = None,
        anonymous: bool = False,
    ) -> tuple[int, Any]:
        """A JSON request over TLS: as the operator (its certificate), another, or none."""
        if anonymous:
            ctx = client_context(None, None, self.pki["ca_cert"])
        else:
            c, k = cert or (self.pki["device_cert"], self.pki["device_key"])
            ctx = client_context(c, k, self.pki["ca_cert"])
        status, doc = central_call(self.server, ctx, method, path, body)
        return int(status), doc

    def token(self, **fields: Any) -> str:
        status, doc = self.call("POST", "/api/enroll/tokens", fields)
        assert status == 201, doc
        assert doc["ca_sha256"] == self.pin
        return str(doc["token"])


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    # The "device" certificate of the development bundle is the operator's client certificate.
    return init_certs(tmp_path_factory.mktemp("pki"), device_id="operator")


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A factory's CA and one device's factory certificate (CN gw-f) with its key."""
    return init_certs(tmp_path_factory.mktemp("factory"), device_id="gw-f")


def start_central(tmp_path: Path, pki: dict[str, Path], factory_ca: Path | None = None) -> Central:
    clock = VirtualClock(time.time())
    server = enroll_central.start_central(tmp_path, pki, factory_ca, clock=clock)
    return Central(server, clock, pki, CentralCA(pki["ca_cert"], pki["ca_key"]).fingerprint)


@pytest.fixture
def central(tmp_path: Path, pki: dict[str, Path]) -> Iterator[Central]:
    c = start_central(tmp_path, pki)
    yield c
    c.server.stop()


device_conf = enroll_central.device_conf


def cli(config: Path, data: Path, *args: str) -> int:
    return main(["--config", str(config), "--data-dir", str(data), *args])


def open_runtime(config: Path, data: Path) -> tuple[Runtime, VirtualClock]:
    cfg = load_config(config)
    clock = VirtualClock()
    return Runtime(cfg, Paths.resolve(cfg, data), clock=clock).open(), clock


def tick(runtime: Runtime, clock: VirtualClock, seconds: float = 6.0) -> None:
    t = 0.0
    while t <= seconds:
        runtime.tick()
        clock.advance(1.0)
        t += 1.0


def test_a_device_enrolls_with_a_token_and_syncs_over_mutual_tls(
    tmp_path: Path, central: Central, capsys: pytest.CaptureFixture[str]
) -> None:
    config = device_conf(tmp_path, central.url, attestation=True)
    data = tmp_path / "edge"
    original = config.read_text()
    fragment = {"runtime": {"max_concurrent_workflows": 3}}
    token = central.token(device_id="gw-7", tags=["lab", "north"], config=fragment)
    code = cli(
        config, data, "enroll", "--central", central.url, "--token", token,
        "--ca-sha256", central.pin, "--json",
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    record = json.loads(capsys.readouterr().out)
    assert record["device_id"] == "gw-7" and record["tags"] == ["lab", "north"]
    assert record["config"] == fragment
    # Central's fragment is merged into the device's edge-config.yaml (its own keys stay),
    # the previous file is kept, and the change is re-measured: no tamper finding after.
    assert record["config_written"] == str(config)
    merged = load_config(config)
    assert merged.runtime.max_concurrent_workflows == 3
    assert merged.sync.central_url == central.url
    assert (config.parent / "edge-config.yaml.pre-enroll").read_text() == original
    tls = tmp_path / "tls"
    assert certificate_cn(tls / "device.crt") == "gw-7"
    assert stat.S_IMODE((tls / "device.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((data / "keys" / "sync.key").stat().st_mode) == 0o600
    assert enrollment_record(data) == {k: v for k, v in record.items() if k != "config_written"}
    # Central registered the attestation key that came with the enrollment: no TOFU.
    att = central.call("GET", "/api/devices/gw-7/attestation")[1]
    assert att["key"]["source"] == "enrollment"
    assert att["key"]["fingerprint"] == load_attestation_key(data).fingerprint

    runtime, clock = open_runtime(config, data)
    try:
        runtime.engine.add_workflow(WORKFLOW)
        assert runtime.sync is not None
        runtime.sync.restart()
        tick(runtime, clock)
        assert runtime.sync.status()["status"] == "success", runtime.sync.status()
        assert runtime.status()["lifecycle"]["enrolled"] is True
        assert runtime.status()["tamper"] == {"state": "ok", "locked_down": False}
        assert runtime.get(Lifecycle).last_report["error"] is None
    finally:
        runtime.close()
    # The workflow arrived, pushed by gw-7 with its own (enrolled) payload key.
    rows = central.server.store.pull("workflows", 0, 10)
    assert [r["origin"] for r in rows] == ["gw-7"]
    att = central.call("GET", "/api/devices/gw-7/attestation")[1]
    assert att["trust"] == "trusted" and att["key"]["source"] == "enrollment", att
    # The inventory shows what the device reported.
    status, page = central.call("GET", "/api/devices?tag=lab")
    assert status == 200, page
    [entry] = page["devices"]
    assert entry["id"] == "gw-7" and entry["status"] == "active"
    assert entry["version"] == __version__ and entry["tags"] == ["lab", "north"]
    assert entry["attestation"]["trust"] == "trusted"
    assert entry["health"] in ("healthy", "degraded", "unhealthy", "unknown")
    assert entry["rollout"] is None and entry["last_seen"]


def test_a_token_works_once_and_expires(tmp_path: Path, central: Central) -> None:
    token = central.token(ttl="10m")
    first = tmp_path / "a"
    cfg = load_config(device_conf(first, central.url))
    record = enroll(
        cfg, Paths.resolve(cfg, first / "edge"), central_url=central.url, token=token,
        device_id="gw-a", ca_sha256=central.pin,
    )  # fmt: skip
    assert record["device_id"] == "gw-a"

    def attempt(name: str, tok: str, device_id: str | None = None) -> EnrollmentError:
        root = tmp_path / name
        cfg = load_config(device_conf(root, central.url))
        with pytest.raises(EnrollmentError) as refused:
            enroll(
                cfg, Paths.resolve(cfg, root / "edge"), central_url=central.url, token=tok,
                device_id=device_id or name, ca_sha256=central.pin,
            )  # fmt: skip
        # Nothing was written where the TLS files go.
        assert not (root / "tls" / "device.key").exists()
        return refused.value

    used = attempt("b", token)
    assert used.details["remote_code"] == "enroll_token_used", used
    assert "gw-a" in used.message
    late = central.token(ttl="10m")
    central.clock.advance(601)
    expired = attempt("c", late)
    assert expired.details["remote_code"] == "enroll_token_expired"
    unknown = attempt("d", "emt_" + "x" * 32)
    assert unknown.details["remote_code"] == "enroll_token_unknown"
    assert unknown.details["http_status"] == 403
    bound = central.token(device_id="gw-e")
    other = attempt("e", bound, device_id="gw-other")
    assert other.details["remote_code"] == "enroll_device_mismatch"
    # A pin of another CA: refused before the token is ever sent.
    wrong = tmp_path / "f"
    cfg = load_config(device_conf(wrong, central.url))
    with pytest.raises(EnrollmentError, match="not the pinned"):
        enroll(
            cfg, Paths.resolve(cfg, wrong / "edge"), central_url=central.url, token=bound,
            ca_sha256="0" * 64,
        )  # fmt: skip
    assert central.token()  # the bound token is still unused: enrolling with it works
    root = tmp_path / "g"
    cfg = load_config(device_conf(root, central.url))
    assert enroll(
        cfg, Paths.resolve(cfg, root / "edge"), central_url=central.url, token=bound,
        ca_sha256=central.pin,
    )["device_id"] == "gw-e"  # fmt: skip


def test_a_device_that_ran_before_takes_central_config_without_a_tamper_finding(
    tmp_path: Path, central: Central, capsys: pytest.CaptureFixture[str]
) -> None:
    config = device_conf(tmp_path, central.url)
    data = tmp_path / "edge"
    # Before enrollment existed: development certificates, and a first start (the tamper
    # baseline is taken then, with the config as it was).
    assert cli(config, data, "init", "--security", "--device-id", "gw-8") == 0
    runtime, _ = open_runtime(config, data)
    runtime.close()
    token = central.token(device_id="gw-8", config={"sync": {"sync_interval": 7}})
    code = cli(config, data, "enroll", "--central", central.url, "--token", token,
               "--ca-sha256", central.pin, "--force")  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert "central's config for this device merged into" in capsys.readouterr().out
    assert load_config(config).sync.sync_interval == 7
    runtime, clock = open_runtime(config, data)
    try:
        tick(runtime, clock, 2.0)
        assert runtime.status()["tamper"] == {"state": "ok", "locked_down": False}
    finally:
        runtime.close()


def test_bad_input_is_answered_naming_the_field(central: Central) -> None:
    token = central.token()

    def post(body: Any) -> tuple[int, str, str]:
        status, doc = central.call("POST", "/api/enroll", body, anonymous=True)
        return status, doc["error"]["code"], doc["error"]["message"]

    status, code, message = post({"token": token, "csr": "not a csr"})
    assert (status, code) == (400, "bad_enrollment") and "csr" in message
    csr = "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
    status, code, message = post({"token": token, "csr": csr})
    assert (status, code) == (400, "bad_enrollment") and "csr" in message
    status, code, message = post({"token": token, "csr": csr, "colour": "red"})
    assert (status, code) == (400, "bad_enrollment") and "colour" in message
    status, code, message = post({"token": 7, "csr": csr})
    assert (status, code) == (400, "bad_enrollment") and "token" in message
    from edge_min.lifecycle.enroll import _key_and_csr

    good_csr = _key_and_csr("gw-z")[1]
    status, code, message = post({"token": token, "csr": good_csr, "attestation_key": "zz"})
    assert (status, code) == (400, "bad_enrollment") and "attestation_key" in message
    status, code, _ = post({"token": "emt_nope", "csr": good_csr})
    assert (status, code) == (403, "enroll_token_unknown")
    status, code, message = post({"token": token, "csr": _key_and_csr(None)[1]})
    assert (status, code) == (400, "bad_enrollment") and "device_id" in message
    # The refused attempts did not use the token up.
    status, doc = central.call(
        "POST", "/api/enroll", {"token": token, "csr": good_csr}, anonymous=True
    )
    assert status == 200 and doc["device_id"] == "gw-z", doc
    # Token requests: a bad ttl and an unknown field name themselves.
    status, doc = central.call("POST", "/api/enroll/tokens", {"ttl": "soon"})
    assert status == 400 and "ttl" in doc["error"]["message"]
    status, doc = central.call("POST", "/api/enroll/tokens", {"device": "x"})
    assert status == 400 and "device" in doc["error"]["message"]
    # A config fragment that would not load on a device is refused when the token is made.
    bad = {"config": {"runtime": {"max_concurrent_workflows": "lots"}}}
    status, doc = central.call("POST", "/api/enroll/tokens", bad)
    assert status == 400 and "max_concurrent_workflows" in doc["error"]["message"], doc
    status, doc = central.call("POST", "/api/enroll/tokens", {"device_id": "bad id!"})
    assert status == 400 and "device_id" in doc["error"]["message"]
    # Without a client certificate only the enrollment routes answer.
    status, doc = central.call("GET", "/api/devices", anonymous=True)
    assert (status, doc["error"]["code"]) == (403, "client_certificate_required")
    status, doc = central.call("POST", "/api/enroll/tokens", {}, anonymous=True)
    assert (status, doc["error"]["code"]) == (403, "client_certificate_required")
    assert central.call("GET", "/api/enroll/ca", anonymous=True)[1]["sha256"] == central.pin


def _handshake_refused(central: Central, cert: Path, key: Path) -> bool:
    """Whether central closes a connection presenting ``cert`` right after the handshake."""
    ctx = client_context(cert, key, central.pki["ca_cert"])
    host, port = central.server.address
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=10)
    try:
        conn.request("GET", "/api/devices", headers={"Content-Type": "application/json"})
        conn.getresponse().read()
    except (ssl.SSLError, ConnectionError, http.client.RemoteDisconnected):
        return True
    finally:
        conn.close()
    return False


def test_decommission_erases_the_device_and_central_refuses_its_certificate(
    tmp_path: Path, central: Central, capsys: pytest.CaptureFixture[str]
) -> None:
    config = device_conf(tmp_path, central.url)
    data = tmp_path / "edge"
    token = central.token(device_id="gw-9")
    assert cli(config, data, "enroll", "--central", central.url, "--token", token,
               "--ca-sha256", central.pin) == 0  # fmt: skip
    runtime, clock = open_runtime(config, data)
    try:
        runtime.engine.add_workflow(WORKFLOW)
        assert runtime.sync is not None
        runtime.sync.restart()
        tick(runtime, clock)
        assert runtime.sync.status()["status"] == "success", runtime.sync.status()
    finally:
        runtime.close()
    serial = enrollment_record(data)["serial"]  # type: ignore[index]
    # What a thief would keep: the database and the device's certificate and key.
    kept = tmp_path / "kept"
    kept.mkdir()
    db = Paths.resolve(load_config(config), data).db
    shutil.copy(db, kept / db.name)
    shutil.copy(tmp_path / "tls" / "device.crt", kept / "device.crt")
    shutil.copy(tmp_path / "tls" / "device.key", kept / "device.key")
    raw = sqlite3.connect(kept / db.name).execute("SELECT definition FROM workflows").fetchone()
    assert raw[0].startswith("enc1:")  # sealed under a data key wrapped by the master key
    assert not _handshake_refused(central, kept / "device.crt", kept / "device.key")

    assert cli(config, data, "decommission") == 2  # without --yes nothing happens
    assert (data / "keys" / "storage.key").exists()
    capsys.readouterr()
    assert cli(config, data, "decommission", "--yes", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["master_key_erased"] is True and report["central"] == "retired", report
    assert not (data / "keys" / "storage.key").exists()
    assert not db.exists() and not (tmp_path / "tls" / "device.key").exists()
    # The kept database is unreadable: its keys were wrapped under the erased master key.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with pytest.raises(MasterKeyMismatch, match="does not exist"):
        check_backup_keys(kept / db.name, Paths(root=elsewhere, db=elsewhere / db.name))
    assert SECRET_STEP.encode() not in (kept / db.name).read_bytes()

    # Central: retired in the inventory, its certificate refused at the handshake...
    page = central.call("GET", "/api/devices?status=retired")[1]
    assert [d["id"] for d in page["devices"]] == ["gw-9"]
    assert _handshake_refused(central, kept / "device.crt", kept / "device.key")
    # ...and at sync, for a connection that got past the handshake (e.g. a TLS proxy).
    router = central.server.app.router()
    answer = router.dispatch(
        Request(
            method="GET",
            path="/api/sync/pull",
            query={"entity": "workflows"},
            principal="cert:gw-9",
            cert_serial=serial,
        )
    )
    assert answer.status == 403
    from edge_min.sync.protocol import decode_frame

    _header, [err] = decode_frame(answer.encode())
    assert err["code"] == "certificate_revoked", err


def test_an_operator_decommission_revokes_the_certificate(tmp_path: Path, central: Central) -> None:
    cfg = load_config(device_conf(tmp_path, central.url))
    enroll(
        cfg, Paths.resolve(cfg, tmp_path / "edge"), central_url=central.url,
        token=central.token(device_id="gw-op"), ca_sha256=central.pin,
    )  # fmt: skip
    cert, key = tmp_path / "tls" / "device.crt", tmp_path / "tls" / "device.key"
    status, doc = central.call("GET", "/api/devices?limit=5", cert=(cert, key))
    assert status == 200 and any(d["id"] == "gw-op" for d in doc["devices"])
    status, doc = central.call("DELETE", "/api/devices/gw-op")
    assert status == 200 and doc["status"] == "decommissioned"
    record = enrollment_record(tmp_path / "edge")
    assert record is not None and doc["revoked_serials"] == [record["serial"]]
    assert _handshake_refused(central, cert, key)
    # The operator's own (not revoked) certificate still gets in: the check is per serial.
    assert not _handshake_refused(central, central.pki["device_cert"], central.pki["device_key"])


def test_a_factory_certificate_enrolls_a_device_once_without_a_token(
    tmp_path: Path, pki: dict[str, Path], factory: dict[str, Path]
) -> None:
    central = start_central(tmp_path, pki, factory_ca=factory["ca_cert"])
    try:
        cfg = load_config(device_conf(tmp_path / "a", central.url))
        record = enroll(
            cfg, Paths.resolve(cfg, tmp_path / "a" / "edge"), central_url=central.url,
            factory_cert=factory["device_cert"], factory_key=factory["device_key"],
            ca_sha256=central.pin,
        )  # fmt: skip
        assert record["device_id"] == "gw-f"  # the factory certificate's CN
        assert certificate_cn(tmp_path / "a" / "tls" / "device.crt") == "gw-f"
        att = central.call("GET", "/api/devices/gw-f/attestation")[1]
        assert att["key"]["source"] == "enrollment"

        def refused(body: dict[str, Any]) -> tuple[int, str, str]:
            status, doc = central.call("POST", "/api/enroll", body, anonymous=True)
            return status, doc["error"]["code"], doc["error"]["message"]

        from base64 import b64encode

        from cryptography.hazmat.primitives import serialization

        from edge_min.lifecycle.enroll import _key_and_csr

        csr = _key_and_csr(None)[1]
        fkey = serialization.load_pem_private_key(factory["device_key"].read_bytes(), None)
        proof = {
            "csr": csr,
            "factory_certificate": factory["device_cert"].read_text(),
            "factory_signature": b64encode(sign_with(fkey, csr.encode())).decode(),
        }
        # Once: a replay of a good request cannot take the enrolled device's place.
        assert refused(proof)[:2] == (403, "enroll_already_enrolled")
        # A signature by another key, or of another CSR, proves nothing.
        other = serialization.load_pem_private_key(pki["device_key"].read_bytes(), None)
        forged = {**proof, "factory_signature": b64encode(sign_with(other, csr.encode())).decode()}
        status, code, message = refused(forged)
        assert (status, code) == (403, "factory_certificate_refused") and "signature" in message
        # A certificate of another CA (central's own operator certificate) is no factory one.
        status, code, message = refused(
            {**proof, "factory_certificate": pki["device_cert"].read_text()}
        )
        assert (status, code) == (403, "factory_certificate_refused") and "factory CA" in message
        status, code, message = refused({**proof, "token": "emt_x"})
        assert (status, code) == (400, "bad_enrollment") and "not both" in message
        # Decommissioned: its factory certificate no longer enrolls it.
        assert central.call("DELETE", "/api/devices/gw-f")[0] == 200
        assert refused(proof)[:2] == (403, "enroll_device_retired")
    finally:
        central.server.stop()


def test_the_command_line_serves_enrollment_and_makes_tokens(
    tmp_path: Path, pki: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """`central serve --enroll-ca-key` in its own process; `central enroll-token` on its db."""
    db = f"sqlite:///{tmp_path / 'central.db'}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_min.cli", "central", "serve", "--db", db, "--port", "0",
         "--tls-cert", str(pki["central_cert"]), "--tls-key", str(pki["central_key"]),
         "--tls-ca", str(pki["ca_cert"]), "--enroll-ca-key", str(pki["ca_key"])],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "serving on https://" in line, line + proc.stdout.read()
        url = line.rsplit("serving on ", 1)[1].strip()
        assert main(["central", "enroll-token", "--db", db, "--device-id", "gw-cli",
                     "--tag", "cli", "--ca", str(pki["ca_cert"]), "--json"]) == 0  # fmt: skip
        doc = json.loads(capsys.readouterr().out)
        assert doc["ca_sha256"] == CentralCA(pki["ca_cert"], pki["ca_key"]).fingerprint
        assert main(["central", "enroll-token", "--db", db, "--ttl", "never"]) == 2
        assert "--ttl" in capsys.readouterr().err
        config = device_conf(tmp_path, url)
        assert cli(config, tmp_path / "edge", "enroll", "--central", url,
                   "--token", doc["token"], "--ca-sha256", doc["ca_sha256"]) == 0  # fmt: skip
        assert "enrolled as gw-cli" in capsys.readouterr().out
        assert certificate_cn(tmp_path / "tls" / "device.crt") == "gw-cli"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
