"""Attestation quotes: what a device signs, how central reads and judges it.

A quote is one CBOR map (``QUOTE_CONTENT_TYPE``)::

    {"v": 1, "alg": "ed25519", "key": <32-byte public key>, "sig": <64-byte signature>,
     "body": <canonical CBOR of {"device_id", "nonce", "measurements", "boot", "time"}>}

The signature covers ``body`` exactly as sent, so central verifies the bytes before it reads
anything inside them. ``measurements`` (required, possibly empty) maps a check name to item
-> sha256 hex (what the tamper subsystem measures); ``boot`` holds the platform's boot facts
(``edge_min.platform.boot``); ``nonce`` is central's challenge, 64 hex digits; ``time`` the
device's wall clock (informational: freshness comes from the nonce).

A ``Policy`` is what central accepts for one device: per check, per item, one or more sha256
values (a check the policy names must match item for item; checks it does not name are not
compared), accepted boot facts by name, and an optional ``max_age`` (seconds) after which
a passing attestation is overdue. ``baseline(quote)`` makes one from a first quote.

The errors::

    EdgeError
    └── AttestationError     attestation_error  attestation could not be carried out
        ├── BadQuote         bad_quote          a quote frame is malformed (names the field)
        └── BadPolicy        bad_attestation_policy
                                                an attestation policy is malformed (names
                                                the field)

Ed25519 comes from ``cryptography`` (else pycryptodome's ``Crypto.Signature.eddsa``), imported
only when a key is used: ``pip install 'edge-min[crypto]'``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_min.errors import EdgeError, MissingDependency
from edge_min.security.keyfile import create_key_file

QUOTE_VERSION = 1
QUOTE_CONTENT_TYPE = "application/cbor"
ALGORITHM = "ed25519"
KEY_FILE = Path("keys") / "attestation.key"
BOOT_FACTS = ("cmdline", "kernel", "secure_boot", "ima", "tpm")
#: The boot facts a baseline adopts: the IMA log grows at run time, so it is not one.
BASELINE_BOOT = ("cmdline", "kernel", "secure_boot")

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class AttestationError(EdgeError):
    """Attestation could not be carried out (no answer from central, a refused quote)."""

    code = "attestation_error"


class BadQuote(AttestationError):
    """A quote frame is malformed; the message names the field."""

    code = "bad_quote"

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"quote field {field_name!r}: {message}", field=field_name)
        self.field = field_name


class BadPolicy(AttestationError):
    """An attestation policy is malformed; the message names the field."""

    code = "bad_attestation_policy"


# -- keys -----------------------------------------------------------------------------------


def _ed25519() -> tuple[Any, Any]:
    """(sign(seed, data), verify(public, data, sig)) from whichever library is installed."""
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import (
            Ed25519PrivateKey,
            Ed25519PublicKey,
        )
    except ImportError:
        pass
    else:

        def sign(seed: bytes, data: bytes) -> bytes:
            return Ed25519PrivateKey.from_private_bytes(seed).sign(data)

        def verify(public: bytes, data: bytes, sig: bytes) -> bool:
            try:
                Ed25519PublicKey.from_public_bytes(public).verify(sig, data)
            except (InvalidSignature, ValueError):
                return False
            return True

        return sign, verify
    try:
        from Crypto.PublicKey import ECC
        from Crypto.Signature import eddsa
    except ImportError as exc:
        raise MissingDependency("cryptography", "crypto", "remote attestation (Ed25519)") from exc

    def sign_cd(seed: bytes, data: bytes) -> bytes:
        key = ECC.construct(curve="Ed25519", seed=seed)
        return bytes(eddsa.new(key, "rfc8032").sign(data))

    def verify_cd(public: bytes, data: bytes, sig: bytes) -> bool:
        try:
            key = eddsa.import_public_key(public)
            eddsa.new(key, "rfc8032").verify(data, sig)
        except ValueError:
            return False
        return True

    return sign_cd, verify_cd


def public_key_of(seed: bytes) -> bytes:
    """The raw 32-byte Ed25519 public key of a private seed."""
    try:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    except ImportError:
        try:
            from Crypto.PublicKey import ECC
        except ImportError as exc:
            raise MissingDependency(
                "cryptography", "crypto", "remote attestation (Ed25519)"
            ) from exc
        return bytes(
            ECC.construct(curve="Ed25519", seed=seed).public_key().export_key(format="raw")
        )
    key = Ed25519PrivateKey.from_private_bytes(seed).public_key()
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class AttestationKey:
    """A device's attestation key: the private seed and its public key."""

    seed: bytes = field(repr=False)
    public: bytes

    def sign(self, data: bytes) -> bytes:
        """The Ed25519 signature of ``data``."""
        sign, _verify = _ed25519()
        return bytes(sign(self.seed, data))

    @property
    def fingerprint(self) -> str:
        """The first 16 hex digits of the public key's sha256, for status and logs."""
        import hashlib

        return hashlib.sha256(self.public).hexdigest()[:16]


