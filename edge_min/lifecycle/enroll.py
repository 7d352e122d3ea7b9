"""``edge-min enroll``: a device claims a token and gets everything it needs to sync.

``enroll(config, paths, central_url=..., token=...)``:

1. decides whom to trust for the call: ``ca_file`` (a CA certificate file), else
   ``ca_sha256`` (the CA is fetched from ``GET /api/enroll/ca`` and must hash to that pin
   before anything else is sent), else the file ``encryption.communication.ca_path`` names
   if it exists; a plain ``http://`` central is only allowed on loopback, as for sync;
2. makes an EC P-256 key here (it never leaves the device) and a CSR for it, CN = the
   device id when one is given (``edge_min.security.pkix``: pycryptodome, no
   ``cryptography``, so the gateway binary enrolls too);
3. ``POST /api/enroll`` with the token, the CSR and the public half of the attestation key
   (``keys/attestation.key``, made if absent), so central registers it with no trust on
   first use. Instead of a token a device may show a factory certificate (``factory_cert``
   and its key ``factory_key``, e.g. burnt in at manufacturing): it sends the certificate
   and its key's signature of the CSR, and central (``--factory-ca``) enrolls it as the
   certificate's CN;
4. checks the answer (the certificate is for this key and names a device id; the CA is the
   pinned one) and writes, each whole or not at all: the key (0600) at
   ``encryption.communication.key_path``, the certificate at ``certificate_path``, the CA at
   ``ca_path``, the sync key (0600) at ``<data>/keys/sync.key``, and the record
   ``<data>/enrollment.json`` (device id, central, serial, validity, tags, the config
   fragment central holds for the device and its attestation policy).

The caller then records the device id in the store (``meta['device.id']``, what sync and
attestation call themselves), so ``edge-min run`` syncs over mutual TLS with no other step.

Errors are ``EnrollmentError`` naming what failed: a missing config key, a refused token
(with central's code: ``enroll_token_used``, ...), a CA that does not match its pin.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import secrets
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edge_min.clock import Clock, SystemClock, iso
from edge_min.errors import EdgeError

ENROLLMENT_FILE = "enrollment.json"
ENROLL_PATH = "/api/enroll"
CA_PATH = "/api/enroll/ca"
DEFAULT_TIMEOUT = 30.0
_COMM = "encryption.communication"


class EnrollmentError(EdgeError):
    """The device could not enroll: config, trust, central's refusal, or its answer."""

    code = "enrollment_error"


def enrollment_record(root: str | os.PathLike[str]) -> dict[str, Any] | None:
    """``<data>/enrollment.json`` as a dict, or None when the device never enrolled."""
    path = Path(root) / ENROLLMENT_FILE
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise EnrollmentError(f"{path} is unreadable ({exc}); enroll again with --force") from exc
    return doc if isinstance(doc, dict) else None


def communication_paths(config: Any) -> dict[str, Path]:
    """The cert, key and CA paths edge-security.yaml names; EnrollmentError if one is unset."""
    comm = config.security_config.encryption.communication
    if not comm.enabled:
        raise EnrollmentError(
            f"{_COMM}.enabled is false in edge-security.yaml; enrollment gives the device a "
            "certificate for mutual TLS, so enable it"
        )
    named = {"cert": "certificate_path", "key": "key_path", "ca": "ca_path"}
    out: dict[str, Path] = {}
    for arg, key in named.items():
        value = getattr(comm, key)
        if not value:
            raise EnrollmentError(
                f"{_COMM}.{key} is not set in edge-security.yaml; say where enrollment "
                "writes the device's " + {"cert": "certificate", "key": "key", "ca": "CA"}[arg]
            )
        out[arg] = Path(value)
    return out


