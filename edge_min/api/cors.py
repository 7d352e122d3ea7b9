"""Cross-origin requests (CORS) for pages served from another origin: the browser target.

A page of the browser target (``dist/web/``, docs/browser.md) served from
``https://app.example.com`` syncs with central on ``https://central.example.com:8765``: another
origin, so the browser asks first (a *preflight* ``OPTIONS`` with ``Origin`` and
``Access-Control-Request-Method``/``-Headers``) and reads an answer only when it carries
``Access-Control-Allow-Origin`` for the page's origin. ``CorsPolicy`` decides both, from the
origins an operator allowed (``edge-min central serve --allowed-origin ORIGIN``):

- an allowed origin gets its preflight answered ``204`` with the methods of the route, the
  request headers the protocol uses (``ALLOWED_HEADERS``) and ``Access-Control-Max-Age``,
  and every answer to it carries ``Access-Control-Allow-Origin: <origin>``, ``Vary: Origin``
  and the response headers a page may read (``EXPOSED_HEADERS``);
- the server's own origin (the fleet page's ``fetch`` calls, ``Origin`` equal to the
  ``Host`` it was sent to) is always allowed and needs no CORS headers;
- any other origin is refused with ``403 origin_not_allowed`` naming the origin and the
  option that allows it, *before* the route runs, for every method: a page must not be able
  to make central act (a POST needs no preflight when it looks like a form) or read it.

Requests without ``Origin`` (devices, scripts, curl) are not affected. Credentials are
headers (``Authorization``, ``X-Edge-Node``), never cookies, so ``Allow-Credentials`` is not
sent and ``*`` is refused as an origin: name each page's origin.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from edge_min.errors import UsageError

if TYPE_CHECKING:
    from edge_min.routing import Request, Response

#: Request headers a cross-origin page may send (lower case): the sync protocol's and the API's.
ALLOWED_HEADERS = (
    "authorization",
    "content-type",
    "range",
    "x-edge-node",
    "x-edge-sync-accept",
)
#: Response headers a cross-origin page may read, beyond the CORS-safelisted ones.
EXPOSED_HEADERS = ("Content-Range", "Retry-After", "WWW-Authenticate", "Allow")
MAX_AGE = 600  # seconds a browser may cache a preflight answer


def parse_origin(value: str, field: str = "--allowed-origin") -> str:
    """``value`` as a serialized origin (``scheme://host[:port]``, lower case); a UsageError
    naming ``field``, the value and the fix otherwise."""
    text = value.strip()
    fix = f"give {field} an origin such as https://app.example.com or http://localhost:8080"
    if text == "*":
        raise UsageError(f"{field} = '*': any page could drive central; {fix}, once per page")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{field} = {value!r} is not an http(s) origin; {fix}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise UsageError(f"{field} = {value!r}: an origin has no path, query or user; {fix}")
    try:
        port = parts.port
    except ValueError:
        raise UsageError(f"{field} = {value!r} has a bad port; {fix}") from None
    default = 443 if parts.scheme == "https" else 80
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    return f"{parts.scheme}://{host}" + ("" if port in (None, default) else f":{port}")


@dataclass(frozen=True)
class CorsPolicy:
    """The origins allowed to call this server from a page, and the answers they get."""

    origins: tuple[str, ...] = ()

    @classmethod
    def of(cls, origins: Iterable[str], field: str = "--allowed-origin") -> CorsPolicy:
        """A policy for ``origins`` (each checked by ``parse_origin``)."""
        return cls(tuple(dict.fromkeys(parse_origin(o, field) for o in origins)))

    def check(self, request: Request, methods: Sequence[str]) -> Response | None:
        """The answer for a request from a page before its route runs: a preflight's, or a
        refusal of an origin not allowed; None when the route should answer."""
        from edge_min.routing import Response, error_response

        origin = request.headers.get("origin")
        if origin is None or _same_origin(origin, request):
            return None
        if origin not in self.origins:
            return error_response(
                403,
                "origin_not_allowed",
                f"requests from the page origin {origin!r} are not allowed here; allow it "
                f"with `edge-min central serve --allowed-origin {origin}`",
            )
        if request.method != "OPTIONS" or "access-control-request-method" not in request.headers:
            return None
        wanted = request.headers["access-control-request-method"].upper()
        if wanted not in methods:
            return error_response(
                405,
                "method_not_allowed",
                f"{wanted} is not allowed on {request.path}; use {', '.join(methods) or 'none'}",
            )
        asked = request.headers.get("access-control-request-headers", "")
        names = [h.strip().lower() for h in asked.split(",") if h.strip()]
        refused = [h for h in names if h not in ALLOWED_HEADERS]
        if refused:
            return error_response(
                403,
                "header_not_allowed",
                f"a page may not send the header(s) {', '.join(refused)} here; the allowed "
                f"ones are {', '.join(ALLOWED_HEADERS)}",
            )
        answer = Response(204, b"", "text/plain")
        answer.headers.update(
            {
                "Access-Control-Allow-Methods": ", ".join(sorted(set(methods))),
                "Access-Control-Allow-Headers": ", ".join(ALLOWED_HEADERS),
                "Access-Control-Max-Age": str(MAX_AGE),
            }
        )
        return answer

    def decorate(self, request: Request, response: Response) -> Response:
        """``response`` with the headers that let the page read it, if its origin is allowed."""
        origin = request.headers.get("origin")
        if origin is not None and origin in self.origins and not _same_origin(origin, request):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = ", ".join(EXPOSED_HEADERS)
            vary = response.headers.get("Vary")
            response.headers["Vary"] = "Origin" if not vary else f"{vary}, Origin"
        return response


def _same_origin(origin: str, request: Request) -> bool:
    """Whether ``origin`` names the host and port the request was sent to (its ``Host``)."""
    host = request.headers.get("host")
    if not host:
        return False
    parts = urlsplit(origin)
    if not parts.hostname:
        return False
    try:
        port = parts.port
    except ValueError:
        return False
    default = 443 if parts.scheme == "https" else 80
    netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    candidates = {f"{netloc}:{port or default}"} | ({netloc} if port in (None, default) else set())
    return host.lower() in candidates
