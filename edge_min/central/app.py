"""The central platform's HTTP app: sync push/pull, the device registry, alerts and metrics.

Routes (``docs/sync-protocol.md`` describes the frames)::

    POST   /api/sync/push                        a push frame in, a push_result frame out
    GET    /api/sync/pull?entity=E&after=V&limit=N
                                                 a pull_result frame: records with version > V
    GET    /api/devices/{id}                     the device as JSON
    POST   /api/devices/{id}/provision           register / re-provision (JSON body, optional:
                                                 ip_address, ssh_user, sync_key (64 hex), details)
    POST   /api/devices/{id}/update | /restart   record an operator action (JSON body: details)
    DELETE /api/devices/{id}                     decommission: status "decommissioned", key dropped
    POST   /api/alerts, POST /api/metrics        JSON {"alerts": [...]} / {"metrics": [...]}
    GET    /api/alerts, GET /api/metrics         the newest ones (?node=&limit=)
    GET    /health                               {"status": "ok", "store": ...}

Device identity is the ``X-Edge-Node`` header (under mTLS, later, the client certificate's
CN). Every request carrying it records the device's ``last_seen`` and ``ip_address``. An
unknown device is registered (status ``active``) on first contact; with
``require_provisioned`` it is refused with 403 until ``POST /api/devices/{id}/provision``.
A decommissioned device is always refused.

Encryption: a device's payload key is the one provisioned for it, else the server's shared
key (``--sync-key-file``), else none. When a key is known, push frames must be encrypted and
pull/push answers are encrypted with it. Compression of an answer: the best of the
``X-Edge-Sync-Accept`` request header (``zstd, zlib, none``) this process can write; without
the header a push answer uses the push frame's compression and a pull answer none.

Errors on the sync routes are ``error`` frames (unencrypted, so a device with the wrong key can
still read why) with the protocol's HTTP status: a rejected frame answers its code
(``sync_bad_frame``, ``sync_truncated``, ...; 400, or 413 when too large), a database
failure ``storage_error`` (503: retry later), a bad batch
``bad_batch`` (400), a refused device ``device_not_provisioned`` / ``device_decommissioned``
(403). The other routes answer JSON ``{"error": {"code", "message"}}``; a provisioning
mistake (bad device id, unknown field, bad ``sync_key``) is ``bad_provisioning`` (400).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from edge_min.central.model import (
    BadBatch,
    BatchIdReused,
    Device,
    ProvisioningError,
    check_entity,
    check_node,
    parse_push,
)
from edge_min.central.store import CentralStore
from edge_min.errors import EdgeError, StorageError
from edge_min.routing import ApiError, Request, Response, Router

log = logging.getLogger("edge_min.central")

NODE_HEADER = "x-edge-node"
ACCEPT_HEADER = "x-edge-sync-accept"
# Set by the server from the socket (a client's own copy is dropped first); see server.py.
DEFAULT_PULL_LIMIT = 500
CENTRAL_NODE = "central"


def _frame_error(exc: EdgeError) -> ApiError:
    status = int(getattr(exc, "http_status", 400))
    return ApiError(status if 400 <= status < 500 else 400, exc.code, exc.message)


class CentralApp:
    """The route handlers of the central server, over one ``CentralStore``."""

    def __init__(
        self,
        store: CentralStore,
        *,
        require_provisioned: bool = False,
        shared_key: bytes | None = None,
        max_frame_bytes: int | None = None,
    ) -> None:
        from edge_min.sync.protocol import DEFAULT_MAX_BYTES

        self.store = store
        self.require_provisioned = require_provisioned
        self.shared_key = shared_key
        self.max_frame_bytes = max_frame_bytes or DEFAULT_MAX_BYTES

    def router(self) -> Router:
        """A Router with every central route."""
        r = Router()
        r.add("GET", "/health", self.health, permission="read")
        r.add("POST", "/api/sync/push", self._framed(self.push), permission="write")
        r.add("GET", "/api/sync/pull", self._framed(self.pull), permission="read")
        r.add("GET", "/api/devices/{device_id}", self.get_device, permission="read")
        r.add("DELETE", "/api/devices/{device_id}", self.decommission, permission="configure")
        r.add("POST", "/api/devices/{device_id}/provision", self.provision, permission="configure")
        r.add("POST", "/api/devices/{device_id}/{action}", self.device_action, permission="write")
        r.add("POST", "/api/alerts", self.post_alerts, permission="write")
        r.add("GET", "/api/alerts", self.get_alerts, permission="read")
        r.add("POST", "/api/metrics", self.post_metrics, permission="write")
        r.add("GET", "/api/metrics", self.get_metrics, permission="read")
        return r

    def _framed(self, handler: Callable[[Request], Response]) -> Callable[[Request], Response]:
        """``handler`` with its errors answered as error frames, as sync clients expect."""
        from edge_min.sync.protocol import CONTENT_TYPE, error_frame

        def framed(request: Request) -> Response:
            err: EdgeError
            try:
                return handler(request)
            except ApiError as exc:
                status, err = exc.status, exc
            except StorageError as exc:
                # The database is down or busy: a retry later can succeed.
                log.warning("sync request %s failed: %s", request.path, exc.message)
                status, err = 503, exc
            except EdgeError as exc:
                status, err = _frame_error(exc).status, exc
            except Exception as exc:  # a bug: answer it, do not drop the connection
                log.exception("sync request %s %s failed", request.method, request.path)
                status = 500
                err = EdgeError(f"internal error: {type(exc).__name__}: {exc}")
                err.code = "internal_error"
            return Response(status, error_frame(err, node=CENTRAL_NODE), content_type=CONTENT_TYPE)

        return framed

    def _answer_compression(self, request: Request, default: str) -> str:
        from edge_min.sync.protocol import available_compressions

        accept = request.headers.get(ACCEPT_HEADER)
        if accept is None:
            return default
        offered = {c.strip().lower() for c in accept.split(",")}
        return next((c for c in available_compressions() if c in offered), "none")

    # Identity ----------------------------------------------------------------------------------

    def device_of(self, request: Request) -> Device:
        """The calling device (from X-Edge-Node), its contact recorded; 400/403 if refused."""
        node = request.headers.get(NODE_HEADER)
        principal = request.principal or ""
        cert_node = principal[5:] if principal.startswith("cert:") else None
        if cert_node is not None:
            # Under mutual TLS the certificate names the device; a header may not disagree.
            if node and node != cert_node:
                raise ApiError(
                    403,
                    "node_mismatch",
                    f"X-Edge-Node {node!r} does not match the client certificate's "
                    f"CN {cert_node!r}",
                )
            node = cert_node
        if not node:
            raise ApiError(
                400,
                "missing_node",
                "the request has no X-Edge-Node header; devices name themselves with it",
            )
        try:
            check_node(node, "X-Edge-Node")
        except BadBatch as exc:
            raise ApiError(400, "bad_node", exc.message) from exc
        ip = request.client
        device = self.store.touch_device(node, ip, register=not self.require_provisioned)
        if device is None:
            raise ApiError(
                403,
                "device_not_provisioned",
                f"device {node!r} is not provisioned and this central requires it; "
                f"run POST /api/devices/{node}/provision first",
            )
        if device.status == "decommissioned":
            raise ApiError(
                403,
                "device_decommissioned",
                f"device {node!r} was decommissioned; provision it again to let it sync",
            )
        return device

    def _key(self, device: Device) -> bytes | None:
        return device.sync_key or self.shared_key

    # Sync --------------------------------------------------------------------------------------

    def push(self, request: Request) -> Response:
        """Apply one push frame; answer a push_result frame."""
        from edge_min.sync.protocol import CONTENT_TYPE, decode_frame, encode_frame

        device = self.device_of(request)
        key = self._key(device)
        try:
            header, items = decode_frame(
                request.body,
                key=key,
                max_bytes=self.max_frame_bytes,
                require_encryption=key is not None,
            )
        except EdgeError as exc:
            raise _frame_error(exc) from exc
        try:
            batch = parse_push(header, items, device.id)
        except BadBatch as exc:
            raise ApiError(400, exc.code, exc.message) from exc
        try:
            results = self.store.push(batch)
        except BatchIdReused as exc:
            raise ApiError(409, exc.code, exc.message) from exc
        accepted = sum(1 for r in results if r["status"] == "accepted")
        log.debug(
            "push %s from %s: %d items, %d accepted",
            batch.batch_id,
            device.id,
            len(results),
            accepted,
        )
        body = encode_frame(
            {
                "kind": "push_result",
                "entity": batch.entity,
                "batch": batch.batch_id,
                "node": CENTRAL_NODE,
            },
            results,
            key=key,
            compression=self._answer_compression(request, str(header.get("comp", "none"))),
            max_bytes=self.max_frame_bytes,
        )
        return Response(200, body, content_type=CONTENT_TYPE)

    def pull(self, request: Request) -> Response:
        """Records of one entity after a version, as a pull_result frame."""
        from edge_min.sync.protocol import CONTENT_TYPE, encode_frame

        device = self.device_of(request)
        try:
            entity = check_entity(request.query.get("entity"))
        except BadBatch as exc:
            raise ApiError(400, "bad_entity", exc.message) from exc
        after = _int_param(request, "after", 0, minimum=0)
        limit = _int_param(request, "limit", DEFAULT_PULL_LIMIT, minimum=1)
        comp = self._answer_compression(request, "none")
        records = _within(self.store.pull(entity, after, limit), self.max_frame_bytes // 2)
        body = encode_frame(
            {
                "kind": "pull_result",
                "entity": entity,
                "batch": f"{entity}:{after}",
                "node": CENTRAL_NODE,
            },
            records,
            key=self._key(device),
            compression=comp,
            max_bytes=self.max_frame_bytes,
        )
        return Response(200, body, content_type=CONTENT_TYPE)

    # Devices -----------------------------------------------------------------------------------

    def get_device(self, request: Request) -> dict[str, Any]:
        """The device as JSON."""
        return self.store.get_device(request.params["device_id"]).to_dict()

    def provision(self, request: Request) -> dict[str, Any]:
        """Register or re-provision a device; a provisioning mistake is 400 bad_provisioning."""
        device_id = request.params["device_id"]
        body = _json_object(request)
        try:
            fields = _provisioning_fields(body)
            return self.store.provision_device(device_id, **fields).to_dict()
        except ProvisioningError as exc:
            raise ApiError(400, exc.code, exc.message) from exc

    def device_action(self, request: Request) -> dict[str, Any]:
        """Record an update or restart of a device."""
        action = request.params["action"]
        if action not in ("update", "restart"):
            raise ApiError(
                404, "not_found", f"no device action {action!r}; use provision, update or restart"
            )
        details = _json_object(request)
        return self.store.record_device_action(
            request.params["device_id"], action, details
        ).to_dict()

    def decommission(self, request: Request) -> dict[str, Any]:
        """Retire a device: it may no longer sync, and its key is forgotten."""
        device_id = request.params["device_id"]
        return self.store.record_device_action(device_id, "decommission", {}).to_dict()

    # Alerts and metrics ------------------------------------------------------------------------

    def post_alerts(self, request: Request) -> dict[str, Any]:
        """Store the alerts a device sends."""
        device = self.device_of(request)
        try:
            return {"stored": self.store.add_alerts(device.id, _list_body(request, "alerts"))}
        except BadBatch as exc:
            raise ApiError(400, "bad_request", exc.message) from exc

    def post_metrics(self, request: Request) -> dict[str, Any]:
        """Store the metric samples a device sends."""
        device = self.device_of(request)
        try:
            return {"stored": self.store.add_metrics(device.id, _list_body(request, "metrics"))}
        except BadBatch as exc:
            raise ApiError(400, "bad_request", exc.message) from exc

    def get_alerts(self, request: Request) -> dict[str, Any]:
        """The newest alerts (?node=, ?limit=)."""
        limit = _int_param(request, "limit", 100, minimum=1)
        return {"alerts": self.store.list_alerts(request.query.get("node"), limit)}

    def get_metrics(self, request: Request) -> dict[str, Any]:
        """The newest metric samples (?node=, ?limit=)."""
        limit = _int_param(request, "limit", 100, minimum=1)
        return {"metrics": self.store.list_metrics(request.query.get("node"), limit)}

    def health(self, request: Request) -> Response:
        """Whether the server and its database answer."""
        try:
            self.store.ping()
        except EdgeError as exc:
            return Response(
                503, {"status": "failed", "store": self.store.kind, "error": exc.message}
            )
        return Response(200, {"status": "ok", "store": self.store.kind})


def _int_param(request: Request, name: str, default: int, *, minimum: int) -> int:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise ApiError(
            400, "bad_request", f"query parameter {name}={text!r} must be an integer >= {minimum}"
        )
    return value


def _provisioning_fields(body: dict[str, Any]) -> dict[str, Any]:
    """The store's provisioning fields from a JSON body; ``ProvisioningError`` if one is wrong."""
    fields: dict[str, Any] = {}
    for name in ("ip_address", "ssh_user"):
        value = body.pop(name, None)
        if value is not None and not isinstance(value, str):
            raise ProvisioningError(f"{name} {value!r} must be a string")
        fields[name] = value
    key_hex = body.pop("sync_key", None)
    if key_hex is not None:
        try:
            fields["sync_key"] = bytes.fromhex(key_hex)
        except (TypeError, ValueError) as exc:
            raise ProvisioningError("sync_key must be 64 hex digits (a 32-byte key)") from exc
    details = body.pop("details", None)
    if details is not None:
        fields["details"] = details
    if body:
        raise ProvisioningError(
            f"unknown provisioning field(s) {sorted(body)}; "
            "use ip_address, ssh_user, sync_key, details"
        )
    return fields


def _json_object(request: Request) -> dict[str, Any]:
    body = request.json()
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise ApiError(
            400, "bad_request", f"the body must be a JSON object, not {type(body).__name__}"
        )
    return body


def _list_body(request: Request, key: str) -> list[Any]:
    """``{"<key>": [...]}``, a bare list, or one object."""
    body = request.json()
    if isinstance(body, dict) and key in body:
        body = body[key]
    if isinstance(body, dict):
        return [body]
    if not isinstance(body, list) or not body:
        raise ApiError(400, "bad_request", f'send {{"{key}": [...]}} with at least one entry')
    return body


def _within(records: list[dict[str, Any]], budget: int) -> list[dict[str, Any]]:
    """The longest prefix of ``records`` whose rough size fits ``budget`` (at least one)."""
    import json

    total = 0
    for i, record in enumerate(records):
        total += len(json.dumps(record, default=str)) + 16
        if total > budget and i > 0:
            return records[:i]
    return records
