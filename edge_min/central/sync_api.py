"""The central's sync endpoint: push and pull frames (``docs/sync-protocol.md``).

Routes::

    POST   /api/sync/push                        a push frame in, a push_result frame out
    GET    /api/sync/pull?entity=E&after=V&limit=N
                                                 a pull_result frame: records with version > V

The calling device is ``Central.device_of`` (``edge_min.central.devices``). Encryption: a
device's payload key is the one provisioned for it, else the server's shared key
(``--sync-key-file``), else none. When a key is known, push frames must be encrypted and
pull/push answers are encrypted with it: a push's answer in the suite of its frame, a pull's
in the one ``X-Edge-Sync-Enc`` names (default AES-256-GCM). Compression of an answer: the
best of the ``X-Edge-Sync-Accept`` request header (``zstd, zlib, none``) this process can
write; without the header a push answer uses the push frame's compression and a pull answer
none.

Errors on these routes are ``error`` frames (unencrypted, so a device with the wrong key can
still read why) with the protocol's HTTP status: a rejected frame answers its code
(``sync_bad_frame``, ``sync_truncated``, ...; 400, or 413 when too large), a database
failure ``storage_error`` (503: retry later), a bad batch ``bad_batch`` (400), a batch id
reused for another node or entity ``batch_id_reused`` (409), a refused device
``device_not_provisioned`` / ``device_decommissioned`` (403), and a push from a device whose
attestation failed or is overdue ``device_untrusted`` (403; ``edge_min.central.attestation``,
unless central allows untrusted pushes). ``framed`` gives any handler
that answer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from edge_min.central.attestation import refuse_untrusted
from edge_min.central.model import BadBatch, BatchIdReused, check_entity, parse_push
from edge_min.central.part import CentralPart, int_param
from edge_min.errors import EdgeError, StorageError
from edge_min.routing import ApiError, Request, Response
from edge_min.subsystem import ApiRoute

log = logging.getLogger("edge_min.central")

ACCEPT_HEADER = "x-edge-sync-accept"
#: The cipher suite a device reads answers in, for a pull (a push answers in its frame's).
ENC_HEADER = "x-edge-sync-enc"
DEFAULT_PULL_LIMIT = 500
#: The ``node`` of every frame central writes.
CENTRAL_NODE = "central"


class Sync(CentralPart):
    """Push and pull of versioned records, as sync frames."""

    name = "sync"
    device_paths = frozenset({("POST", "/api/sync/push"), ("GET", "/api/sync/pull")})

    def routes(self) -> Sequence[ApiRoute]:
        """Push and pull, their errors answered as error frames."""
        return (
            ApiRoute("POST", "/api/sync/push", "write", framed(self.push)),
            ApiRoute("GET", "/api/sync/pull", "read", framed(self.pull)),
        )

    def push(self, request: Request) -> Response:
        """Apply one push frame; answer a push_result frame."""
        from edge_min.sync.protocol import CONTENT_TYPE, decode_frame, encode_frame

        central = self.central
        device = central.device_of(request)
        refuse_untrusted(central, device)
        key = central.key_for(device)
        try:
            header, items = decode_frame(
                request.body,
                key=key,
                max_bytes=central.max_frame_bytes,
                require_encryption=key is not None,
            )
        except EdgeError as exc:
            raise frame_error(exc) from exc
        try:
            batch = parse_push(header, items, device.id)
        except BadBatch as exc:
            raise ApiError(400, exc.code, exc.message) from exc
        try:
            results = central.store.push(batch)
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
            compression=answer_compression(request, str(header.get("comp", "none"))),
            max_bytes=central.max_frame_bytes,
            encryption=answer_suite(request, str(header.get("enc", "none"))),
        )
        return Response(200, body, content_type=CONTENT_TYPE)

    def pull(self, request: Request) -> Response:
        """Records of one entity after a version, as a pull_result frame."""
        from edge_min.sync.protocol import CONTENT_TYPE, encode_frame

        central = self.central
        device = central.device_of(request)
        try:
            entity = check_entity(request.query.get("entity"))
        except BadBatch as exc:
            raise ApiError(400, "bad_entity", exc.message) from exc
        after = int_param(request, "after", 0, minimum=0)
        limit = int_param(request, "limit", DEFAULT_PULL_LIMIT, minimum=1)
        comp = answer_compression(request, "none")
        records = _within(central.store.pull(entity, after, limit), central.max_frame_bytes // 2)
        body = encode_frame(
            {
                "kind": "pull_result",
                "entity": entity,
                "batch": f"{entity}:{after}",
                "node": CENTRAL_NODE,
            },
            records,
            key=central.key_for(device),
            compression=comp,
            max_bytes=central.max_frame_bytes,
            encryption=answer_suite(request, "none"),
        )
        return Response(200, body, content_type=CONTENT_TYPE)


def framed(handler: Callable[[Request], Response]) -> Callable[[Request], Response]:
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
            status, err = frame_error(exc).status, exc
        except Exception as exc:  # a bug: answer it, do not drop the connection
            log.exception("sync request %s %s failed", request.method, request.path)
            status = 500
            err = EdgeError(f"internal error: {type(exc).__name__}: {exc}")
            err.code = "internal_error"
        return Response(status, error_frame(err, node=CENTRAL_NODE), content_type=CONTENT_TYPE)

    return framed


def frame_error(exc: EdgeError) -> ApiError:
    """A refused frame as an ApiError: its code, its protocol status if a 4xx, else 400."""
    status = int(getattr(exc, "http_status", 400))
    return ApiError(status if 400 <= status < 500 else 400, exc.code, exc.message)


def answer_compression(request: Request, default: str) -> str:
    """The best compression of ``X-Edge-Sync-Accept`` this process writes; ``default`` without."""
    from edge_min.sync.protocol import available_compressions

    accept = request.headers.get(ACCEPT_HEADER)
    if accept is None:
        return default
    offered = {c.strip().lower() for c in accept.split(",")}
    return next((c for c in available_compressions() if c in offered), "none")


def answer_suite(request: Request, spoken: str) -> str:
    """The cipher suite of an answer: the one the device's frame used, else the one its
    ``X-Edge-Sync-Enc`` header names (a pull has no frame), else AES-256-GCM."""
    from edge_min.sync.protocol import NONCE_SIZES

    if spoken in NONCE_SIZES:
        return spoken
    asked = (request.headers.get(ENC_HEADER) or "").strip().lower()
    if not asked:
        return "aes-256-gcm"
    if asked not in NONCE_SIZES:
        raise ApiError(
            400,
            "sync_bad_frame",
            f"{ENC_HEADER} {asked!r} is not a cipher suite of this central; "
            f"use one of {', '.join(NONCE_SIZES)}",
        )
    return asked


def _within(records: list[dict[str, Any]], budget: int) -> list[dict[str, Any]]:
    """The longest prefix of ``records`` whose rough size fits ``budget`` (at least one)."""
    total = 0
    for i, record in enumerate(records):
        total += len(json.dumps(record, default=str)) + 16
        if total > budget and i > 0:
            return records[:i]
    return records
