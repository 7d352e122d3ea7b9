"""Central's certificate authority for enrollment: signs device CSRs, names its own CA.

``CentralCA(cert, key)`` is the CA that verifies device certificates at central's TLS
handshake (``--tls-ca``) together with its private key (``--enroll-ca-key``; the ``ca.key``
``edge-min certs init`` writes beside ``ca.crt``). ``sign_csr`` checks a device's
certificate signing request (PEM, its signature valid, an EC P-256/P-384 or RSA >= 2048
key) and issues a client certificate with CN = the device id, the same extensions as the
development certificates (``edge_min.security.certs``), a fresh random serial and at most
``days`` of validity (never past the CA's own).

``ca_fingerprint(pem)`` is the sha256 of a certificate's DER: what ``edge-min enroll
--ca-sha256`` pins before it trusts the CA it fetched from ``GET /api/enroll/ca``.

A CSR that cannot be used is ``BadCsr`` (field ``csr``), answered 400 ``bad_enrollment``.

``FactoryCA(cert)`` (``--factory-ca``) lets a device enroll without a claim token: it sends
its factory certificate (issued by that CA, valid now, CN = its device id) and a signature of
its CSR's PEM text made with the factory certificate's key (``sign_with``), which proves it
holds that key. A certificate or signature that does not is ``FactoryRefused`` (403
``factory_certificate_refused``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from edge_min.central.model import ProvisioningError
from edge_min.errors import ConfigError, EdgeError, MissingDependency

DEFAULT_DAYS = 365
_BACKDATE = timedelta(hours=1)


class BadCsr(ProvisioningError):
    """A certificate signing request cannot be signed (not PEM, bad signature, weak key)."""

    code = "bad_csr"


def ca_fingerprint(pem: bytes | str) -> str:
    """sha256 (hex) of the DER of the first certificate in ``pem``."""
    text = pem.decode("ascii") if isinstance(pem, bytes) else pem
    der = ssl.PEM_cert_to_DER_cert(text.strip() + "\n")
    return hashlib.sha256(der).hexdigest()


def csr_common_name(csr_pem: Any) -> str | None:
    """The CN a CSR asks for (None without one); BadCsr if it is not a valid CSR."""
    from cryptography.x509.oid import NameOID

    csr = _load_csr(csr_pem)
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


def _load_csr(csr_pem: Any) -> Any:

    x509 = _crypto()[0]
    if not isinstance(csr_pem, str) or "BEGIN CERTIFICATE REQUEST" not in csr_pem:
        raise BadCsr(
            "csr must be a PEM certificate signing request (-----BEGIN CERTIFICATE REQUEST-----)"
        )
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise BadCsr(f"csr is not a readable PEM certificate signing request: {exc}") from exc
    if not csr.is_signature_valid:
        raise BadCsr("csr: its signature does not verify (was it changed after signing?)")
    _check_key(csr.public_key())
    return csr


def _check_key(key: Any) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in ("secp256r1", "secp384r1"):
            raise BadCsr(f"csr: curve {key.curve.name} is not accepted; use P-256 or P-384")
        return
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise BadCsr(f"csr: an RSA key of {key.key_size} bits is too weak; use 2048 or more")
        return
    raise BadCsr(f"csr: a {type(key).__name__} is not accepted; use an EC P-256 key")


class CentralCA:
    """The CA that signs enrolled devices' certificates."""

    def __init__(
        self,
        cert: str | os.PathLike[str],
        key: str | os.PathLike[str],
        *,
        days: int = DEFAULT_DAYS,
    ) -> None:

        x509, _, serialization, _, _ = _crypto()
        self.cert_path, self.key_path = Path(cert), Path(key)
        for path, flag in ((self.cert_path, "--tls-ca"), (self.key_path, "--enroll-ca-key")):
            if not path.is_file():
                raise ConfigError(
                    f"{path} does not exist; enrollment needs the CA certificate and its key "
                    "(the ca.crt and ca.key of `edge-min certs init DIR`)",
                    path=flag,
                    value=str(path),
                )
        self.pem = self.cert_path.read_bytes()
        try:
            self.cert = x509.load_pem_x509_certificate(self.pem)
            self.key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"cannot load the enrollment CA {self.cert_path} / {self.key_path}: {exc}",
                path="--enroll-ca-key",
                value=str(self.key_path),
            ) from exc
        if self.cert.public_key().public_numbers() != self.key.public_key().public_numbers():
            raise ConfigError(
                f"{self.key_path} is not the key of the CA certificate {self.cert_path}",
                path="--enroll-ca-key",
                value=str(self.key_path),
            )
        self.days = days
        self.fingerprint = ca_fingerprint(self.pem)

    def sign_csr(self, csr_pem: str, device_id: str) -> tuple[str, str, str]:
        """(certificate PEM, serial hex, not_after ISO) for ``device_id`` from a device's CSR."""
        from edge_min.central.enrollment_store import serial_hex
        from edge_min.security.certs import _check_device_id, _device_names

        _check_device_id(device_id)
        csr = _load_csr(csr_pem)
        x509, _, serialization, hashes, oid = _crypto()
        now = datetime.now(UTC)
        not_after = min(now + timedelta(days=self.days), self.cert.not_valid_after_utc)
        serial = x509.random_serial_number()
        public = csr.public_key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(oid.NameOID.COMMON_NAME, device_id),
                        x509.NameAttribute(oid.NameOID.ORGANIZATIONAL_UNIT_NAME, "device"),
                    ]
                )
            )
            .issuer_name(self.cert.subject)
            .public_key(public)
            .serial_number(serial)
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(x509, ca=False), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [oid.ExtendedKeyUsageOID.CLIENT_AUTH, oid.ExtendedKeyUsageOID.SERVER_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.SubjectAlternativeName(_general_names(x509, _device_names(device_id))), False
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
            .sign(self.key, hashes.SHA256())
        )
        pem = cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
        return pem, serial_hex(serial), not_after.strftime("%Y-%m-%dT%H:%M:%SZ")