def enroll(
    config: Any,
    paths: Any,
    *,
    central_url: str,
    token: str | None = None,
    device_id: str | None = None,
    factory_cert: str | os.PathLike[str] | None = None,
    factory_key: str | os.PathLike[str] | None = None,
    ca_file: str | os.PathLike[str] | None = None,
    ca_sha256: str | None = None,
    force: bool = False,
    allow_insecure: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    clock: Clock | None = None,
) -> dict[str, Any]:
    """Enroll with central; the record written to ``<data>/enrollment.json``."""
    from edge_min.security.quote import load_attestation_key
    from edge_min.security.tls import check_plain_http

    files = communication_paths(config)
    root = Path(paths.root)
    if not force:
        if (root / ENROLLMENT_FILE).exists():
            raise EnrollmentError(
                f"this device is enrolled already ({root / ENROLLMENT_FILE}); pass --force to "
                "enroll again with a new token (central then revokes the old certificate)"
            )
        existing = [str(p) for p in (files["cert"], files["key"]) if p.exists()]
        if existing:
            raise EnrollmentError(
                f"{', '.join(existing)} exist already; pass --force to replace them with the "
                "enrolled certificate and key"
            )
    if (token is None) == (factory_cert is None):
        raise EnrollmentError(
            "enroll with one of --token (from `edge-min central enroll-token`) or "
            "--factory-cert/--factory-key"
        )
    if token is not None and not token.strip():
        raise EnrollmentError(
            "--token is empty; paste the token `edge-min central enroll-token` printed"
        )
    if (factory_cert is None) != (factory_key is None):
        raise EnrollmentError("--factory-cert and --factory-key go together; pass both")
    try:
        check_plain_http(central_url, allow_insecure, key="--central")
    except EdgeError as exc:
        raise EnrollmentError(exc.message) from exc
    base = central_url.rstrip("/")
    ca_pem = _trusted_ca(base, ca_file, ca_sha256, files["ca"], timeout)
    key_pem, csr_pem, public = _key_and_csr(device_id)
    attestation = load_attestation_key(root)
    body = {"csr": csr_pem, "attestation_key": attestation.public.hex()}
    if token is not None:
        body["token"] = token.strip()
    else:
        body.update(_factory_proof(factory_cert, factory_key, csr_pem))
    if device_id:
        body["device_id"] = device_id
    answer = _post(base, ENROLL_PATH, body, ca_pem, timeout)
    record = _check_answer(answer, public, ca_pem, ca_sha256)
    _write(files["key"], key_pem, secret=True)
    _write(files["cert"], answer["certificate"].encode("ascii"))
    _write(files["ca"], answer["ca"].encode("ascii"))
    _write(root / "keys" / "sync.key", bytes.fromhex(answer["sync_key"]), secret=True)
    record["central_url"] = base
    record["enrolled_at"] = iso((clock or SystemClock()).time())
    record["attestation_key"] = attestation.fingerprint
    _write(root / ENROLLMENT_FILE, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())
    return record


# -- trust --------------------------------------------------------------------------------


def _trusted_ca(
    base: str,
    ca_file: str | os.PathLike[str] | None,
    pin: str | None,
    configured: Path,
    timeout: float,
) -> bytes | None:
    """The CA PEM to verify central with (None for a plain-http loopback central)."""
    if ca_file is not None:
        try:
            return Path(ca_file).read_bytes()
        except OSError as exc:
            raise EnrollmentError(f"--ca {ca_file}: {exc}") from exc
    https = urlsplit(base).scheme == "https"
    if pin is not None:
        pin = pin.lower().removeprefix("sha256:")
        if len(pin) != 64 or any(c not in "0123456789abcdef" for c in pin):
            raise EnrollmentError(f"--ca-sha256 {pin!r} must be 64 hex digits (the sha256 pin)")
        # Nothing is trusted yet: fetch the CA unverified, and trust it only if it is pinned.
        fetched = _get(base, CA_PATH, None, timeout, verify=False)
        pem = str(fetched.get("ca") or "").encode("ascii")
        if _fingerprint(pem) != pin:
            raise EnrollmentError(
                f"central's CA hashes to {_fingerprint(pem)}, not the pinned {pin}; this may "
                "not be your central (or the pin was copied wrong): nothing was sent"
            )
        return pem
    if configured.is_file():
        return configured.read_bytes()
    if not https:
        return None
    raise EnrollmentError(
        f"no CA to verify central with: pass --ca-sha256 (printed by `edge-min central "
        f"enroll-token --ca`) or --ca FILE, or put central's CA at {configured}"
    )


def _fingerprint(pem: bytes) -> str:
    try:
        der = ssl.PEM_cert_to_DER_cert(pem.decode("ascii").strip() + "\n")
    except (ValueError, UnicodeDecodeError):
        return "(not a certificate)"
    return hashlib.sha256(der).hexdigest()


def _context(ca_pem: bytes | None, verify: bool = True) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    if ca_pem is not None:
        ctx.load_verify_locations(cadata=ca_pem.decode("ascii"))
    else:
        ctx.load_default_certs()
    return ctx


def _connection(base: str, ca_pem: bytes | None, timeout: float, verify: bool) -> Any:
    parts = urlsplit(base)
    host = parts.hostname or "127.0.0.1"
    if parts.scheme == "https":
        return http.client.HTTPSConnection(
            host, parts.port or 443, context=_context(ca_pem, verify), timeout=timeout
        )
    return http.client.HTTPConnection(host, parts.port or 80, timeout=timeout)


