"""The gateway binary (``make binary``) runs the update, lifecycle and fleet subsystems.

What only the compiled build can get wrong, for the parts issue 13 added: a command not
registered in the binary, a lazily imported module or codec (``lzma`` for full bundles,
``zstandard`` for deltas) missing from it, and the fleet page's files (package data read
through ``importlib.resources``) left out of it, and enrollment's device side, which the
binary does with pycryptodome (it has no ``cryptography``) against a central run from the
source tree. Every test runs the binary itself (``EDGE_MIN_BIN``; ``make test-binary`` sets
it) and is skipped without one.
``test_binary.py`` has the rest of the binary's tests (it is near the module size limit).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.integration.enroll_central import (
    WORKFLOW,
    device_conf,
    factory_identity,
    make_token,
    start_central,
)

BIN = os.environ.get("EDGE_MIN_BIN")
pytestmark = [
    pytest.mark.skipif(not BIN, reason="EDGE_MIN_BIN is not set (make test-binary sets it)"),
    pytest.mark.slow,
]
FLEET_STATIC = ROOT / "edge_min" / "central" / "fleet_static"


def binary(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """The binary itself (never the source tree), in a subprocess."""
    return subprocess.run(
        [str(Path(BIN or "").resolve()), *argv], capture_output=True, text=True, timeout=timeout
    )


def test_binary_has_the_update_and_lifecycle_commands() -> None:
    update = binary("update", "--help")
    assert update.returncode == 0, update.stderr
    for command in ("install", "trust", "rollback", "status", "supervise", "keys", "bundle"):
        assert f"    {command} " in update.stdout, (command, update.stdout)
    central = binary("central", "--help")
    assert central.returncode == 0 and "enroll-token" in central.stdout, central.stderr
    for command in ("enroll", "decommission"):
        shown = binary(command, "--help")
        assert shown.returncode == 0 and f"usage: edge-min {command}" in shown.stdout, shown


@pytest.fixture()
def keys(tmp_path: Path) -> Path:
    made = binary("update", "keys", "init", str(tmp_path / "keys"))
    assert made.returncode == 0 and "root.json" in made.stdout, made.stderr
    return tmp_path / "keys"


def test_binary_bundles_itself_and_verifies_the_bundle(keys: Path, tmp_path: Path) -> None:
    # The real payload: the binary, full (xz through the binary's lzma).
    me = Path(BIN or "").resolve()
    out = tmp_path / "self.emub"
    made = binary(
        "update", "bundle", str(me), "--version", "9.9.9", "--keys", str(keys),
        "--arch", "x86_64", "-o", str(out),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "binary 9.9.9 for x86_64" in made.stdout, made.stdout
    extracted = tmp_path / "extracted"
    ok = binary(
        "update", "verify", str(out), "--trust", str(keys / "root.json"), "--arch", "x86_64",
        "--extract", str(extracted), "--json",
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    shown = json.loads(ok.stdout)
    assert (shown["version"], shown["kind"]) == ("9.9.9", "binary"), shown
    assert extracted.read_bytes() == me.read_bytes()
    # One byte changed in the payload's bytes: refused, and nothing extracted.
    data = bytearray(out.read_bytes())
    data[len(data) // 2] ^= 0x01
    bad = tmp_path / "bad.emub"
    bad.write_bytes(bytes(data))
    refused = binary(
        "update", "verify", str(bad), "--trust", str(keys / "root.json"), "--arch", "x86_64",
        "--extract", str(tmp_path / "never"),
    )  # fmt: skip
    assert refused.returncode == 1 and "[payload_mismatch]" in refused.stderr, refused
    assert not (tmp_path / "never").exists()


def test_binary_makes_and_applies_a_delta(keys: Path, tmp_path: Path) -> None:
    # Two small ELF files keep the zstd level-19 make quick; the codec is the binary's own.
    old, new = tmp_path / "old.bin", tmp_path / "new.bin"
    shutil.copyfile("/bin/true", old)
    new.write_bytes(old.read_bytes() + b"\0one module changed\0")
    out = tmp_path / "delta.emub"
    made = binary(
        "update", "bundle", str(new), "--version", "2.0.0", "--keys", str(keys),
        "--arch", "x86_64", "--delta-from", str(old), "-o", str(out),
    )  # fmt: skip
    assert made.returncode == 0 and "zstd-patch" in made.stdout, made.stdout + made.stderr
    verify = ("update", "verify", str(out), "--trust", str(keys / "root.json"))
    no_base = binary(*verify, "--arch", "x86_64", "--extract", str(tmp_path / "never"))
    assert no_base.returncode == 1 and "[delta_base_missing]" in no_base.stderr, no_base
    extracted = tmp_path / "rebuilt.bin"
    applied = binary(*verify, "--arch", "x86_64", "--base", str(old), "--extract", str(extracted))
    assert applied.returncode == 0, applied.stderr
    assert extracted.read_bytes() == new.read_bytes()


@pytest.fixture()
def central(tmp_path: Path) -> Iterator[str]:
    """``edge-min central serve`` run by the binary on a free port; yields its URL."""
    proc = subprocess.Popen(
        [str(Path(BIN or "").resolve()), "--data-dir", str(tmp_path / "central"),
         "central", "serve", "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "serving on " in line, line + proc.stdout.read()
        yield line.rsplit("serving on ", 1)[1].strip()
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read()


def test_binary_central_serves_the_fleet_page_and_the_inventory(central: str) -> None:
    status, kind, body = _get(central + "/fleet")
    assert (status, kind) == (200, "text/html; charset=utf-8"), body[:300]
    assert body == (FLEET_STATIC / "fleet.html").read_bytes()
    for asset in ("fleet.css", "fleet.js"):
        status, _, body = _get(f"{central}/fleet/{asset}")
        assert status == 200 and body == (FLEET_STATIC / asset).read_bytes(), asset
    status, _, body = _get(central + "/api/devices")
    assert status == 200, body
    status, _, body = _get(central + "/api/rollouts")
    assert status == 200, body


@pytest.fixture()
def source_central(tmp_path: Path) -> Iterator[tuple[Any, dict[str, Path], dict[str, Path]]]:
    """Central from the source tree (its CA is cryptography's) over HTTPS with mutual TLS,
    with a factory CA; yields (server, its PKI, the factory's)."""
    from edge_min.security.certs import init_certs

    pki = init_certs(tmp_path / "pki", device_id="operator")
    factory = init_certs(tmp_path / "factory", device_id="gw-f-p256")
    server = start_central(tmp_path, pki, factory["ca_cert"])
    try:
        yield server, pki, factory
    finally:
        server.stop()


def test_binary_enrolls_with_a_source_central_and_syncs_over_mutual_tls(
    tmp_path: Path, source_central: tuple[Any, dict[str, Path], dict[str, Path]]
) -> None:
    """The binary's enroll makes its key and CSR and reads central's answer with pycryptodome
    and its own DER reader (``edge_min.security.pkix``), then syncs with what it got."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    server, pki, factory = source_central
    token, pin = make_token(server, pki, device_id="gw-bin")
    config, data = device_conf(tmp_path / "dev", server.url), tmp_path / "dev" / "edge"
    base = ("--config", str(config), "--data-dir", str(data))
    enrolled = binary(
        *base, "enroll", "--central", server.url, "--token", token, "--ca-sha256", pin, "--json"
    )
    assert enrolled.returncode == 0, enrolled.stdout + enrolled.stderr
    assert json.loads(enrolled.stdout)["device_id"] == "gw-bin", enrolled.stdout
    tls = tmp_path / "dev" / "tls"
    cert = x509.load_pem_x509_certificate((tls / "device.crt").read_bytes())
    key = serialization.load_pem_private_key((tls / "device.key").read_bytes(), None)
    assert cert.public_key() == key.public_key()
    (tmp_path / "w.yaml").write_text(WORKFLOW)
    added = binary(*base, "workflow", "add", str(tmp_path / "w.yaml"))
    assert added.returncode == 0, added.stderr
    synced = binary(*base, "sync", "--now", "--json")
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert json.loads(synced.stdout)["ok"], synced.stdout
    assert [r["origin"] for r in server.store.pull("workflows", 0, 10)] == ["gw-bin"]
    # A factory certificate with an RSA key: the binary's pycryptodome RSA and PKCS#1 v1.5.
    fcert, fkey = factory_identity(factory, "rsa", tmp_path / "factory-rsa")
    other = device_conf(tmp_path / "f", server.url)
    enrolled = binary(
        "--config", str(other), "--data-dir", str(tmp_path / "f" / "edge"), "enroll",
        "--central", server.url, "--factory-cert", str(fcert), "--factory-key", str(fkey),
        "--ca", str(pki["ca_cert"]), "--json",
    )  # fmt: skip
    assert enrolled.returncode == 0, enrolled.stdout + enrolled.stderr
    assert json.loads(enrolled.stdout)["device_id"] == "gw-f-rsa", enrolled.stdout
