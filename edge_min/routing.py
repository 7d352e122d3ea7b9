"""One router for every HTTP route: path patterns, declared permissions, JSON errors.

Pure (json, re, dataclasses), so subsystems declare their routes next to their own code and
the core imports it anywhere; the HTTP server that feeds it requests is ``edge_min.api.server``
(the local API) and the central's server reuses both.

Each route declares the permission it needs (``read``, ``write``, ``execute``, ``configure``);
a route declared without one is refused (default deny). Who holds which permission is the
``Authorizer``'s business, so access control can tighten without touching the routes.

A handler refuses a request by raising ``ApiError(status, code, message)``; the answer is
``{"error": {"code", "message"}}`` with that status. Any other ``EdgeError`` a handler lets
out is answered with its ``code`` (status from ``_STATUS_BY_CODE``, else 400)::

    EdgeError
    └── ApiError                api_error         an answer with its own status and code
        │                                         (``bad_json``, ``not_found``, ...)
        └── AuthError           auth_error        a 401 or 403 with the headers it carries
                                                  (``unauthorized``, ``token_expired``,
                                                  ``forbidden``, ...) (in edge_min.api.auth)

Their class codes are only defaults: every instance carries the code it answers with.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from edge_min.errors import EdgeError

PERMISSIONS = ("read", "write", "execute", "configure")

# The status each error code maps to when it crosses the HTTP boundary.
_STATUS_BY_CODE = {
    "not_found": 404,
    "config_error": 400,
    "workflow_invalid": 400,
    "workflow_error": 400,
    "agent_error": 400,
    "agent_limit_exceeded": 422,
    "quota_exceeded": 507,
    "missing_dependency": 501,
    "runtime_busy": 409,
    "locked_down": 423,
    "value_rejected": 500,  # a stored value failed authentication at rest: named, not served
    "keys_dropped": 423,  # locked down: encrypted columns are unavailable until an unlock
}


class ApiError(EdgeError):
    """An error answered to an API client with an HTTP status."""

    code = "api_error"

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass
class Request:
    """What a handler sees of an HTTP request."""

    method: str
    path: str
    query: dict[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    params: dict[str, str] = field(default_factory=dict)
    principal: str | None = None  # "cert:<CN>" of a verified client certificate
    cert_serial: str | None = None  # that certificate's serial (lower-case hex), or None
    client: str | None = None  # the peer's IP address
    caller: str | None = None  # who the authorizer found (role and token or certificate)

    def json(self) -> Any:
        """The body as JSON; an empty body is ``None``; a bad body is a 400 naming the problem."""
        if not self.body:
            return None
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, "bad_json", f"request body is not valid JSON: {exc}") from exc


@dataclass
class Response:
    """A handler's answer: a status and a JSON body, or text with its content type."""

    status: int = 200
    body: Any = None
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        """The body as bytes on the wire."""
        if self.content_type == "application/json":
            return (json.dumps(self.body, sort_keys=True, default=str) + "\n").encode()
        if isinstance(self.body, bytes):
            return self.body
        return str(self.body).encode()


Handler = Callable[[Request], Response | Any]


class Authorizer(Protocol):
    """Decides whether a request may use a route needing ``permission``."""

    def authorize(self, request: Request, permission: str) -> None:
        """Return if allowed; raise ApiError 401 (who are you?) or 403 (not allowed) otherwise."""
        ...


class AllowAll:
    """The authorizer used until access control is configured: every declared permission passes."""

    def authorize(self, request: Request, permission: str) -> None:
        """Allow."""
        return None


@dataclass
class Route:
    """A method, a path pattern such as ``/workflows/{name}/run``, its permission and handler."""

    method: str
    pattern: str
    permission: str | None
    handler: Handler
    regex: re.Pattern[str] = field(init=False)

    def __post_init__(self) -> None:
        parts = re.split(r"(\{[a-z_]+\})", self.pattern)
        rx = "".join(f"(?P<{p[1:-1]}>[^/]+)" if p.startswith("{") else re.escape(p) for p in parts)
        self.regex = re.compile(f"^{rx}$")


class CrossOrigin(Protocol):
    """What a router asks about requests from web pages (``edge_min.api.cors.CorsPolicy``)."""

    def check(self, request: Request, methods: list[str]) -> Response | None:
        """A preflight's answer or a refusal, before any route runs; None to go on."""
        ...

    def decorate(self, request: Request, response: Response) -> Response:
        """``response`` with the headers that let an allowed page read it."""
        ...


class Router:
    """Matches requests to routes, checks permissions, and turns every failure into JSON."""

    def __init__(
        self, authorizer: Authorizer | None = None, cors: CrossOrigin | None = None
    ) -> None:
        self.routes: list[Route] = []
        self.authorizer: Authorizer = authorizer or AllowAll()
        #: Requests from web pages of other origins (central serves the browser target).
        self.cors = cors
        self.close_hooks: list[Callable[[], None]] = []

    def add(self, method: str, pattern: str, handler: Handler, *, permission: str | None) -> None:
        """Add a route; ``permission`` must be one of PERMISSIONS, or None (always refused)."""
        if permission is not None and permission not in PERMISSIONS:
            raise ValueError(f"unknown permission {permission!r}; use one of {PERMISSIONS}")
        self.routes.append(Route(method.upper(), pattern, permission, handler))

    def close(self) -> None:
        """Release what the routes hold (per-thread connections)."""
        for hook in self.close_hooks:
            hook()

    def dispatch(self, request: Request) -> Response:
        """Answer one request; never raises."""
        response = self._answer(request)
        return response if self.cors is None else self.cors.decorate(request, response)

    def _answer(self, request: Request) -> Response:
        try:
            if self.cors is not None:
                early = self.cors.check(request, self._methods(request.path))
                if early is not None:
                    return early
            return self._dispatch(request)
        except ApiError as exc:
            resp = error_response(exc.status, exc.code, exc.message)
            resp.headers.update(getattr(exc, "headers", {}))  # e.g. WWW-Authenticate on a 401
            return resp
        except EdgeError as exc:
            return error_response(_STATUS_BY_CODE.get(exc.code, 400), exc.code, exc.message)
        except Exception as exc:  # a bug must not take the runtime down with it
            return error_response(500, "internal_error", f"{type(exc).__name__}: {exc}")

    def _methods(self, path: str) -> list[str]:
        """The methods some route answers on ``path``."""
        return sorted({r.method for r in self.routes if r.regex.match(path)})

    def _dispatch(self, request: Request) -> Response:
        allowed: list[str] = []
        for route in self.routes:
            m = route.regex.match(request.path)
            if not m:
                continue
            if route.method != request.method:
                allowed.append(route.method)
                continue
            if route.permission is None:
                raise ApiError(403, "forbidden", f"{request.method} {request.path} is not open")
            self.authorizer.authorize(request, route.permission)
            request.params = m.groupdict()
            result = route.handler(request)
            return result if isinstance(result, Response) else Response(200, result)
        if allowed:
            resp = error_response(
                405,
                "method_not_allowed",
                f"{request.method} is not allowed on {request.path}; use {', '.join(allowed)}",
            )
            resp.headers["Allow"] = ", ".join(sorted(set(allowed)))
            return resp
        raise ApiError(404, "not_found", f"no route for {request.path}")


def error_response(status: int, code: str, message: str) -> Response:
    """The one JSON error shape: ``{"error": {"code": ..., "message": ...}}``."""
    return Response(status, {"error": {"code": code, "message": message}})
