"""edge_min.security.pkix: the device's key, CSR and certificate reading without cryptography.

What it makes is checked by ``cryptography`` and central's real CA (``CentralCA``), what it
reads is made by them; the bad inputs (truncated, trailing bytes, BER lengths, wrong OIDs, a
certificate for another key or another name) are kept here, each refused with the part named.
"""

from __future__ import annotations

import ssl
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_min.central.ca import CentralCA, verify_with
from edge_min.errors import MissingDependency
from edge_min.lifecycle.enroll import EnrollmentError, _check_answer
from edge_min.security.certs import certificate_cn, init_certs
from edge_min.security.pkix import (
    OID_COMMON_NAME,
    OID_EC_PUBLIC_KEY,
    OID_ECDSA_SHA256,
    PkixError,
    der_oid,
    new_key_and_csr,
    parse_certificate,
    parse_csr,
    pem,
    pem_decode,
    sign_with_pem,
    verify_csr,
)
from edge_min.security.tls import client_context

CN_OID = der_oid(OID_COMMON_NAME)
ECDSA_SHA256 = der_oid(OID_ECDSA_SHA256)
ECDSA_SHA384 = der_oid("1.2.840.10045.4.3.3")  # the same length: a swap keeps the DER valid


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CentralCA:
    pki = init_certs(tmp_path_factory.mktemp("pki"))
    return CentralCA(pki["ca_cert"], pki["ca_key"])


@pytest.fixture(scope="module")
def issued(ca: CentralCA) -> dict[str, Any]:
    """A device key and CSR made here, and the certificate central's CA issued for it."""
    key_pem, csr_pem, public = new_key_and_csr("gw-1")
    cert_pem, serial, _ = ca.sign_csr(csr_pem, "gw-1")
    return {"key": key_pem, "csr": csr_pem, "public": public, "cert": cert_pem, "serial": serial}


def answer(issued: dict[str, Any], central: CentralCA, **over: Any) -> dict[str, Any]:
    doc = {
        "device_id": "gw-1",
        "certificate": issued["cert"],
        "ca": central.pem.decode(),
        "sync_key": "ab" * 32,
        "serial": issued["serial"],
    }
    return {**doc, **over}


def test_the_csr_is_one_central_signs_and_the_key_is_one_tls_loads(
    tmp_path: Path, ca: CentralCA, issued: dict[str, Any]
) -> None:
    assert issued["key"].startswith(b"-----BEGIN PRIVATE KEY-----\n")
    csr = x509.load_pem_x509_csr(issued["csr"].encode())
    assert csr.is_signature_valid
    assert csr.signature_algorithm_oid == SignatureAlgorithmOID.ECDSA_WITH_SHA256
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "gw-1"
    public = csr.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp256r1"
    spki = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert spki == issued["public"]
    # OpenSSL (Python's ssl) takes the key and central's certificate as a TLS client pair.
    (tmp_path / "device.key").write_bytes(issued["key"])
    (tmp_path / "device.crt").write_text(issued["cert"])
    ssl.create_default_context().load_cert_chain(tmp_path / "device.crt", tmp_path / "device.key")
    client_context(tmp_path / "device.crt", tmp_path / "device.key", ca.cert_path)
    # What the device reads of central's certificate is what cryptography reads.
    cert = parse_certificate(issued["cert"])
    theirs = x509.load_pem_x509_certificate(issued["cert"].encode())
    assert cert.common_name == "gw-1" and cert.public_key_info == issued["public"]
    assert cert.serial == theirs.serial_number == int(issued["serial"], 16)
    assert cert.key_algorithm == OID_EC_PUBLIC_KEY
    assert cert.signature_algorithm == theirs.signature_algorithm_oid.dotted_string
    assert (OID_COMMON_NAME, "gw-1") in cert.subject and ("2.5.4.11", "device") in cert.subject
    assert certificate_cn(tmp_path / "device.crt") == "gw-1"
    record = _check_answer(answer(issued, ca), issued["public"], ca.pem, ca.fingerprint)
    assert record["device_id"] == "gw-1" and record["ca_sha256"] == ca.fingerprint


def test_without_a_device_id_the_subject_is_empty_and_every_key_is_new() -> None:
    key_a, csr_pem, public = new_key_and_csr(None)
    key_b, _, other = new_key_and_csr(None)
    assert key_a != key_b and public != other
    assert len(x509.load_pem_x509_csr(csr_pem.encode()).subject) == 0
    csr = parse_csr(csr_pem)
    assert csr.subject == () and csr.common_name is None and csr.public_key_info == public
    verify_csr(csr)


