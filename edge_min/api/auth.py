"""Access control for the local API: bearer tokens and client certificates mapped to roles.

``TokenAuthorizer`` is the router's ``Authorizer``. Who the caller is comes from what
``access_control.authentication.method`` accepts:

- ``certificate`` (the spec's): the verified client certificate the server puts in
  ``request.principal`` as ``cert:<CN>``, mapped to a role by ``certificate_roles``; the
  device's own certificate (``encryption.communication.certificate_path``) is admin unless
  mapped otherwise: whoever holds the device key administers it, as with the token key. A
  bearer token is refused (401 ``token_not_accepted``). The API serves TLS.
- ``token``: the ``Authorization: Bearer <token>`` header (``edge_min.security.tokens``)
  only; a client certificate grants nothing.
- ``any``: either; a request with both is judged by its token.
 What the caller may do
comes from ``access_control.authorization``: each role's permissions, and
``default_policy`` for the rest:

- ``deny`` (the spec's): a role lacking the route's permission gets 403.
- ``allow``: any authenticated caller passes; a caller who is not authenticated still gets
  401, so ``allow`` never opens the API to anonymous clients.

401 answers carry codes ``unauthorized`` (no credentials), ``token_not_accepted``,
``token_invalid``, ``token_expired`` or ``token_revoked``; 403 answers carry ``forbidden``.
``GET /health`` and ``GET /sync/status`` are open without credentials when
``api.health_open`` is true (the spec's own health check curls /sync/status without a token).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping
from typing import Any

from edge_min.clock import Clock
from edge_min.config.security import SecurityConfig
from edge_min.errors import ConfigError
from edge_min.routing import ApiError, Request, Router
from edge_min.security.tokens import (
    RevocationList,
    TokenError,
    key_path,
    load_key,
    verify,
)

REALM = "edge-min"
CERT_PREFIX = "cert:"
# Proposed config key for the certificate → role map (not in the spec's schema yet).
CERT_ROLES_KEY = "access_control.authentication.certificate_roles"
_TOKEN_HINT = "get one with `edge-min token issue --role ROLE`"


# Read-only status routes a device's own health checks call without a token.
OPEN_PATHS = frozenset({"/health", "/sync/status"})


class AuthError(ApiError):
    """A 401 or 403 with the headers it should carry (``WWW-Authenticate`` on 401)."""

    code = "auth_error"  # a default for the registry: each instance answers with its own code

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(status, code, message)
        self.headers: dict[str, str] = dict(headers or {})


def _unauthorized(code: str, message: str) -> AuthError:
    """A 401 with RFC 6750's challenge: ``error="invalid_token"`` only when a token came."""
    challenge = f'Bearer realm="{REALM}"'
    if code != "unauthorized":
        challenge += f', error="invalid_token", error_description="{code}"'
    return AuthError(401, code, message, {"WWW-Authenticate": challenge})


def _forbidden(message: str) -> AuthError:
    return AuthError(403, "forbidden", message)


