"""A real central for enrollment tests and the device files it enrolls: shared by the
source-tree tests (``test_enrollment_nocrypto``) and the binary's (``test_binary_update``).

``start_central`` serves HTTPS with mutual TLS on 127.0.0.1 from this process (its CA and
factory CA are ``cryptography``'s, as central's always are); ``make_token`` asks it for a
claim token as the operator; ``device_conf`` writes a device's config naming where
enrollment puts its TLS files; ``factory_identity`` issues a factory certificate of a given
key type.
"""

from __future__ import annotations

import http.client
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from edge_min.central.ca import CentralCA, FactoryCA
from edge_min.central.server import CentralServer
from edge_min.central.store import open_central_store
from edge_min.clock import VirtualClock
from edge_min.security.tls import client_context, server_context

WORKFLOW = "name: w\nversion: '1'\nsteps: [{id: s1, agent: noop}]\n"


def start_central(
    tmp_path: Path,
    pki: dict[str, Path],
    factory_ca: Path | None = None,
    *,
    clock: VirtualClock | None = None,
) -> CentralServer:
    """Central on a free port: ``pki`` (``init_certs``) is its TLS and enrollment CA. Its
    clock (``clock``, else a virtual one) starts at the real now: certificates are checked
    against it."""
    clock = clock or VirtualClock(time.time())
    store = open_central_store(f"sqlite:///{tmp_path / 'central.db'}", clock=clock)
    ctx = server_context(
        pki["central_cert"], pki["central_key"], pki["ca_cert"], require_client_cert=False
    )
    return CentralServer(
        store, "127.0.0.1", 0, ssl_context=ctx, ca=CentralCA(pki["ca_cert"], pki["ca_key"]),
        require_client_cert=True, factory_ca=FactoryCA(factory_ca) if factory_ca else None,
    ).start()  # fmt: skip


def call(central: CentralServer, ctx: Any, method: str, path: str, body: Any = None) -> Any:
    """(status, JSON) of one HTTPS request to ``central`` with the client context ``ctx``."""
    host, port = central.address
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=10)
    try:
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


def make_token(central: CentralServer, pki: dict[str, Path], **fields: Any) -> tuple[str, str]:
    """(claim token, CA pin) from central, asked by the operator (pki's device certificate)."""
    operator = client_context(pki["device_cert"], pki["device_key"], pki["ca_cert"])
    status, doc = call(central, operator, "POST", "/api/enroll/tokens", fields)
    assert status == 201, doc
    return str(doc["token"]), str(doc["ca_sha256"])


def device_conf(root: Path, central_url: str, *, attestation: bool = False) -> Path:
    """A device's edge-config.yaml (and edge-security.yaml beside it) under ``root``: central's
    URL and where enrollment writes the TLS files; remote attestation on with ``attestation``."""
    conf = root / "conf"
    conf.mkdir(parents=True)
    (conf / "edge-config.yaml").write_text(
        f"runtime: {{offline_mode: never}}\nsync: {{central_url: '{central_url}'}}\n"
    )
    tls = root / "tls"
    att = (
        "attestation: {enabled: true, method: remote, interval: 1h, server: null}\n"
        if attestation
        else ""
    )
    (conf / "edge-security.yaml").write_text(
        "encryption:\n  communication:\n    enabled: true\n"
        f"    certificate_path: {tls / 'device.crt'}\n"
        f"    key_path: {tls / 'device.key'}\n"
        f"    ca_path: {tls / 'ca.crt'}\n" + att
    )
    return conf / "edge-config.yaml"


def factory_identity(factory: dict[str, Path], kind: str, folder: Path) -> tuple[Path, Path]:
    """A factory certificate (CN gw-f-KIND) and its key, issued by ``factory``'s CA.

    ``kind`` is p256 (the bundle's own device certificate, PKCS#8 key), p384 (SEC1 key),
    rsa (2048 bits, PKCS#1 key) or ed25519 (PKCS#8 key)."""
    if kind == "p256":
        return factory["device_cert"], factory["device_key"]
    key: Any = {
        "p384": lambda: ec.generate_private_key(ec.SECP384R1()),
        "rsa": lambda: rsa.generate_private_key(65537, 2048),
        "ed25519": ed25519.Ed25519PrivateKey.generate,
    }[kind]()
    ca_cert = x509.load_pem_x509_certificate(factory["ca_cert"].read_bytes())
    ca_key: Any = serialization.load_pem_private_key(factory["ca_key"].read_bytes(), None)
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"gw-f-{kind}")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True)
    (folder / "factory.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    form = serialization.PrivateFormat.TraditionalOpenSSL
    if kind == "ed25519":
        form = serialization.PrivateFormat.PKCS8
    (folder / "factory.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, form, serialization.NoEncryption())
    )
    return folder / "factory.crt", folder / "factory.key"
