"""The device side of enrollment where ``cryptography`` cannot be imported, as in the binary.

The gateway binary ships pycryptodome only. Here each device command runs in its own
``python`` whose ``sys.modules['cryptography']`` is None (any ``import cryptography...``
fails) before edge_min is imported: ``edge-min enroll`` (with a claim token, and with factory
certificates of each key type central accepts), ``workflow add`` and ``sync --now`` over
mutual TLS with the enrolled certificate and key. Central is the real one, in this process,
with its ``cryptography`` CA: it signs the CSR the device made without it, and the device
accepts what central signed.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from edge_min.central.server import CentralServer
from edge_min.security.certs import certificate_cn, init_certs
from edge_min.security.tls import client_context
from tests.integration.enroll_central import (
    WORKFLOW,
    call,
    device_conf,
    factory_identity,
    make_token,
    start_central,
)

# Run edge-min's CLI with cryptography unimportable; at exit, show that nothing loaded it.
NO_CRYPTOGRAPHY = """
import sys
sys.modules["cryptography"] = None
from edge_min.cli import main
code = main(sys.argv[1:])
loaded = sorted(m for m, v in sys.modules.items() if m.startswith("cryptography") and v)
print("cryptography modules loaded:", loaded, file=sys.stderr)
sys.exit(code if not loaded else 99)
"""


def device(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``edge-min ARGV`` in a fresh interpreter that cannot import cryptography."""
    return subprocess.run(
        [sys.executable, "-c", NO_CRYPTOGRAPHY, *argv],
        capture_output=True, text=True, timeout=120, cwd=cwd,
    )  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return init_certs(tmp_path_factory.mktemp("pki"), device_id="operator")


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return init_certs(tmp_path_factory.mktemp("factory"), device_id="gw-f-p256")


@pytest.fixture
def central(
    tmp_path: Path, pki: dict[str, Path], factory: dict[str, Path]
) -> Iterator[CentralServer]:
    server = start_central(tmp_path, pki, factory["ca_cert"])
    yield server
    server.stop()


def test_the_blocker_blocks() -> None:
    """The harness itself: cryptography is importable here, and not in ``device``'s python."""
    import cryptography  # noqa: F401

    probe = subprocess.run(
        [sys.executable, "-c", 'import sys; sys.modules["cryptography"] = None\n'
         "from cryptography import x509"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert probe.returncode == 1 and "ModuleNotFoundError" in probe.stderr, probe.stderr


def test_a_device_without_cryptography_enrolls_and_syncs_over_mutual_tls(
    tmp_path: Path, central: CentralServer, pki: dict[str, Path]
) -> None:
    url = central.url
    token, pin = make_token(central, pki, device_id="gw-nc", tags=["lab"])
    config, data = device_conf(tmp_path, url), tmp_path / "edge"
    base = ("--config", str(config), "--data-dir", str(data))
    enrolled = device(
        *base, "enroll", "--central", url, "--token", token, "--ca-sha256", pin, "--json",
        cwd=tmp_path,
    )  # fmt: skip
    assert enrolled.returncode == 0, enrolled.stderr
    record = json.loads(enrolled.stdout)
    assert record["device_id"] == "gw-nc" and record["tags"] == ["lab"], record
    assert record["ca_sha256"] == pin
    tls = tmp_path / "tls"
    assert (tls / "device.key").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert stat.S_IMODE((tls / "device.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((data / "keys" / "sync.key").stat().st_mode) == 0o600
    # Central's CA (cryptography) issued a certificate for the key the device made...
    cert = x509.load_pem_x509_certificate((tls / "device.crt").read_bytes())
    key = serialization.load_pem_private_key((tls / "device.key").read_bytes(), None)
    assert cert.public_key() == key.public_key()
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "gw-nc"
    assert certificate_cn(tls / "device.crt") == "gw-nc"
    assert (tls / "ca.crt").read_bytes() == pki["ca_cert"].read_bytes()
    # ...and that pair opens central's mutual-TLS API (OpenSSL loads the key as made).
    own = client_context(tls / "device.crt", tls / "device.key", tls / "ca.crt")
    status, doc = call(central, own, "GET", "/api/devices?limit=5")
    assert status == 200 and [d["id"] for d in doc["devices"]] == ["gw-nc"], doc

    (tmp_path / "w.yaml").write_text(WORKFLOW)
    added = device(*base, "workflow", "add", str(tmp_path / "w.yaml"), cwd=tmp_path)
    assert added.returncode == 0, added.stderr
    synced = device(*base, "sync", "--now", "--json", cwd=tmp_path)
    assert synced.returncode == 0, synced.stdout + synced.stderr
    report = json.loads(synced.stdout)
    assert report["ok"] and report["entities"]["workflows"]["accepted"] == 1, report
    rows = central.store.pull("workflows", 0, 10)
    assert [r["origin"] for r in rows] == ["gw-nc"], rows
    assert central.store.get_device("gw-nc").status == "active"


@pytest.mark.parametrize("kind", ["p256", "p384", "rsa", "ed25519"])
def test_a_factory_certificate_enrolls_a_device_without_cryptography(
    tmp_path: Path,
    central: CentralServer,
    pki: dict[str, Path],
    factory: dict[str, Path],
    kind: str,
) -> None:
    cert, key = factory_identity(factory, kind, tmp_path / "factory")
    config = device_conf(tmp_path, central.url)
    enrolled = device(
        "--config", str(config), "--data-dir", str(tmp_path / "edge"), "enroll",
        "--central", central.url, "--factory-cert", str(cert), "--factory-key", str(key),
        "--ca", str(pki["ca_cert"]), "--json",
        cwd=tmp_path,
    )  # fmt: skip
    assert enrolled.returncode == 0, enrolled.stderr
    assert json.loads(enrolled.stdout)["device_id"] == f"gw-f-{kind}"
    assert certificate_cn(tmp_path / "tls" / "device.crt") == f"gw-f-{kind}"


def test_an_unusable_factory_key_is_refused_before_anything_is_sent(
    tmp_path: Path, central: CentralServer, pki: dict[str, Path], factory: dict[str, Path]
) -> None:
    config = device_conf(tmp_path, central.url)
    (tmp_path / "bad.key").write_text(
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    )
    refused = device(
        "--config", str(config), "--data-dir", str(tmp_path / "edge"), "enroll",
        "--central", central.url, "--factory-cert", str(factory["device_cert"]),
        "--factory-key", str(tmp_path / "bad.key"), "--ca", str(pki["ca_cert"]),
        cwd=tmp_path,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "cannot use the factory certificate" in refused.stderr, refused.stderr
    assert "not a PEM private key" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "tls" / "device.key").exists()
    assert central.store.list_inventory(after=None, limit=10) == []
