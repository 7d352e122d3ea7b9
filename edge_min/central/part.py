"""The central part contract: what a part of the central server brings, declared in one place.

The central mirrors the device side (``edge_min.subsystem``): a part is one module with a
``CentralPart`` subclass whose ``routes()`` declare its HTTP routes, each with the
permission it needs; ``edge_min.central.parts.CENTRAL_PARTS`` lists them and
``CentralApp`` assembles its router from that list. Adding a part is one new module plus
one line there::

    class Inventory(CentralPart):
        name = "inventory"

        def routes(self) -> list[ApiRoute]:
            return [ApiRoute("GET", "/api/inventory/{device_id}", "read", self._get)]

        def _get(self, request: Request) -> dict[str, Any]:
            device = self.central.store.get_device(request.params["device_id"])
            return {"id": device.id, "details": device.details}

A part sees the central through ``Central`` (``self.central``): the store, the key and
provisioning policy and the calling device's identity. Routes are ``edge_min.subsystem
.ApiRoute``s answered by the shared ``edge_min.routing`` Router, so a handler refuses a
request with ``ApiError`` and its answer is the one JSON error shape; a part that speaks
sync frames wraps its handlers in ``edge_min.central.sync_api.framed``.

Two routes with the same method where the earlier one answers every path of the later one
(the same pattern twice, or ``POST /api/devices/{device_id}/{action}`` before a
``POST /api/devices/{device_id}/enroll``) are a ``ConfigError`` when the router is built:
the later one could never be reached. A part whose literal route sits under another part's
``{parameter}`` comes before it in ``CENTRAL_PARTS``.

The helpers below read query parameters and JSON bodies the same way on every route.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from edge_min.routing import ApiError, Request

if TYPE_CHECKING:
    from edge_min.central.ca import CentralCA, FactoryCA
    from edge_min.central.model import Device
    from edge_min.central.store import CentralStore
    from edge_min.clock import Clock
    from edge_min.subsystem import ApiRoute

__all__ = ["Central", "CentralPart", "int_param", "json_object", "list_body"]


class Central(Protocol):
    """What the central app (``edge_min.central.app.CentralApp``) gives its parts."""

    store: CentralStore
    #: Refuse devices the registry does not know (else they register on first contact).
    require_provisioned: bool
    #: The key of devices provisioned without their own (``--sync-key-file``), or None.
    shared_key: bytes | None
    #: The largest sync frame read or written, in bytes.
    max_frame_bytes: int
    #: Central's time (the store's clock): nonce expiry and overdue attestations.
    clock: Clock
    #: Refuse sync pushes of devices whose attestation failed or is overdue.
    refuse_untrusted: bool
    #: Seconds a passing attestation counts, unless the device's policy says max_age.
    attestation_max_age: float
    #: The CA that signs enrolled devices' certificates (``--enroll-ca-key``), or None.
    ca: CentralCA | None
    #: The CA of factory certificates that may replace a claim token (``--factory-ca``).
    factory_ca: FactoryCA | None

    def device_of(self, request: Request) -> Device:
        """The calling device, its contact recorded; ApiError 400/403 if it is refused."""
        ...

    def key_for(self, device: Device) -> bytes | None:
        """The payload key of ``device``: its own, else the shared key, else None."""
        ...


class CentralPart:
    """The base of every central part: contributes nothing until a subclass says what."""

    #: A short unique name (``sync``, ``devices``): in errors about the route table.
    name: ClassVar[str] = ""
    #: The (method, literal path) routes devices call naming themselves (``X-Edge-Node`` or
    #: certificate) with no operator token, when central checks operator tokens
    #: (``edge_min.central.operators``); every other route then needs a token.
    device_paths: ClassVar[frozenset[tuple[str, str]]] = frozenset()
    #: Path prefixes anyone may GET with no token: static files that carry no data.
    open_prefixes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, central: Central) -> None:
        self.central = central

    def routes(self) -> Sequence[ApiRoute]:
        """The HTTP routes of this part, in the order they are matched."""
        return ()


def int_param(request: Request, name: str, default: int, *, minimum: int) -> int:
    """Query parameter ``name`` as an integer >= ``minimum``; 400 bad_request otherwise."""
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


def json_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object (``{}`` when empty); 400 bad_request for anything else."""
    body = request.json()
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise ApiError(
            400, "bad_request", f"the body must be a JSON object, not {type(body).__name__}"
        )
    return body


def list_body(request: Request, key: str) -> list[Any]:
    """``{"<key>": [...]}``, a bare list, or one object."""
    body = request.json()
    if isinstance(body, dict) and key in body:
        body = body[key]
    if isinstance(body, dict):
        return [body]
    if not isinstance(body, list) or not body:
        raise ApiError(400, "bad_request", f'send {{"{key}": [...]}} with at least one entry')
    return body