class FactoryRefused(EdgeError):
    """A factory certificate does not prove who the device is (wrong CA, expired, bad
    signature of the CSR, no usable CN)."""

    code = "factory_certificate_refused"


class FactoryCA:
    """The CA of factory certificates (``--factory-ca``): a device it vouches for enrolls
    without a claim token, as the CN of its factory certificate."""

    def __init__(self, cert: str | os.PathLike[str]) -> None:

        x509 = _crypto()[0]
        self.path = Path(cert)
        try:
            self.cert = x509.load_pem_x509_certificate(self.path.read_bytes())
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot read the factory CA certificate {self.path}: {exc}",
                path="--factory-ca",
                value=str(self.path),
            ) from exc

    def device_of(self, factory_pem: Any, signature_b64: Any, signed: bytes, now: float) -> str:
        """The device id a factory certificate vouches for, once it is shown to be issued by
        this CA, valid at ``now`` and its key's signature of ``signed`` (the CSR) verifies."""
        import base64
        import binascii

        from cryptography.exceptions import InvalidSignature

        from edge_min.security.certs import DEVICE_ID_RE

        x509, _, _, _, oid = _crypto()
        if not isinstance(factory_pem, str) or "BEGIN CERTIFICATE" not in factory_pem:
            raise FactoryRefused("factory_certificate must be a PEM certificate")
        try:
            cert = x509.load_pem_x509_certificate(factory_pem.encode("ascii"))
            signature = base64.b64decode(str(signature_b64), validate=True)
        except (ValueError, UnicodeEncodeError, binascii.Error) as exc:
            raise FactoryRefused(
                f"factory_certificate / factory_signature unreadable: {exc}"
            ) from exc
        try:
            cert.verify_directly_issued_by(self.cert)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise FactoryRefused(
                f"factory_certificate is not issued by the factory CA {self.path.name}: {exc}"
            ) from exc
        when = datetime.fromtimestamp(now, UTC)
        if not cert.not_valid_before_utc <= when <= cert.not_valid_after_utc:
            raise FactoryRefused(
                f"factory_certificate is valid from {cert.not_valid_before_utc:%Y-%m-%d} to "
                f"{cert.not_valid_after_utc:%Y-%m-%d}, not now"
            )
        if not verify_with(cert.public_key(), signature, signed):
            raise FactoryRefused(
                "factory_signature does not verify: sign the csr (its PEM text) with the "
                "factory certificate's key"
            )
        names = cert.subject.get_attributes_for_oid(oid.NameOID.COMMON_NAME)
        device_id = str(names[0].value) if names else ""
        if not DEVICE_ID_RE.match(device_id):
            raise FactoryRefused(f"factory_certificate's CN {device_id!r} is not a device id")
        return device_id


def sign_with(key: Any, data: bytes) -> bytes:
    """``data`` signed by an EC (ECDSA SHA-256), RSA (PKCS#1 v1.5 SHA-256) or Ed25519 key."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

    if isinstance(key, ec.EllipticCurvePrivateKey):
        return bytes(key.sign(data, ec.ECDSA(hashes.SHA256())))
    if isinstance(key, rsa.RSAPrivateKey):
        return bytes(key.sign(data, padding.PKCS1v15(), hashes.SHA256()))
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return bytes(key.sign(data))
    raise TypeError(f"cannot sign with a {type(key).__name__}")


def verify_with(public: Any, signature: bytes, data: bytes) -> bool:
    """Whether ``signature`` of ``data`` verifies under ``public`` (as ``sign_with`` signs)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

    try:
        if isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(public, rsa.RSAPublicKey):
            public.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(public, ed25519.Ed25519PublicKey):
            public.verify(signature, data)
        else:
            return False
    except InvalidSignature:
        return False
    return True


# -- cryptography's X.509 builder (central always has it: the crypto extra)


def _crypto() -> tuple[Any, Any, Any, Any, Any]:
    """(x509, ec, serialization, hashes, oid) from cryptography, imported on first use."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509 import oid
    except ImportError as exc:  # pragma: no cover - the dev venv has it
        raise MissingDependency("cryptography", "crypto", "central's CA") from exc
    return x509, ec, serialization, hashes, oid


def _key_usage(x509: Any, *, ca: bool) -> Any:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        # ECDHE key agreement is ephemeral; the certificate key only signs.
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _general_names(x509: Any, names: list[str]) -> list[Any]:
    out: list[Any] = []
    seen: set[str] = set()
    for name in names:
        if name.lower() in seen:
            continue
        seen.add(name.lower())
        try:
            ip = ipaddress.ip_address(name)
        except ValueError:
            out.append(x509.DNSName(name))
        else:
            out.append(x509.IPAddress(ip))
    return out