def test_a_changed_csr_does_not_verify(issued: dict[str, Any]) -> None:
    der = pem_decode(issued["csr"], "CERTIFICATE REQUEST")
    verify_csr(parse_csr(der))
    renamed = der.replace(b"gw-1", b"gw-2")
    assert x509.load_der_x509_csr(renamed).is_signature_valid is False
    with pytest.raises(PkixError, match="signature does not verify"):
        verify_csr(parse_csr(renamed))
    with pytest.raises(PkixError, match="not ecdsa-with-SHA256"):
        verify_csr(parse_csr(der.replace(ECDSA_SHA256, ECDSA_SHA384)))
    # A CSR is not a certificate, and the other way round: the PEM label says so.
    with pytest.raises(PkixError, match="no -----BEGIN CERTIFICATE----- block"):
        parse_certificate(issued["csr"])
    with pytest.raises(PkixError, match="CERTIFICATE REQUEST"):
        parse_csr(issued["cert"])


def test_every_truncation_is_refused_naming_what_is_truncated(issued: dict[str, Any]) -> None:
    for label, data, parse in (
        ("CERTIFICATE", issued["cert"], parse_certificate),
        ("CERTIFICATE REQUEST", issued["csr"], parse_csr),
    ):
        der = pem_decode(data, label)
        for n in range(1, len(der)):
            with pytest.raises(PkixError, match="truncated"):
                parse(der[:n])
        with pytest.raises(PkixError, match="no END line"):
            parse(data[: len(data) // 2])
        with pytest.raises(PkixError, match="trailing data"):
            parse(der + b"\x00")


def test_bad_der_and_pem_are_refused_naming_the_part(issued: dict[str, Any]) -> None:
    der = pem_decode(issued["cert"], "CERTIFICATE")
    cases = {
        b"\x30\x80" + der[2:]: "indefinite length",
        b"\x30\x81\x03\x02\x01\x00": "not minimal",
        b"\x30\x03\x02\x01\x00": "1 parts, not 3",
        b"\x31\x00": "the certificate is SET, not SEQUENCE",
        b"\x3f\x01\x00": "multi-byte tag",
        b"\x30\x85\x01\x00\x00\x00\x00": "5-byte length",
    }
    for data, named in cases.items():
        with pytest.raises(PkixError, match=named):
            parse_certificate(data)
    with pytest.raises(PkixError, match="not valid base64"):
        parse_certificate("-----BEGIN CERTIFICATE-----\n@@@@\n-----END CERTIFICATE-----\n")
    with pytest.raises(PkixError, match="empty"):
        parse_certificate("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    with pytest.raises(PkixError, match="not ASCII"):
        parse_certificate(b"\xff-----BEGIN CERTIFICATE-----")
    assert pem_decode(pem("CERTIFICATE", der), "CERTIFICATE") == der


def test_wrong_oids_in_a_certificate(issued: dict[str, Any]) -> None:
    der = pem_decode(issued["cert"], "CERTIFICATE")
    # The subject's CN retyped as an organisation (2.5.4.10): no CN left to match.
    at = der.rindex(CN_OID)  # the subject comes after the issuer
    organisation = der[:at] + der_oid("2.5.4.10") + der[at + len(CN_OID) :]
    cert = parse_certificate(organisation)
    assert cert.common_name is None and ("2.5.4.10", "gw-1") in cert.subject
    # The outer signature algorithm no longer the one tbsCertificate names.
    outer = der.rindex(ECDSA_SHA256)
    swapped = der[:outer] + ECDSA_SHA384 + der[outer + len(ECDSA_SHA384) :]
    with pytest.raises(PkixError, match="is not the signatureAlgorithm"):
        parse_certificate(swapped)
    # An object identifier whose last byte says more follows.
    broken = der[:at] + b"\x06\x03\x55\x04\x83" + der[at + len(CN_OID) :]
    with pytest.raises(PkixError, match="not a complete object identifier"):
        parse_certificate(broken)
    # A CN that is an INTEGER, not a string (the length stays: 0x0c -> 0x02).
    value = at + len(CN_OID)
    assert der[value] == 0x0C
    with pytest.raises(PkixError, match="the CN is INTEGER, not a string"):
        parse_certificate(der[:value] + b"\x02" + der[value + 1 :])


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_a_corrupt_certificate_is_a_pkix_error_never_a_traceback(
    issued: dict[str, Any], data: st.DataObject
) -> None:
    der = bytearray(pem_decode(issued["cert"], "CERTIFICATE"))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(der) - 1))
        der[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(der)))
    try:
        cert = parse_certificate(bytes(der[:cut]))
    except PkixError:
        return
    assert isinstance(cert.subject, tuple) and isinstance(cert.public_key_info, bytes)


