"""Enrollment on central: one-time claim tokens, CSR signing, and what a device needs to sync.

Routes::

    POST /api/enroll/tokens   an operator makes a claim token (JSON, every field optional:
                              device_id, ttl ("1h" or seconds; default 1h), tags [..],
                              config {..}, attestation_policy {..}); 201
                              {"token", "expires_at", "device_id", "tags", "ca_sha256"}
    GET  /api/enroll/ca       central's CA certificate {"ca": PEM, "sha256"}: a device fetches
                              it before it trusts anything, and pins it with --ca-sha256
    POST /api/enroll          a device presents {"token", "csr" (PEM), "attestation_key"
                              (64 hex, its Ed25519 public key), "device_id" (optional)}
                              (or, instead of the token, "factory_certificate" (PEM) and
                              "factory_signature" (base64, the CSR's PEM signed by the
                              factory certificate's key): --factory-ca) and
                              gets {"device_id", "certificate", "ca", "ca_sha256", "serial",
                              "not_after", "sync_key" (64 hex), "config", "tags",
                              "attestation_policy"}; a token without "csr" (a device that
                              cannot make one: the MCU shim) gets the sync key and no
                              certificate ("certificate" null): its frames, sealed with
                              that key, are what identifies it

A token is ``emt_`` + 32 random URL-safe characters; central keeps only its sha256. It works
once and until its ``ttl`` runs out (central's clock). The device id is the token's when the
token names one (a CSR CN or ``device_id`` that disagrees is 403 ``enroll_device_mismatch``),
else the request's ``device_id``, else the CSR's CN. Using the token up, signing, registering
the device with a fresh per-device sync key, its certificate serial, tags, config fragment
and attestation key (``source: enrollment``, so no trust on first use) is one transaction.

A factory certificate (``edge_min.central.ca.FactoryCA``) names the device by its CN; it
enrolls a device that holds no valid certificate and was not decommissioned (else 403
``enroll_already_enrolled`` / ``enroll_device_retired``: an operator's token re-enrolls it);
one not issued by the factory CA, expired, or whose signature of the CSR does not verify is
403 ``factory_certificate_refused``.

Refusals: a malformed body (unknown field, bad CSR, bad key, bad ttl) is 400
``bad_enrollment`` naming the field; a token that is unknown, used or expired is 403
``enroll_token_unknown`` / ``enroll_token_used`` / ``enroll_token_expired``; a central
without an enrollment CA (``--enroll-ca-key``) answers 501 ``enrollment_disabled``.

Revocation (``refused_peer``): a certificate central issued and then revoked (decommission,
re-enrollment) is refused right after the TLS handshake: the connection is closed before a
request is read. ``device_of`` refuses it too, 403 ``certificate_revoked``, for a central
behind a TLS-terminating proxy or a connection that was open when it was revoked.

With enrollment on, central's TLS asks for client certificates without requiring them
(``CERT_OPTIONAL``) so a device without one can reach these routes; every other route then
requires a verified certificate (403 ``client_certificate_required``, ``CertificateRequired``),
which is what ``CERT_REQUIRED`` gave before.
"""

from __future__ import annotations

import hashlib
import secrets
import ssl
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from edge_min.central.part import Central, CentralPart, json_object
from edge_min.clock import iso
from edge_min.routing import ApiError, Request, Response
from edge_min.subsystem import ApiRoute

if TYPE_CHECKING:
    from edge_min.central.ca import CentralCA
    from edge_min.central.store import CentralStore

TOKEN_PREFIX = "emt_"
DEFAULT_TTL = 3600.0
MAX_TTL = 30 * 86400.0
#: The routes a client without a certificate may call when enrollment is on.
OPEN_PATHS = frozenset({"/api/enroll", "/api/enroll/ca", "/health"})

_TOKEN_FIELDS = ("device_id", "ttl", "tags", "config", "attestation_policy")
_ENROLL_FIELDS = (
    "token",
    "csr",
    "attestation_key",
    "device_id",
    "factory_certificate",
    "factory_signature",
)


