"""init_certs / issue_device_cert: real keys and certificates, checked by a strict verifier."""

from __future__ import annotations

import argparse
import ipaddress
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from edge_min.security import certs
from edge_min.security.certs import CertificateError, init_certs, issue_device_cert

FILES = {"ca.crt", "ca.key", "central.crt", "central.key", "device.crt", "device.key"}


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _cn(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def _san(cert: x509.Certificate) -> tuple[list[str], list[Any]]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.DNSName), san.get_values_for_type(x509.IPAddress)


def _eku(cert: x509.Certificate) -> set[Any]:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return init_certs(
        tmp_path_factory.mktemp("certs") / "c", device_id="gw-7", central_host="central.example"
    )


def test_writes_the_six_files_keys_private(made: dict[str, Path]) -> None:
    folder = made["ca_cert"].parent
    assert {p.name for p in folder.iterdir()} == FILES
    assert set(made) == {
        "ca_cert",
        "ca_key",
        "central_cert",
        "central_key",
        "device_cert",
        "device_key",
    }
    for name, path in made.items():
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o600 if name.endswith("_key") else 0o644), (name, oct(mode))
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_keys_are_p256_and_match_their_certificates(made: dict[str, Path]) -> None:
    for who in ("ca", "central", "device"):
        key = serialization.load_pem_private_key(made[f"{who}_key"].read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert key.curve.name == "secp256r1"
        assert key.public_key() == _cert(made[f"{who}_cert"]).public_key()


def test_ca_is_a_ca_and_leaves_are_not(made: dict[str, Path]) -> None:
    ca = _cert(made["ca_cert"])
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    for who in ("central", "device"):
        leaf = _cert(made[f"{who}_cert"])
        assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        assert leaf.issuer == ca.subject
        assert leaf.not_valid_after_utc <= ca.not_valid_after_utc
        # backdated a little for devices whose clock lags, but valid now
        assert leaf.not_valid_before_utc < datetime.now(UTC) < leaf.not_valid_after_utc


def test_central_names_loopback_and_central_host(made: dict[str, Path]) -> None:
    central = _cert(made["central_cert"])
    dns, ips = _san(central)
    assert set(dns) == {"localhost", "central.example"}
    assert ips == [ipaddress.ip_address("127.0.0.1")]
    assert _eku(central) == {ExtendedKeyUsageOID.SERVER_AUTH}


def test_device_cn_is_the_device_id_and_it_can_do_client_auth(made: dict[str, Path]) -> None:
    device = _cert(made["device_cert"])
    assert _cn(device) == "gw-7"
    assert ExtendedKeyUsageOID.CLIENT_AUTH in _eku(device)
    dns, _ = _san(device)
    assert "gw-7" in dns


def test_chains_pass_a_strict_verifier(made: dict[str, Path]) -> None:
    store = Store([_cert(made["ca_cert"])])
    builder = PolicyBuilder().store(store).time(datetime.now(UTC))
    server = builder.build_server_verifier(x509.DNSName("central.example"))
    server.verify(_cert(made["central_cert"]), [])
    server_ip = builder.build_server_verifier(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    server_ip.verify(_cert(made["central_cert"]), [])
    client = builder.build_client_verifier()
    verified = client.verify(_cert(made["device_cert"]), [])
    assert x509.DNSName("gw-7") in (verified.subjects or [])
    # the central certificate is not a client certificate: it cannot pose as a device
    with pytest.raises(Exception, match=r"(?i)extended key usage|EKU"):
        client.verify(_cert(made["central_cert"]), [])


def test_central_host_given_as_an_ip(tmp_path: Path) -> None:
    paths = init_certs(tmp_path, central_host="10.1.2.3", days=2)
    central = _cert(paths["central_cert"])
    dns, ips = _san(central)
    assert dns == ["localhost"]
    assert set(ips) == {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("10.1.2.3")}
    life = central.not_valid_after_utc - central.not_valid_before_utc
    assert timedelta(days=2) < life <= timedelta(days=2, hours=1)


def test_refuses_to_overwrite_and_writes_nothing(tmp_path: Path) -> None:
    first = init_certs(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(CertificateError, match=r"refusing to overwrite.*--force"):
        init_certs(tmp_path, device_id="other")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    # one file left over is enough to refuse, and the others are not created
    for p in first.values():
        if p.name != "device.key":
            p.unlink()
    with pytest.raises(CertificateError, match=r"device\.key"):
        init_certs(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["device.key"]


def test_force_replaces_everything(tmp_path: Path) -> None:
    first = init_certs(tmp_path, device_id="a")
    old = {k: p.read_bytes() for k, p in first.items()}
    second = init_certs(tmp_path, device_id="b", force=True)
    assert all(second[k].read_bytes() != old[k] for k in old)
    assert _cn(_cert(second["device_cert"])) == "b"
    assert stat.S_IMODE(second["device_key"].stat().st_mode) == 0o600
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("bad", ["", "a b", "dev/1", "-x", "x" * 65, "é"])
def test_bad_device_ids_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(CertificateError, match="device id"):
        init_certs(tmp_path, device_id=bad)
    assert not list(tmp_path.iterdir())


def test_bad_central_host_and_days(tmp_path: Path) -> None:
    with pytest.raises(CertificateError, match="central-host 'not a host'"):
        init_certs(tmp_path, central_host="not a host")
    with pytest.raises(CertificateError, match="days"):
        init_certs(tmp_path, days=0)


def test_issue_device_cert_uses_the_same_ca(made: dict[str, Path], tmp_path: Path) -> None:
    ca_dir = made["ca_cert"].parent
    out = issue_device_cert(ca_dir, "sensor_3", tmp_path / "s3")
    assert {p.name for p in (tmp_path / "s3").iterdir()} == {"ca.crt", "device.crt", "device.key"}
    assert out["ca_cert"].read_bytes() == made["ca_cert"].read_bytes()
    device = _cert(out["device_cert"])
    assert _cn(device) == "sensor_3"
    # "sensor_3" is not a DNS name: the SAN keeps only the loopback names
    assert _san(device)[0] == ["localhost"]
    store = Store([_cert(made["ca_cert"])])
    PolicyBuilder().store(store).build_client_verifier().verify(device, [])
    assert stat.S_IMODE(out["device_key"].stat().st_mode) == 0o600
    with pytest.raises(CertificateError, match="refusing"):
        issue_device_cert(ca_dir, "sensor_3", tmp_path / "s3")


def test_issue_device_cert_needs_the_ca(tmp_path: Path) -> None:
    with pytest.raises(CertificateError, match="certs init"):
        issue_device_cert(tmp_path, "gw-1")


def test_cli_arguments_and_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="edge-min certs init")
    certs.add_arguments(parser)
    target = tmp_path / "dev-certs"
    args = parser.parse_args([str(target), "--device-id", "gw-9", "--central-host", "localhost"])
    assert certs.run(args) == 0
    out = capsys.readouterr().out
    assert f"certificate_path: {(target / 'device.crt').resolve()}" in out
    assert "protocol: TLS 1.3" in out
    assert "--tls-cert" in out
    assert _cn(_cert(target / "device.crt")) == "gw-9"
    with pytest.raises(CertificateError, match="--force"):
        certs.run(parser.parse_args([str(target)]))
    assert certs.run(parser.parse_args([str(target), "--force", "--days", "30"])) == 0
    assert _cn(_cert(target / "device.crt")) == "device-1"


NO_CRYPTOGRAPHY = """
import sys
sys.modules["cryptography"] = None  # any import of it fails, as in the gateway binary
from edge_min.cli import main
code = main(sys.argv[1:])
loaded = sorted(m for m, v in sys.modules.items() if m.startswith("cryptography") and v)
assert not loaded, loaded
raise SystemExit(code)
"""


def test_certs_init_needs_no_cryptography_and_its_chains_hold_in_strict_tls(
    tmp_path: Path,
) -> None:
    # What the gateway binary runs: `certs init` with pycryptodome alone. The files must give a
    # mutual TLS 1.3 handshake with OpenSSL's X509_STRICT on both sides, and cryptography's
    # strict verifier (the other tests here) must accept them.
    import socket
    import ssl
    import subprocess
    import sys
    import threading

    out = tmp_path / "pki"
    proc = subprocess.run(
        [sys.executable, "-c", NO_CRYPTOGRAPHY, "certs", "init", str(out), "--device-id", "gw-9"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    issue = (
        'import sys; sys.modules["cryptography"] = None\n'
        "from edge_min.security.certs import issue_device_cert\n"
        f"issue_device_cert({str(out)!r}, 'gw-10')\n"
    )
    more = subprocess.run(
        [sys.executable, "-c", issue], capture_output=True, text=True, check=False
    )
    assert more.returncode == 0, more.stderr
    second = out / "devices" / "gw-10"
    assert _cn(_cert(second / "device.crt")) == "gw-10"

    store = Store([_cert(out / "ca.crt")])
    verifier = PolicyBuilder().store(store).time(datetime.now(UTC))
    verifier.build_server_verifier(x509.DNSName("localhost")).verify(_cert(out / "central.crt"), [])
    for device in (out / "device.crt", second / "device.crt"):
        verifier.build_client_verifier().verify(_cert(device), [])

    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.minimum_version = ssl.TLSVersion.TLSv1_3
    server.verify_flags |= ssl.VERIFY_X509_STRICT
    server.load_cert_chain(out / "central.crt", out / "central.key")
    server.load_verify_locations(out / "ca.crt")
    server.verify_mode = ssl.CERT_REQUIRED
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.minimum_version = ssl.TLSVersion.TLSv1_3
    client.verify_flags |= ssl.VERIFY_X509_STRICT
    client.load_verify_locations(out / "ca.crt")
    client.load_cert_chain(second / "device.crt", second / "device.key")
    seen: list[Any] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def serve() -> None:
            conn, _ = listener.accept()
            with server.wrap_socket(conn, server_side=True) as tls:
                seen.append(tls.getpeercert())
                tls.sendall(b"ok")

        thread = threading.Thread(target=serve)
        thread.start()
        with (
            socket.create_connection(listener.getsockname()) as raw,
            client.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            assert tls.version() == "TLSv1.3" and tls.recv(2) == b"ok"
        thread.join(10)
    subject = dict(pair[0] for pair in seen[0]["subject"])
    assert subject["commonName"] == "gw-10" and subject["organizationalUnitName"] == "device"
