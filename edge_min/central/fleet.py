"""The fleet page: a static operator page that reads the fleet through the API.

Routes::

    GET /fleet                the page (``fleet_static/fleet.html``)
    GET /fleet/{asset}        its stylesheet and script (``fleet.css``, ``fleet.js``)

The page is three files shipped in the package (no CDN, no build step) and holds no data:
it asks for an operator token, keeps it in the tab's ``sessionStorage`` and sends it as
``Authorization: Bearer`` on every call, so what it shows passes the same roles and tokens
as any API client (``edge_min.central.operators``). With operator tokens on, the page's own
files are the one thing served without a token (``open_prefixes``). It reads
``GET /api/devices``, ``GET /api/rollouts`` (a 404 there shows "no rollouts"; the buttons
post ``/api/rollouts/{id}/pause|resume|cancel``) and ``GET /api/alerts``, every few seconds.

Answers carry ``Content-Security-Policy: default-src 'self'`` (nothing loads from elsewhere,
no inline script) and ``Cache-Control: no-cache`` (a new central version's page is fetched).
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources

from edge_min.central.part import CentralPart
from edge_min.routing import ApiError, Request, Response
from edge_min.subsystem import ApiRoute

PAGE_PATH = "/fleet"
STATIC_PACKAGE = "edge_min.central"
STATIC_FOLDER = "fleet_static"
#: The page's files and their content types: nothing else is served from the folder.
ASSETS = {
    "fleet.html": "text/html; charset=utf-8",
    "fleet.css": "text/css; charset=utf-8",
    "fleet.js": "text/javascript; charset=utf-8",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class Fleet(CentralPart):
    """Serves the operator's fleet page and its two assets."""

    name = "fleet"
    open_prefixes = (PAGE_PATH,)

    def routes(self) -> Sequence[ApiRoute]:
        """The page, then its assets."""
        return (
            ApiRoute("GET", PAGE_PATH, "read", self.page),
            ApiRoute("GET", PAGE_PATH + "/{asset}", "read", self.asset),
        )

    def page(self, request: Request) -> Response:
        """The page's HTML."""
        return static_file("fleet.html")

    def asset(self, request: Request) -> Response:
        """``fleet.css`` or ``fleet.js``; 404 naming the files there are otherwise."""
        return static_file(request.params["asset"])


def static_file(name: str) -> Response:
    """One of ``ASSETS`` from the package, with the page's security headers."""
    content_type = ASSETS.get(name)
    if content_type is None:
        raise ApiError(
            404,
            "not_found",
            f"the fleet page has no file {name!r}; it serves {', '.join(sorted(ASSETS))}",
        )
    body = resources.files(STATIC_PACKAGE).joinpath(STATIC_FOLDER, name).read_bytes()
    return Response(200, body, content_type=content_type, headers=dict(SECURITY_HEADERS))
