"""What devices report and whether central answers: alerts, metrics and health.

Routes::

    POST   /api/alerts, POST /api/metrics        JSON {"alerts": [...]} / {"metrics": [...]}
                                                 (or a bare list, or one object)
    GET    /api/alerts, GET /api/metrics         the newest ones (?node=&limit=)
    GET    /health                               {"status": "ok", "store": ...}; 503 and
                                                 "failed" with the error when the store fails

A device posting alerts or metrics names itself as on every route (``Central.device_of``).
Errors are JSON ``{"error": {"code", "message"}}``: a malformed alert or sample is
``bad_request`` (400), naming its index and field.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edge_min.central.model import BadBatch
from edge_min.central.part import CentralPart, int_param, list_body
from edge_min.errors import EdgeError
from edge_min.routing import ApiError, Request, Response
from edge_min.subsystem import ApiRoute

DEFAULT_LIST_LIMIT = 100


class Telemetry(CentralPart):
    """Alerts and metric samples from devices, and the central's own health."""

    name = "telemetry"
    device_paths = frozenset({("POST", "/api/alerts"), ("POST", "/api/metrics")})
    open_prefixes = ("/health",)  # whether central answers: load balancers ask it

    def routes(self) -> Sequence[ApiRoute]:
        """Alerts and metrics in and out, then health."""
        return (
            ApiRoute("POST", "/api/alerts", "write", self.post_alerts),
            ApiRoute("GET", "/api/alerts", "read", self.get_alerts),
            ApiRoute("POST", "/api/metrics", "write", self.post_metrics),
            ApiRoute("GET", "/api/metrics", "read", self.get_metrics),
            ApiRoute("GET", "/health", "read", self.health),
        )

    def post_alerts(self, request: Request) -> dict[str, Any]:
        """Store the alerts a device sends."""
        device = self.central.device_of(request)
        try:
            alerts = list_body(request, "alerts")
            return {"stored": self.central.store.add_alerts(device.id, alerts)}
        except BadBatch as exc:
            raise ApiError(400, "bad_request", exc.message) from exc

    def post_metrics(self, request: Request) -> dict[str, Any]:
        """Store the metric samples a device sends."""
        device = self.central.device_of(request)
        try:
            samples = list_body(request, "metrics")
            return {"stored": self.central.store.add_metrics(device.id, samples)}
        except BadBatch as exc:
            raise ApiError(400, "bad_request", exc.message) from exc

    def get_alerts(self, request: Request) -> dict[str, Any]:
        """The newest alerts (?node=, ?limit=)."""
        limit = int_param(request, "limit", DEFAULT_LIST_LIMIT, minimum=1)
        return {"alerts": self.central.store.list_alerts(request.query.get("node"), limit)}

    def get_metrics(self, request: Request) -> dict[str, Any]:
        """The newest metric samples (?node=, ?limit=)."""
        limit = int_param(request, "limit", DEFAULT_LIST_LIMIT, minimum=1)
        return {"metrics": self.central.store.list_metrics(request.query.get("node"), limit)}

    def health(self, request: Request) -> Response:
        """Whether the server and its database answer."""
        store = self.central.store
        try:
            store.ping()
        except EdgeError as exc:
            return Response(503, {"status": "failed", "store": store.kind, "error": exc.message})
        return Response(200, {"status": "ok", "store": store.kind})