def token_hash(token: str) -> str:
    """What central stores of a token: its sha256, hex."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def parse_ttl(value: Any, field: str = "ttl") -> float:
    """A ttl of seconds or a duration ("1h", "30m"); ValueError naming ``field``."""
    from edge_min.units import parse_duration

    if isinstance(value, bool) or value is None:
        raise ValueError(f"{field} {value!r} must be a duration such as 1h or 30m")
    try:
        ttl = float(value) if isinstance(value, int | float) else parse_duration(str(value))
    except ValueError as exc:
        raise ValueError(f"{field} {value!r}: {exc}; use e.g. 1h, 30m or 86400") from exc
    if not 0 < ttl <= MAX_TTL:
        raise ValueError(f"{field} {value!r} must be above 0 and at most 30 days")
    return ttl


def make_token(
    store: CentralStore,
    *,
    ttl: float = DEFAULT_TTL,
    device_id: str | None = None,
    tags: Sequence[str] = (),
    config: dict[str, Any] | None = None,
    attestation_policy: dict[str, Any] | None = None,
) -> tuple[str, float]:
    """A new claim token (stored as its hash) and when it expires; ValueError names a field."""
    from edge_min.central.model import BadBatch, check_node

    if device_id is not None:
        try:
            check_node(device_id, "device_id")
        except BadBatch as exc:
            raise ValueError(exc.message) from exc
        from edge_min.security.certs import DEVICE_ID_RE

        if not DEVICE_ID_RE.match(device_id):
            raise ValueError(
                f"device_id {device_id!r} cannot be a certificate name: use 1-64 letters, "
                "digits, '.', '_' or '-'"
            )
    for tag in tags:
        if not isinstance(tag, str) or not tag or len(tag) > 64:
            raise ValueError(f"tags: {tag!r} must be a non-empty string of at most 64 characters")
    if config is not None:
        if not isinstance(config, dict):
            raise ValueError(
                f"config must be an edge-config.yaml fragment (an object), not {config!r}"
            )
        from edge_min.config import parse_config
        from edge_min.errors import ConfigError

        try:  # checked here, so a device never enrolls with one that cannot load
            parse_config(config, source="config")
        except ConfigError as exc:
            raise ValueError(f"config: {exc}") from None
    if attestation_policy is not None:
        from edge_min.security.quote import BadPolicy, parse_policy

        try:
            attestation_policy = parse_policy(attestation_policy).to_dict()
        except BadPolicy as exc:
            raise ValueError(f"attestation_policy: {exc.message}") from exc
    token = TOKEN_PREFIX + secrets.token_urlsafe(24)
    expires = store.create_enroll_token(
        token_hash(token),
        ttl=ttl,
        device_id=device_id,
        tags=list(tags),
        config=config,
        attestation_policy=attestation_policy,
    )
    return token, expires


class Enrollment(CentralPart):
    """Claim tokens for operators; CSR in, certificate, sync key and policy out for devices."""

    name = "enrollment"
    # A device enrolls with no certificate and no operator token yet: its claim token (or
    # factory certificate) is the credential, checked by the handler.
    device_paths = frozenset({("POST", "/api/enroll")})
    open_prefixes = ("/api/enroll/ca",)  # central's CA certificate: public

    def routes(self) -> Sequence[ApiRoute]:
        """Tokens, the CA, and the enrollment itself."""
        return (
            ApiRoute("POST", "/api/enroll/tokens", "configure", self.new_token),
            ApiRoute("GET", "/api/enroll/ca", "read", self.ca),
            ApiRoute("POST", "/api/enroll", "write", self.enroll),
        )

    def _ca(self) -> CentralCA:
        ca = self.central.ca
        if ca is None:
            raise ApiError(
                501,
                "enrollment_disabled",
                "this central has no enrollment CA; start it with --tls-ca CA.crt "
                "--enroll-ca-key CA.key",
            )
        return ca

    def new_token(self, request: Request) -> Response:
        """Make a one-time claim token."""
        ca = self._ca()
        body = json_object(request)
        _refuse_unknown(body, _TOKEN_FIELDS)
        try:
            ttl = parse_ttl(body["ttl"]) if "ttl" in body else DEFAULT_TTL
            tags = body.get("tags") or []
            if not isinstance(tags, list):
                raise ValueError(f"tags must be a list of strings, not {tags!r}")
            token, expires = make_token(
                self.central.store,
                ttl=ttl,
                device_id=body.get("device_id"),
                tags=tags,
                config=body.get("config"),
                attestation_policy=body.get("attestation_policy"),
            )
        except ValueError as exc:
            raise ApiError(400, "bad_enrollment", str(exc)) from exc
        return Response(
            201,
            {
                "token": token,
                "expires_at": iso(expires),
                "device_id": body.get("device_id"),
                "tags": sorted(set(tags)),
                "ca_sha256": ca.fingerprint,
            },
        )

    def ca(self, request: Request) -> dict[str, Any]:
        """Central's CA certificate and its fingerprint."""
        ca = self._ca()
        return {"ca": ca.pem.decode("ascii"), "sha256": ca.fingerprint}

    def enroll(self, request: Request) -> dict[str, Any]:
        """Claim a token with a CSR: the device's certificate, CA, sync key, config, policy."""
        from edge_min.central.ca import BadCsr, FactoryRefused, csr_common_name
        from edge_min.central.enrollment_store import EnrollmentRefused
        from edge_min.errors import EdgeError

        ca = self._ca()
        body = json_object(request)
        _refuse_unknown(body, _ENROLL_FIELDS)
        token = body.get("token")
        factory = body.get("factory_certificate")
        if factory is not None and token is not None:
            raise ApiError(
                400,
                "bad_enrollment",
                "send token or factory_certificate (with factory_signature), not both",
            )
        if factory is None and (not isinstance(token, str) or not token.startswith(TOKEN_PREFIX)):
            raise ApiError(
                400,
                "bad_enrollment",
                f"token {_shown(token)} must be a claim token string starting {TOKEN_PREFIX!r} "
                "(from `edge-min central enroll-token`)",
            )
        csr = body.get("csr")
        if csr is None and factory is not None:
            raise ApiError(
                400,
                "bad_enrollment",
                "csr: a factory certificate enrolls with a CSR (its signature covers it)",
            )
        try:
            asked_cn = None if csr is None else csr_common_name(csr)
        except BadCsr as exc:
            raise ApiError(400, "bad_enrollment", exc.message) from exc
        asked = body.get("device_id")
        if asked is not None and not isinstance(asked, str):
            raise ApiError(400, "bad_enrollment", f"device_id {asked!r} must be a string")
        if asked and asked_cn and asked != asked_cn:
            raise ApiError(
                400,
                "bad_enrollment",
                f"device_id {asked!r} and the csr's CN {asked_cn!r} disagree; send one name",
            )
        key = _attestation_key(body.get("attestation_key"))
        requested = asked or asked_cn
        factory_device = None
        if factory is not None:
            if self.central.factory_ca is None:
                raise ApiError(
                    403,
                    "factory_certificate_refused",
                    "this central accepts no factory certificates (no --factory-ca); "
                    "enroll with a claim token",
                )
            try:
                factory_device = self.central.factory_ca.device_of(
                    factory,
                    body.get("factory_signature"),
                    str(csr).encode("utf-8"),
                    self.central.clock.time(),
                )
            except FactoryRefused as exc:
                raise ApiError(403, exc.code, exc.message) from exc

        def issue(bound: str | None) -> tuple[str, str | None, str | None, str | None]:
            if bound and requested and bound != requested:
                raise EnrollmentRefused(
                    "enroll_device_mismatch",
                    f"the claim token is for device {bound!r}, not {requested!r}",
                )
            device_id = bound or requested
            if not device_id:
                raise ApiError(
                    400,
                    "bad_enrollment",
                    "device_id: neither the token nor the request names the device; pass "
                    "--device-id or make the token with --device-id",
                )
            if csr is None:  # key-only enrollment: no certificate
                return device_id, None, None, None
            try:
                pem, serial, not_after = ca.sign_csr(str(csr), device_id)
            except EdgeError as exc:
                raise ApiError(400, "bad_enrollment", exc.message) from exc
            return device_id, pem, serial, not_after

        sync_key = secrets.token_bytes(32)
        try:
            result = self.central.store.enroll(
                None if factory_device else token_hash(str(token)),
                issue,
                sync_key=sync_key,
                attestation_key=key,
                factory_device=factory_device,
            )
        except EnrollmentRefused as exc:
            raise ApiError(403, exc.code, exc.message) from exc
        return {
            **result,
            "ca": ca.pem.decode("ascii"),
            "ca_sha256": ca.fingerprint,
            "sync_key": sync_key.hex(),
            "attestation_key_registered": key is not None,
        }


