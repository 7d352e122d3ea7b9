"""Signed, expiring, revocable bearer tokens for the local API.

A token is ``em1.<payload>.<signature>``: the payload is base64url (no padding) of compact
JSON ``{"exp", "iat", "jti", "role", "sub"}`` and the signature is base64url of
HMAC-SHA256 over ``em1.<payload>`` with a 32-byte device key kept in
``<data dir>/keys/api-token.key`` (mode 0600, made on first use). The key never leaves the
device, so only this device's runtime and CLI can mint tokens it will accept.

Revocation is by ``jti``: ``RevocationList`` keeps ``token.revoked.<jti> = <exp>`` in the
store's ``meta`` table, so a revocation survives restarts and is seen at once by every
connection to the database.

::

    EdgeError
    └── TokenError              token_error       a token could not be made, read or accepted
        ├── TokenInvalid        token_invalid     bad format, bad signature, or tampered with
        ├── TokenExpired        token_expired     a genuine token past its ``exp``
        ├── TokenRevoked        token_revoked     a genuine token whose ``jti`` was revoked
        └── UnknownRole         unknown_role      no such role in the security config

The local API answers a token that ``verify`` refuses as 401 with the error's code
(``edge_min.api.auth``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import math
import os
import re
import secrets
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from edge_min.clock import iso
from edge_min.errors import EdgeError
from edge_min.security.keyfile import create_key_file

log = logging.getLogger("edge_min.security.tokens")

PREFIX = "em1"
KEY_BYTES = 32
KEY_FILE = Path("keys") / "api-token.key"
REVOKED_PREFIX = "token.revoked."
# Far longer than any real token; refusing early keeps a hostile header from costing work.
MAX_TOKEN_CHARS = 4096
_B64URL = re.compile(r"^[A-Za-z0-9_-]+$")
_JTI = re.compile(r"^[0-9a-f]{24}$")
_ISSUE_HINT = "issue a new one with `edge-min token issue --role ROLE`"


class TokenError(EdgeError):
    """A token could not be made, read or accepted."""

    code = "token_error"


class TokenInvalid(TokenError):
    """Not a token this device signed: bad format, bad signature, or tampered with."""

    code = "token_invalid"


class TokenExpired(TokenError):
    """A genuine token past its expiry time."""

    code = "token_expired"


class TokenRevoked(TokenError):
    """A genuine, unexpired token whose ``jti`` was revoked."""

    code = "token_revoked"


class UnknownRole(TokenError):
    """A token was asked for a role the security config does not define."""

    code = "unknown_role"


@dataclass(frozen=True)
class Claims:
    """What a verified token says: its id, role, subject, issue and expiry times (epoch s)."""

    jti: str
    role: str
    sub: str | None
    iat: int
    exp: int

    def to_dict(self) -> dict[str, Any]:
        """The payload as signed."""
        return {
            "exp": self.exp,
            "iat": self.iat,
            "jti": self.jti,
            "role": self.role,
            "sub": self.sub,
        }


# -- the key ------------------------------------------------------------------------------


def key_path(data_root: str | os.PathLike[str]) -> Path:
    """Where the token key of the data directory ``data_root`` lives."""
    return Path(data_root) / KEY_FILE


def load_key(path: str | os.PathLike[str], *, create: bool = True) -> bytes:
    """The 32-byte signing key at ``path``; made (0600, folder 0700) if absent and ``create``."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        if not create:
            raise TokenError(
                f"no API token key at {p}; it is made by `edge-min token issue` "
                "or the first `edge-min run`"
            ) from None
        data = create_key_file(p, KEY_BYTES)
    if len(data) != KEY_BYTES:
        raise TokenError(
            f"API token key {p} holds {len(data)} bytes, expected {KEY_BYTES}; delete it to "
            "make a new one (every token issued so far stops working)"
        )
    mode = _mode(p)
    if mode is not None and mode & 0o077:
        log.warning("API token key %s is readable by others (mode %o); chmod 600 it", p, mode)
    return data


def _mode(p: Path) -> int | None:
    try:
        return p.stat().st_mode & 0o777
    except OSError:
        return None


# -- issue and verify ---------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(key: bytes, signing_input: str) -> str:
    return _b64(hmac.new(key, signing_input.encode("ascii"), hashlib.sha256).digest())


def default_role_names() -> tuple[str, ...]:
    """The spec's roles, used when no role list is given."""
    from edge_min.config.security import default_roles

    return tuple(r.name for r in default_roles())