def load_attestation_key(root: str | os.PathLike[str]) -> AttestationKey:
    """``<root>/keys/attestation.key`` (a 32-byte Ed25519 seed, 0600, fsync'd), made if absent.

    ``edge-min enroll`` sends its public half, so central registers it at enrollment; a
    device that never enrolled has central learn it from its first quote (trust on first use;
    docs/security.md).
    """
    path = Path(root) / KEY_FILE
    try:
        seed = path.read_bytes()
    except FileNotFoundError:
        seed = create_key_file(path, 32)
    if len(seed) != 32:
        raise AttestationError(
            f"attestation key {path} holds {len(seed)} bytes, not a 32-byte Ed25519 seed; "
            "move it away to make a new one (central must then be told: the old key is "
            "registered there)"
        )
    return AttestationKey(seed, public_key_of(seed))


def verify_signature(public: bytes, data: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is ``public``'s Ed25519 signature of ``data``."""
    _sign, verify = _ed25519()
    return bool(verify(public, data, signature))


# -- quotes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Quote:
    """A parsed quote; ``body`` is the signed bytes."""

    device_id: str
    nonce: str
    measurements: dict[str, dict[str, str]]
    boot: dict[str, Any]
    time: float
    public_key: bytes
    signature: bytes
    body: bytes

    def signed(self) -> bool:
        """Whether the signature over ``body`` verifies with the quote's key."""
        return verify_signature(self.public_key, self.body, self.signature)


def build_quote(
    key: AttestationKey,
    *,
    device_id: str,
    nonce: str,
    measurements: dict[str, dict[str, str]],
    boot: dict[str, Any],
    time: float,
) -> bytes:
    """A signed quote frame (see the module docstring)."""
    import cbor2

    body = cbor2.dumps(
        {
            "device_id": device_id,
            "nonce": nonce,
            "measurements": measurements,
            "boot": boot,
            "time": float(time),
        },
        canonical=True,
    )
    frame = {"v": QUOTE_VERSION, "alg": ALGORITHM, "key": key.public, "sig": key.sign(body)}
    frame["body"] = body
    return bytes(cbor2.dumps(frame, canonical=True))


def _loads(data: bytes, what: str) -> Any:
    """Exactly one CBOR item; BadQuote for garbage, trailing bytes or an empty frame."""
    import io

    import cbor2

    fp = io.BytesIO(data)
    try:
        value = cbor2.CBORDecoder(fp).decode()
    except Exception as exc:  # cbor2 raises several types on garbage; all mean the same
        raise BadQuote(what, f"is not CBOR ({type(exc).__name__}: {exc})") from exc
    if fp.tell() != len(data):
        raise BadQuote(what, f"is not CBOR ({len(data) - fp.tell()} bytes after the first item)")
    if value is getattr(cbor2, "break_marker", None):  # a lone 0xff: not a data item
        raise BadQuote(what, "is not CBOR (a lone break code)")
    return value


def _typed(d: dict[str, Any], name: str, kind: type | tuple[type, ...], where: str) -> Any:
    if name not in d:
        raise BadQuote(f"{where}{name}", "is missing")
    value = d[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise BadQuote(f"{where}{name}", f"must be {names}, not {type(value).__name__}")
    return value


def parse_quote(data: bytes) -> Quote:
    """Read a quote frame; BadQuote names the first field that is wrong. Verifies nothing."""
    frame = _loads(data, "frame")
    if not isinstance(frame, dict):
        raise BadQuote("frame", f"must be a CBOR map, not {type(frame).__name__}")
    version = _typed(frame, "v", int, "")
    if version != QUOTE_VERSION:
        raise BadQuote("v", f"version {version} is not supported (this side reads {QUOTE_VERSION})")
    alg = _typed(frame, "alg", str, "")
    if alg != ALGORITHM:
        raise BadQuote("alg", f"{alg!r} is not supported; use {ALGORITHM!r}")
    public = _typed(frame, "key", bytes, "")
    if len(public) != 32:
        raise BadQuote("key", f"must be a 32-byte Ed25519 public key, not {len(public)} bytes")
    sig = _typed(frame, "sig", bytes, "")
    if len(sig) != 64:
        raise BadQuote("sig", f"must be a 64-byte Ed25519 signature, not {len(sig)} bytes")
    body_bytes = _typed(frame, "body", bytes, "")
    body = _loads(body_bytes, "body")
    if not isinstance(body, dict):
        raise BadQuote("body", f"must be a CBOR map, not {type(body).__name__}")
    device_id = _typed(body, "device_id", str, "body.")
    nonce = _typed(body, "nonce", str, "body.")
    if not _HEX64.match(nonce):
        raise BadQuote("body.nonce", "must be the 64 hex digits central's challenge gave")
    measurements = check_measurements(_typed(body, "measurements", dict, "body."))
    boot = _typed(body, "boot", dict, "body.")
    for name in boot:
        if not isinstance(name, str):
            raise BadQuote("body.boot", f"keys must be strings, not {type(name).__name__}")
    at = _typed(body, "time", (int, float), "body.")
    return Quote(device_id, nonce, measurements, dict(boot), float(at), public, sig, body_bytes)


def check_measurements(raw: dict[Any, Any], where: str = "body.measurements") -> dict[str, Any]:
    """``{check: {item: sha256 hex}}`` or BadQuote naming the bad entry."""
    for check, items in raw.items():
        if not isinstance(check, str):
            raise BadQuote(where, f"check names must be strings, not {type(check).__name__}")
        if not isinstance(items, dict):
            raise BadQuote(f"{where}.{check}", f"must be a map, not {type(items).__name__}")
        for item, digest in items.items():
            if not isinstance(item, str):
                raise BadQuote(f"{where}.{check}", "item names must be strings")
            if not isinstance(digest, str) or not _HEX64.match(digest):
                raise BadQuote(f"{where}.{check}.{item}", "must be a sha256 as 64 hex digits")
    return raw


# -- policies -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """The values central accepts from one device (see the module docstring)."""

    measurements: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)
    boot: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    max_age: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The policy as JSON (single accepted values unwrapped)."""

        def one(values: tuple[Any, ...]) -> Any:
            return values[0] if len(values) == 1 else list(values)

        out: dict[str, Any] = {
            "measurements": {
                c: {i: one(v) for i, v in items.items()} for c, items in self.measurements.items()
            },
            "boot": {k: one(v) for k, v in self.boot.items()},
        }
        if self.max_age is not None:
            out["max_age"] = self.max_age
        return out


def parse_policy(raw: Any) -> Policy:
    """A policy from JSON: ``{"measurements": {check: {item: sha|[sha...]}}, "boot": {name:
    value|[values]}, "max_age": seconds}``; BadPolicy names the bad field."""
    if not isinstance(raw, dict):
        raise BadPolicy(f"attestation_policy must be an object, not {type(raw).__name__}")
    unknown = set(raw) - {"measurements", "boot", "max_age"}
    if unknown:
        raise BadPolicy(
            f"attestation_policy: unknown field(s) {sorted(unknown)}; use measurements, boot, "
            "max_age"
        )
    measurements: dict[str, dict[str, tuple[str, ...]]] = {}
    m = raw.get("measurements") or {}
    if not isinstance(m, dict):
        raise BadPolicy("attestation_policy.measurements must be an object of checks")
    for check, items in m.items():
        if not isinstance(items, dict):
            raise BadPolicy(f"attestation_policy.measurements.{check} must be an object of items")
        measurements[check] = {}
        for item, values in items.items():
            vals = tuple(values) if isinstance(values, list) else (values,)
            if not vals or not all(isinstance(v, str) and _HEX64.match(v) for v in vals):
                raise BadPolicy(
                    f"attestation_policy.measurements.{check}.{item} must be a sha256 (64 hex "
                    "digits) or a list of them"
                )
            measurements[check][item] = vals
    boot = raw.get("boot") or {}
    if not isinstance(boot, dict):
        raise BadPolicy("attestation_policy.boot must be an object of boot facts")
    bad = set(boot) - set(BOOT_FACTS)
    if bad:
        raise BadPolicy(
            f"attestation_policy.boot: unknown fact(s) {sorted(bad)}; use {', '.join(BOOT_FACTS)}"
        )
    max_age = raw.get("max_age")
    if max_age is not None and (
        not isinstance(max_age, int | float) or isinstance(max_age, bool) or max_age <= 0
    ):
        raise BadPolicy("attestation_policy.max_age must be a positive number of seconds")
    return Policy(
        measurements,
        {k: tuple(v) if isinstance(v, list) else (v,) for k, v in boot.items()},
        None if max_age is None else float(max_age),
    )


def baseline(measurements: dict[str, dict[str, str]], boot: dict[str, Any]) -> Policy:
    """The policy that accepts exactly these measurements and boot facts (first use)."""
    return Policy(
        {c: {i: (d,) for i, d in items.items()} for c, items in measurements.items()},
        {k: (boot.get(k),) for k in BASELINE_BOOT if k in boot},
    )


def compare(policy: Policy, measurements: dict[str, Any], boot: dict[str, Any]) -> list[str]:
    """Why these values are not accepted (empty: they are); at most a few reasons per check."""
    reasons: list[str] = []
    for check, accepted in sorted(policy.measurements.items()):
        got = measurements.get(check)
        if got is None:
            reasons.append(f"{check}: not measured")
            continue
        wrong = [i for i in sorted(accepted) if got.get(i) not in accepted[i]]
        changed = [i for i in wrong if i in got]
        missing = [i for i in wrong if i not in got]
        extra = sorted(set(got) - set(accepted))
        for label, items in (("changed", changed), ("missing", missing), ("unexpected", extra)):
            if items:
                shown = ", ".join(items[:5]) + (
                    f" and {len(items) - 5} more" if len(items) > 5 else ""
                )
                reasons.append(f"{check}: {label} {shown}")
    for name, accepted_values in sorted(policy.boot.items()):
        if boot.get(name) not in accepted_values:
            reasons.append(f"boot {name}: {boot.get(name)!r} is not accepted")
    return reasons