class CertificateRequired:
    """The central's authorizer with enrollment on: no client certificate, only OPEN_PATHS."""

    def authorize(self, request: Request, permission: str) -> None:
        """403 ``client_certificate_required`` for a cert-less request off the open paths."""
        if request.principal is None and request.path not in OPEN_PATHS:
            raise ApiError(
                403,
                "client_certificate_required",
                f"{request.method} {request.path} needs a client certificate signed by "
                "central's CA; a device gets one with `edge-min enroll`",
            )


def refused_peer(central: Central, tls: ssl.SSLSocket) -> str | None:
    """Why a TLS peer is refused after its handshake (its certificate was revoked), or None."""
    from edge_min.central.enrollment_store import serial_hex

    serial = (tls.getpeercert() or {}).get("serialNumber")
    if not serial:
        return None
    hexed = serial_hex(str(serial))
    if central.store.certificate_revoked(hexed):
        return f"certificate serial {hexed} was revoked"
    return None


def check_not_revoked(central: Central, request: Request) -> None:
    """403 ``certificate_revoked`` when the request's client certificate was revoked."""
    if request.cert_serial and central.store.certificate_revoked(request.cert_serial):
        raise ApiError(
            403,
            "certificate_revoked",
            f"the client certificate (serial {request.cert_serial}) was revoked when its "
            "device was decommissioned or re-enrolled; enroll again with a new token",
        )


def _attestation_key(value: Any) -> str | None:
    if value is None:
        return None
    try:
        ok = isinstance(value, str) and len(bytes.fromhex(value)) == 32
    except ValueError:
        ok = False
    if not ok:
        raise ApiError(
            400,
            "bad_enrollment",
            f"attestation_key {_shown(value)} must be 64 hex digits (the device's Ed25519 "
            "public key, keys/attestation.key)",
        )
    return str(value).lower()


def _refuse_unknown(body: dict[str, Any], known: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(known))
    if unknown:
        raise ApiError(
            400,
            "bad_enrollment",
            f"unknown field(s) {unknown}; use {', '.join(known)}",
        )


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