def issue(
    role: str,
    ttl_seconds: float,
    *,
    key: bytes,
    now: float,
    subject: str | None = None,
    roles: Collection[str] | None = None,
) -> str:
    """A token for ``role`` valid for ``ttl_seconds`` from ``now``.

    ``roles`` are the names defined in ``access_control.authorization.roles`` (default: the
    spec's admin, operator, monitor); any other role is refused.
    """
    known = tuple(roles) if roles is not None else default_role_names()
    if role not in known:
        raise UnknownRole(
            f"role {role!r} is not defined in access_control.authorization.roles; "
            f"use one of {', '.join(known) or '(none defined)'}"
        )
    if not isinstance(ttl_seconds, int | float) or not ttl_seconds > 0 or math.isinf(ttl_seconds):
        raise TokenError(
            f"token lifetime must be a positive number of seconds, got {ttl_seconds!r}"
        )
    _check_key(key)
    iat = int(now)
    claims = Claims(
        jti=secrets.token_hex(12),
        role=role,
        sub=subject,
        iat=iat,
        exp=max(iat + 1, math.ceil(now + ttl_seconds)),
    )
    payload = json.dumps(claims.to_dict(), sort_keys=True, separators=(",", ":"))
    signing_input = f"{PREFIX}.{_b64(payload.encode())}"
    return f"{signing_input}.{_sign(key, signing_input)}"


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) < KEY_BYTES:
        raise TokenError(f"the token key must be at least {KEY_BYTES} bytes; use load_key(path)")


def decode(token: str, *, key: bytes) -> Claims:
    """The claims of a token whose signature is good, expired or not; TokenInvalid otherwise."""
    _check_key(key)
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
        raise TokenInvalid("not an edge-min token: empty, not text, or too long")
    parts = token.strip().split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise TokenInvalid(
            f"not an edge-min token: expected {PREFIX}.<payload>.<signature>; {_ISSUE_HINT}"
        )
    _, payload_b64, signature = parts
    if not (_B64URL.match(payload_b64) and _B64URL.match(signature)):
        raise TokenInvalid("token is not base64url text; it was damaged in transit or edited")
    expected = _sign(key, f"{PREFIX}.{payload_b64}")
    # Compare the canonical encodings in constant time: no timing oracle, no padding tricks.
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise TokenInvalid(
            "token signature does not match: it was altered, or signed by another device's key "
            f"(or before the key was replaced); {_ISSUE_HINT}"
        )
    try:
        data = json.loads(_unb64(payload_b64))
    except (ValueError, binascii.Error) as exc:
        raise TokenInvalid(f"token payload is not JSON: {exc}") from exc
    return _claims(data)


def _claims(data: Any) -> Claims:
    if not isinstance(data, dict):
        raise TokenInvalid("token payload is not a JSON object")
    for name, kinds in (("jti", str), ("role", str), ("iat", int), ("exp", int)):
        value = data.get(name)
        if not isinstance(value, kinds) or isinstance(value, bool):
            raise TokenInvalid(f"token payload field {name!r} is missing or has the wrong type")
    sub = data.get("sub")
    if sub is not None and not isinstance(sub, str):
        raise TokenInvalid("token payload field 'sub' must be text or null")
    return Claims(jti=data["jti"], role=data["role"], sub=sub, iat=data["iat"], exp=data["exp"])


def verify(
    token: str,
    *,
    key: bytes,
    now: float,
    revoked: Callable[[str], bool],
) -> Claims:
    """The claims of a genuine, unexpired, unrevoked token; a TokenError subclass otherwise."""
    claims = decode(token, key=key)
    if now >= claims.exp:
        raise TokenExpired(
            f"token {claims.jti} (role {claims.role}) expired at {iso(claims.exp)}, "
            f"{now - claims.exp:.0f} s ago; {_ISSUE_HINT}"
        )
    if revoked(claims.jti):
        raise TokenRevoked(f"token {claims.jti} (role {claims.role}) was revoked; {_ISSUE_HINT}")
    return claims


# -- revocation ---------------------------------------------------------------------------


class MetaLike(Protocol):
    """The slice of ``store.meta`` (``MetaRepo``) revocation needs."""

    def get(self, key: str, default: str | None = None) -> str | None:
        """The value for ``key``, or ``default``."""
        ...

    def set(self, key: str, value: str) -> None:
        """Set ``key`` to ``value``."""
        ...


class RevocationList:
    """Revoked token ids in the ``meta`` table: ``token.revoked.<jti>`` = expiry (epoch s).

    Callable, so an instance can be passed straight to ``verify(revoked=...)``.
    """

    def __init__(self, meta: MetaLike) -> None:
        self.meta = meta

    def revoke(self, jti: str, exp: int | None = None) -> None:
        """Revoke ``jti``; ``exp`` (when known) says when the entry stops mattering."""
        if not _JTI.match(jti):
            raise TokenInvalid(
                f"{jti!r} is not a token id (24 hex digits) or an edge-min token "
                f"({PREFIX}.<payload>.<signature>)"
            )
        self.meta.set(REVOKED_PREFIX + jti, "" if exp is None else str(exp))

    def is_revoked(self, jti: str) -> bool:
        """Whether ``jti`` was revoked."""
        return self.meta.get(REVOKED_PREFIX + jti) is not None

    def __call__(self, jti: str) -> bool:
        return self.is_revoked(jti)


def revoke_token_or_id(
    text: str, *, key: bytes, revocations: RevocationList
) -> tuple[str, int | None]:
    """Revoke a whole token (its signature must be good) or a bare jti; returns (jti, exp)."""
    text = text.strip()
    if text.startswith(PREFIX + "."):
        claims = decode(text, key=key)
        revocations.revoke(claims.jti, claims.exp)
        return claims.jti, claims.exp
    revocations.revoke(text)
    return text, None