def _exchange(
    base: str,
    method: str,
    path: str,
    body: bytes | None,
    ca: bytes | None,
    timeout: float,
    *,
    verify: bool = True,
) -> dict[str, Any]:
    prefix = urlsplit(base).path.rstrip("/")
    conn = _connection(base, ca, timeout, verify)
    try:
        conn.request(method, prefix + path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        status, raw = resp.status, resp.read()
    except (OSError, http.client.HTTPException) as exc:
        raise EnrollmentError(
            f"cannot reach central at {base}: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        conn.close()
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise EnrollmentError(f"central answered HTTP {status} to {path}: {raw[:200]!r}")
    if status >= 300:
        err = doc.get("error") or {}
        raise EnrollmentError(
            f"central refused the enrollment (HTTP {status}, {err.get('code')}): "
            f"{err.get('message')}",
            remote_code=err.get("code"),
            http_status=status,
        )
    return doc


def _get(base: str, path: str, ca: bytes | None, timeout: float, *, verify: bool) -> dict[str, Any]:
    return _exchange(base, "GET", path, None, ca, timeout, verify=verify)


def _post(base: str, path: str, body: Any, ca: bytes | None, timeout: float) -> dict[str, Any]:
    return _exchange(base, "POST", path, json.dumps(body).encode(), ca, timeout)


# -- key, CSR and the answer ----------------------------------------------------------------


def _key_and_csr(device_id: str | None) -> tuple[bytes, str, bytes]:
    """(key PEM, CSR PEM, public key DER) of a fresh EC P-256 key (pycryptodome only)."""
    from edge_min.security.pkix import new_key_and_csr

    return new_key_and_csr(device_id)


def _factory_proof(cert: Any, key: Any, csr_pem: str) -> dict[str, str]:
    """The factory certificate and its key's signature of the CSR's PEM text."""
    import base64

    from edge_min.security.pkix import PkixError, sign_with_pem

    try:
        pem = Path(cert).read_text()
        signature = sign_with_pem(Path(key).read_bytes(), csr_pem.encode("utf-8"))
    except (OSError, UnicodeDecodeError, PkixError) as exc:
        reason = exc.message if isinstance(exc, PkixError) else str(exc)
        raise EnrollmentError(
            f"cannot use the factory certificate {cert} / key {key}: {reason}"
        ) from exc
    return {
        "factory_certificate": pem,
        "factory_signature": base64.b64encode(signature).decode("ascii"),
    }


def _check_answer(
    answer: dict[str, Any], public: bytes, ca_pem: bytes | None, pin: str | None
) -> dict[str, Any]:
    """The enrollment record from central's answer; EnrollmentError if it does not fit."""
    from edge_min.security.pkix import PkixError, parse_certificate

    for field in ("device_id", "certificate", "ca", "sync_key", "serial"):
        if not isinstance(answer.get(field), str) or not answer[field]:
            raise EnrollmentError(f"central's enrollment answer lacks {field!r}")
    try:
        cert = parse_certificate(answer["certificate"])
    except PkixError as exc:
        raise EnrollmentError(f"central's certificate is malformed: {exc.message}") from exc
    try:
        parse_certificate(answer["ca"])
    except PkixError as exc:
        raise EnrollmentError(f"central's CA certificate is malformed: {exc.message}") from exc
    try:
        sync_key = bytes.fromhex(answer["sync_key"])
    except ValueError as exc:
        raise EnrollmentError(f"central's sync key is not hex: {exc}") from exc
    if cert.public_key_info != public:
        raise EnrollmentError("central's certificate is not for the key this device made")
    if cert.common_name != answer["device_id"]:
        raise EnrollmentError(
            f"central's certificate names {cert.common_name!r}, not the enrolled device id "
            f"{answer['device_id']!r}"
        )
    if len(sync_key) != 32:
        raise EnrollmentError("central's sync key is not 32 bytes")
    ca = answer["ca"].encode("ascii")
    if pin is not None and _fingerprint(ca) != pin.lower().removeprefix("sha256:"):
        raise EnrollmentError("central answered with another CA than the pinned one")
    if ca_pem is not None and _fingerprint(ca) != _fingerprint(ca_pem):
        raise EnrollmentError("central answered with another CA than the one it was verified by")
    return {
        "device_id": answer["device_id"],
        "serial": answer["serial"],
        "not_after": answer.get("not_after"),
        "tags": answer.get("tags") or [],
        "config": answer.get("config") or {},
        "attestation_policy": answer.get("attestation_policy"),
        "ca_sha256": _fingerprint(ca),
        "enrolled_at": None,
    }


def _write(path: Path, data: bytes, *, secret: bool = False) -> None:
    """Write ``path`` whole or not at all (fsync'd, renamed into place); a secret is 0600."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    mode = 0o600 if secret else 0o644
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