class TokenAuthorizer:
    """Authenticates a request by bearer token or client certificate and checks its role."""

    def __init__(
        self,
        security_config: SecurityConfig,
        key: bytes,
        clock: Clock,
        is_revoked: Callable[[str], bool],
        health_open: bool = True,
        *,
        cert_roles: Mapping[str, str] | None = None,
    ) -> None:
        ac = security_config.access_control
        self.key = key
        self.clock = clock
        self.is_revoked = is_revoked
        self.health_open = health_open
        self.default_policy = ac.authorization.default_policy
        self.method = ac.authentication.method
        self.accept_certificates = self.method in ("certificate", "any")
        self.accept_tokens = self.method in ("token", "any")
        self.permissions: dict[str, frozenset[str]] = {
            role.name: frozenset(role.permissions) for role in ac.authorization.roles
        }
        self.cert_roles = dict(cert_roles or {})
        for cn, role in self.cert_roles.items():
            if role not in self.permissions:
                raise ConfigError(
                    f"certificate {cn!r} maps to role {role!r}, which is not defined; "
                    f"use one of {', '.join(self.permissions)}",
                    path=f"{CERT_ROLES_KEY}.{cn}",
                    value=role,
                )

    def authorize(self, request: Request, permission: str) -> None:
        """Return if the caller's role holds ``permission``; raise AuthError 401/403 otherwise."""
        if self.health_open and permission == "read" and request.path in OPEN_PATHS:
            return
        role, who = self.identify(request)
        request.caller = f"{role} ({who})"
        granted = self.permissions.get(role)
        if granted is None:
            raise _forbidden(
                f"{who} has role {role!r}, which access_control.authorization.roles no longer "
                f"defines; {_TOKEN_HINT} for one of {', '.join(self.permissions)}"
            )
        if permission in granted or self.default_policy == "allow":
            return
        holders = [name for name, perms in self.permissions.items() if permission in perms]
        raise _forbidden(
            f"{request.method} {request.path} needs permission {permission!r}, which role "
            f"{role!r} ({who}) does not have; roles with it: {', '.join(holders) or 'none'}"
        )

    def identify(self, request: Request) -> tuple[str, str]:
        """The caller's role and a description of them; AuthError 401 if there is none."""
        header = _header(request.headers, "authorization")
        if header is not None and not self.accept_tokens:
            raise AuthError(
                401,
                "token_not_accepted",
                "access_control.authentication.method is certificate: this API takes client "
                "certificates, not bearer tokens; connect over TLS with a certificate that "
                f"{CERT_ROLES_KEY} maps to a role (or set method: any to take both)",
            )
        if header is not None:
            scheme, _, token = header.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise _unauthorized(
                    "unauthorized",
                    "the Authorization header must be `Bearer <token>`; " + _TOKEN_HINT,
                )
            try:
                claims = verify(
                    token.strip(), key=self.key, now=self.clock.time(), revoked=self.is_revoked
                )
            except TokenError as exc:
                raise _unauthorized(exc.code, exc.message) from exc
            return claims.role, f"token {claims.jti}"
        principal = request.principal or ""
        if self.accept_certificates and principal.startswith(CERT_PREFIX):
            cn = principal[len(CERT_PREFIX) :]
            role = self.cert_roles.get(cn)
            if role is None:
                raise _forbidden(
                    f"client certificate {cn!r} is verified but maps to no role; add it to "
                    f"{CERT_ROLES_KEY}"
                )
            return role, f"certificate {cn!r}"
        if not self.accept_tokens:
            raise AuthError(
                401,
                "unauthorized",
                f"{request.method} {request.path} needs a client certificate (authentication "
                f"method certificate) that {CERT_ROLES_KEY} maps to a role",
            )
        raise _unauthorized(
            "unauthorized",
            f"{request.method} {request.path} needs credentials: send `Authorization: Bearer "
            f"<token>`; {_TOKEN_HINT}",
        )


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    return next((v for k, v in headers.items() if k.lower() == name), None)


# -- wiring to a runtime ------------------------------------------------------------------


class _ThreadRevocations:
    """Revocation lookups on a connection of the calling thread (SQLite's thread rule)."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.local = threading.local()
        self.opened: list[Any] = []
        self.lock = threading.Lock()

    def __call__(self, jti: str) -> bool:
        revocations = getattr(self.local, "revocations", None)
        if revocations is None:
            if not self.runtime.threaded:
                return RevocationList(self.runtime.store.meta).is_revoked(jti)
            store = self.runtime.open_store()
            with self.lock:
                self.opened.append(store)
            revocations = self.local.revocations = RevocationList(store.meta)
        return bool(revocations.is_revoked(jti))

    def close(self) -> None:
        with self.lock:
            for store in self.opened:
                # Closing another thread's connection may be refused; the OS reclaims it at exit.
                with contextlib.suppress(Exception):
                    store.close()
            self.opened.clear()


def install_authorizer(
    router: Router, runtime: Any, *, cert_roles: Mapping[str, str] | None = None
) -> TokenAuthorizer:
    """Put a TokenAuthorizer for ``runtime``'s config, key and store on ``router``."""
    revocations = _ThreadRevocations(runtime)
    security = runtime.config.security_config
    if security.access_control.authentication.method != "token":
        from edge_min.security.certs import certificate_cn

        comm = security.encryption.communication
        own = certificate_cn(comm.certificate_path) if comm.enabled else None
        if own is not None:  # the device's own certificate administers it, unless mapped
            cert_roles = {own: "admin", **(cert_roles or {})}
    authorizer = TokenAuthorizer(
        runtime.config.security_config,
        load_key(key_path(runtime.paths.root)),
        runtime.clock,
        revocations,
        runtime.config.api.health_open,
        cert_roles=cert_roles,
    )
    router.authorizer = authorizer
    router.close_hooks.append(revocations.close)
    return authorizer
