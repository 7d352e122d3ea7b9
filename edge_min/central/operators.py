"""Operator tokens on central: every operator route behind the local API's roles and tokens.

Off by default (as before, any caller may use every route). With an operator key
(``edge-min central serve --operator-key-file PATH``) central installs
``OperatorAuthorizer``, which lets a request through only when one of these holds:

- it is a GET under a part's ``open_prefixes`` (``/health``, the fleet page's static
  files: nothing in them is data);
- it carries no ``Authorization`` header and is one of the parts' ``device_paths``
  (sync push and pull, alerts and metrics in, attestation): a device names itself there
  (``X-Edge-Node`` or its certificate) and the handler checks it (``Central.device_of``);
- it carries ``Authorization: Bearer <token>`` with a token this central's key signed
  (``edge_min.security.tokens``: the same format, expiry and roles as the local API), and
  the token's role holds the route's permission. The roles are the spec's: ``admin``
  (read, write, execute, configure), ``operator`` (read, execute), ``monitor`` (read).

Tokens are made with ``edge-min central token --operator-key-file PATH --role ROLE``
(``issue_operator_token``). A missing, malformed, altered, foreign or expired token is 401
(``unauthorized``, ``token_invalid``, ``token_expired``) with a message naming the fix; a role
without the permission is 403 ``forbidden`` naming the roles that have it. Central keeps no
revocation list: replacing the key file ends every token issued with it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING

from edge_min.api.auth import AuthError
from edge_min.routing import Authorizer, Request

if TYPE_CHECKING:
    from edge_min.central.part import CentralPart
    from edge_min.clock import Clock

__all__ = ["OperatorAuthorizer", "issue_operator_token", "load_operator_key"]

DEFAULT_TTL = 8 * 3600.0  # one working day
TOKEN_HINT = "get one with `edge-min central token --operator-key-file PATH --role ROLE`"
REALM = "edge-min-central"


def load_operator_key(path: str | os.PathLike[str]) -> bytes:
    """The 32-byte operator token key at ``path``, made (mode 0600) on first use."""
    from edge_min.security.tokens import load_key

    return load_key(path, create=True)


def issue_operator_token(
    key: bytes,
    role: str,
    *,
    now: float,
    ttl_seconds: float = DEFAULT_TTL,
    subject: str | None = None,
) -> str:
    """A bearer token for ``role`` (admin, operator, monitor) that this central accepts."""
    from edge_min.security.tokens import issue

    return issue(role, ttl_seconds, key=key, now=now, subject=subject)


class OperatorAuthorizer:
    """The central router's authorizer: device paths by identity, the rest by operator token."""

    def __init__(
        self,
        key: bytes,
        clock: Clock,
        *,
        device_paths: Collection[tuple[str, str]] = (),
        open_prefixes: Iterable[str] = (),
    ) -> None:
        from edge_min.config.security import default_roles

        self.key = key
        self.clock = clock
        self.device_paths = frozenset(device_paths)
        # A device path may be a route pattern: ``{name}`` matches one path segment.
        self._device_patterns = [
            (method, re.compile("^" + re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(path)) + "$"))
            for method, path in self.device_paths
            if "{" in path
        ]
        self.open_prefixes = tuple(open_prefixes)
        self.permissions = {role.name: frozenset(role.permissions) for role in default_roles()}

    @classmethod
    def for_parts(
        cls, key: bytes, clock: Clock, parts: Iterable[type[CentralPart]]
    ) -> OperatorAuthorizer:
        """An authorizer opening what ``parts`` declare as device paths and open prefixes."""
        kinds = tuple(parts)
        return cls(
            key,
            clock,
            device_paths=frozenset().union(*(kind.device_paths for kind in kinds)),
            open_prefixes=[prefix for kind in kinds for prefix in kind.open_prefixes],
        )

    def authorize(self, request: Request, permission: str) -> None:
        """Return if the request may use a route needing ``permission``; AuthError otherwise."""
        if request.method in ("GET", "HEAD") and self._is_open(request.path):
            return
        header = request.headers.get("authorization")
        if header is None and self._is_device_path(request.method, request.path):
            return  # a device call: the handler checks who the device is
        role, who = self._identify(request, header)
        request.caller = f"{role} ({who})"
        granted = self.permissions.get(role)
        if granted is None:
            raise AuthError(
                403,
                "forbidden",
                f"{who} has role {role!r}, which central does not define; {TOKEN_HINT} "
                f"with one of {', '.join(self.permissions)}",
            )
        if permission in granted:
            return
        holders = [name for name, perms in self.permissions.items() if permission in perms]
        raise AuthError(
            403,
            "forbidden",
            f"{request.method} {request.path} needs permission {permission!r}, which role "
            f"{role!r} ({who}) does not have; roles with it: {', '.join(holders)}",
        )

    def _is_device_path(self, method: str, path: str) -> bool:
        if (method, path) in self.device_paths:
            return True
        return any(m == method and rx.match(path) for m, rx in self._device_patterns)

    def _is_open(self, path: str) -> bool:
        return any(path == p or path.startswith(p.rstrip("/") + "/") for p in self.open_prefixes)

    def _identify(self, request: Request, header: str | None) -> tuple[str, str]:
        """The token's role and id; AuthError 401 naming what is wrong with the credentials."""
        from edge_min.security.tokens import TokenError, TokenExpired, verify

        if header is None:
            raise _unauthorized(
                "unauthorized",
                f"{request.method} {request.path} needs an operator token: send "
                f"`Authorization: Bearer <token>`; {TOKEN_HINT}",
            )
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized(
                "unauthorized", f"the Authorization header must be `Bearer <token>`; {TOKEN_HINT}"
            )
        try:
            claims = verify(
                token.strip(), key=self.key, now=self.clock.time(), revoked=lambda _jti: False
            )
        except TokenExpired as exc:
            raise _unauthorized(exc.code, f"{_first_clause(exc.message)}; {TOKEN_HINT}") from exc
        except TokenError as exc:
            raise _unauthorized(
                exc.code,
                "the operator token is not one this central signed (altered, mistyped, or "
                f"made with another key: {_first_clause(exc.message)}); {TOKEN_HINT}",
            ) from exc
        return claims.role, f"token {claims.jti}"


def _first_clause(message: str) -> str:
    """A token error's message without its device-side hint (``edge-min token issue``)."""
    return message.split("; issue a new one")[0]


def _unauthorized(code: str, message: str) -> AuthError:
    """A 401 with RFC 6750's challenge: ``error="invalid_token"`` only when a token came."""
    challenge = f'Bearer realm="{REALM}"'
    if code != "unauthorized":
        challenge += f', error="invalid_token", error_description="{code}"'
    return AuthError(401, code, message, {"WWW-Authenticate": challenge})


class WithEnrollment:
    """Operator tokens on a central that enrolls devices (TLS without a required client
    certificate): a request with neither a client certificate nor a token may only reach
    the enrollment routes (``CertificateRequired``) and the open prefixes (the fleet page's
    files); everything else is ``OperatorAuthorizer``'s to decide."""

    def __init__(self, certificates: Authorizer, operators: OperatorAuthorizer) -> None:
        self.certificates = certificates
        self.operators = operators

    def authorize(self, request: Request, permission: str) -> None:
        """The certificate rule for anonymous requests, then the operator rule."""
        anonymous = request.principal is None and request.headers.get("authorization") is None
        if anonymous and not (
            request.method in ("GET", "HEAD") and self.operators._is_open(request.path)
        ):
            self.certificates.authorize(request, permission)
        self.operators.authorize(request, permission)