def test_the_answer_must_be_for_this_key_and_this_device(
    ca: CentralCA, issued: dict[str, Any]
) -> None:
    public, pin = issued["public"], ca.fingerprint
    # A certificate central issued, but for another key (another device's CSR).
    other_cert = ca.sign_csr(new_key_and_csr("gw-1")[1], "gw-1")[0]
    with pytest.raises(EnrollmentError, match="not for the key this device made"):
        _check_answer(answer(issued, ca, certificate=other_cert), public, ca.pem, pin)
    with pytest.raises(EnrollmentError, match="names 'gw-1', not the enrolled device id 'gw-2'"):
        _check_answer(answer(issued, ca, device_id="gw-2"), public, ca.pem, pin)
    bad = issued["cert"][: len(issued["cert"]) // 2]
    with pytest.raises(EnrollmentError, match=r"certificate is malformed: .*no END line"):
        _check_answer(answer(issued, ca, certificate=bad), public, ca.pem, pin)
    with pytest.raises(EnrollmentError, match="CA certificate is malformed"):
        _check_answer(answer(issued, ca, ca="not a CA"), public, ca.pem, pin)
    with pytest.raises(EnrollmentError, match="not 32 bytes"):
        _check_answer(answer(issued, ca, sync_key="ab" * 31), public, ca.pem, pin)
    with pytest.raises(EnrollmentError, match="sync key is not hex"):
        _check_answer(answer(issued, ca, sync_key="zz" * 32), public, ca.pem, pin)
    with pytest.raises(EnrollmentError, match="lacks 'serial'"):
        _check_answer(answer(issued, ca, serial=""), public, ca.pem, pin)
    with pytest.raises(EnrollmentError, match="another CA than the pinned one"):
        _check_answer(answer(issued, ca), public, ca.pem, "0" * 64)
    # A certificate for this key that names no one (no CN at all).
    nameless = _certificate(ca, serialization.load_der_public_key(public), x509.Name([]))
    with pytest.raises(EnrollmentError, match="names None, not the enrolled device id"):
        _check_answer(answer(issued, ca, certificate=nameless), public, ca.pem, pin)


def _certificate(ca: CentralCA, public: Any, subject: x509.Name) -> str:
    """A certificate central's CA signs for ``public``, built with cryptography."""
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(ca.key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _private_pem(key: Any, form: str = "pkcs8", password: bytes | None = None) -> bytes:
    fmt = {
        "pkcs8": serialization.PrivateFormat.PKCS8,
        "traditional": serialization.PrivateFormat.TraditionalOpenSSL,
    }[form]
    crypt: Any = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return bytes(key.private_bytes(serialization.Encoding.PEM, fmt, crypt))


@pytest.mark.parametrize(
    ("make", "form"),
    [
        (lambda: ec.generate_private_key(ec.SECP256R1()), "pkcs8"),
        (lambda: ec.generate_private_key(ec.SECP256R1()), "traditional"),
        (lambda: ec.generate_private_key(ec.SECP384R1()), "traditional"),
        (lambda: rsa.generate_private_key(65537, 2048), "traditional"),
        (lambda: rsa.generate_private_key(65537, 2048), "pkcs8"),
        (ed25519.Ed25519PrivateKey.generate, "pkcs8"),
    ],
    ids=["p256-pkcs8", "p256-sec1", "p384-sec1", "rsa-pkcs1", "rsa-pkcs8", "ed25519"],
)
def test_a_factory_key_signs_as_central_verifies(make: Any, form: str) -> None:
    key = make()
    data = new_key_and_csr("gw-f")[1].encode()
    signature = sign_with_pem(_private_pem(key, form), data)
    assert verify_with(key.public_key(), signature, data)
    assert not verify_with(key.public_key(), signature, data + b" ")


def test_keys_that_cannot_sign_are_refused_naming_why() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(PkixError, match="encrypted"):
        sign_with_pem(_private_pem(key, password=b"secret"), b"x")
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(PkixError, match="public key"):
        sign_with_pem(public, b"x")
    with pytest.raises(PkixError, match="not a PEM private key"):
        sign_with_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", b"x")
    with pytest.raises(PkixError, match="Ed448 cannot sign here"):
        sign_with_pem(_private_pem(ed448.Ed448PrivateKey.generate()), b"x")


def test_certificate_cn_reads_without_a_library(tmp_path: Path, issued: dict[str, Any]) -> None:
    path = tmp_path / "device.crt"
    assert certificate_cn(path) is None  # absent
    path.write_text(issued["cert"])
    assert certificate_cn(path) == "gw-1"
    path.write_text(issued["cert"][:100])
    assert certificate_cn(path) is None


def test_without_pycryptodome_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("Crypto.Hash", "Crypto.PublicKey", "Crypto.Signature"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingDependency, match=r"pip install 'edge-min\[crypto\]'"):
        new_key_and_csr("gw-1")
