"""The device registry: who a calling device is, and what operators do to devices.

Routes::

    GET    /api/devices/{id}                     the device as JSON, with its attestation trust
    POST   /api/devices/{id}/provision           register / re-provision (JSON body, optional:
                                                 ip_address, ssh_user, sync_key (64 hex), details,
                                                 attestation_policy, attestation_key (64 hex))
    POST   /api/devices/{id}/update | /restart   record an operator action (JSON body: details;
                                                 an update may carry attestation_policy)
    DELETE /api/devices/{id}                     decommission: status "decommissioned", key
                                                 dropped, its certificates revoked (refused
                                                 at the TLS handshake and at sync from then)

Device identity (``device_of``, which every part asks through ``Central.device_of``) is the
``X-Edge-Node`` header, or under mutual TLS the client certificate's CN, which the header may
not contradict. Every request carrying it records the device's ``last_seen`` and
``ip_address``. A client certificate central issued and revoked is 403
``certificate_revoked``. An unknown device is registered (status ``active``) on first contact; with
``require_provisioned`` it is refused with 403 ``device_not_provisioned`` until
``POST /api/devices/{id}/provision``. A decommissioned device is always refused
(``device_decommissioned``). A missing or malformed identity is 400 (``missing_node``,
``bad_node``), a header that is not the certificate's CN 403 ``node_mismatch``.

These routes answer JSON ``{"error": {"code", "message"}}``; a provisioning mistake (bad
device id, unknown field, bad ``sync_key``) is ``bad_provisioning`` (400), an unknown device
``not_found`` (404).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edge_min.central.model import BadBatch, Device, ProvisioningError, check_node
from edge_min.central.part import Central, CentralPart, json_object
from edge_min.routing import ApiError, Request
from edge_min.subsystem import ApiRoute

NODE_HEADER = "x-edge-node"
DEFAULT_PAGE = 100
MAX_PAGE = 1000
# The newest alerts of a device that count towards its health in the device list.
HEALTH_ALERTS = 20


class Devices(CentralPart):
    """The device registry's operator routes: look up, provision, act on, decommission."""

    name = "devices"

    def routes(self) -> Sequence[ApiRoute]:
        """The registry's routes; ``provision`` before the ``{action}`` that would catch it."""
        return (
            ApiRoute("GET", "/api/devices/{device_id}", "read", self.get_device),
            ApiRoute("DELETE", "/api/devices/{device_id}", "configure", self.decommission),
            ApiRoute("POST", "/api/devices/{device_id}/provision", "configure", self.provision),
            ApiRoute("POST", "/api/devices/{device_id}/{action}", "write", self.device_action),
        )

    def get_device(self, request: Request) -> dict[str, Any]:
        """The device as JSON, with its attestation trust (``edge_min.central.attestation``)."""
        from edge_min.central.attestation import trust_summary

        doc = self.central.store.get_device(request.params["device_id"]).to_dict()
        doc["attestation"] = trust_summary(self.central, doc["id"])
        return doc

    def provision(self, request: Request) -> dict[str, Any]:
        """Register or re-provision a device; a provisioning mistake is 400 bad_provisioning."""
        device_id = request.params["device_id"]
        body = json_object(request)
        try:
            attestation = _attestation_fields(body)
            fields = _provisioning_fields(body)
            device = self.central.store.provision_device(device_id, **fields)
        except ProvisioningError as exc:
            raise ApiError(400, exc.code, exc.message) from exc
        if attestation:
            self.central.store.set_attestation(device_id, **attestation)
        return device.to_dict()

    def device_action(self, request: Request) -> dict[str, Any]:
        """Record an update or restart of a device."""
        action = request.params["action"]
        if action not in ("update", "restart"):
            raise ApiError(
                404, "not_found", f"no device action {action!r}; use provision, update or restart"
            )
        details = json_object(request)
        attestation = {}
        if action == "update":  # new software: the operator may send its accepted values
            try:
                attestation = _attestation_fields(details, keys=("attestation_policy",))
            except ProvisioningError as exc:
                raise ApiError(400, exc.code, exc.message) from exc
        device = self.central.store.record_device_action(
            request.params["device_id"], action, details
        )
        if attestation:
            self.central.store.set_attestation(device.id, **attestation)
        return device.to_dict()

    def decommission(self, request: Request) -> dict[str, Any]:
        """Retire a device: it may no longer sync, its key is forgotten, its certificates
        are revoked (``edge_min.central.enrollment``)."""
        device_id = request.params["device_id"]
        doc = self.central.store.record_device_action(device_id, "decommission", {}).to_dict()
        doc["revoked_serials"] = self.central.store.revoke_device_certs(device_id)
        return doc


def device_of(central: Central, request: Request) -> Device:
    """The calling device (certificate CN or X-Edge-Node), its contact recorded; 400/403 if
    it is refused."""
    from edge_min.central.enrollment import check_not_revoked

    check_not_revoked(central, request)
    node = request.headers.get(NODE_HEADER)
    principal = request.principal or ""
    cert_node = principal[5:] if principal.startswith("cert:") else None
    if cert_node is not None:
        # Under mutual TLS the certificate names the device; a header may not disagree.
        if node and node != cert_node:
            raise ApiError(
                403,
                "node_mismatch",
                f"X-Edge-Node {node!r} does not match the client certificate's CN {cert_node!r}",
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
    device = central.store.touch_device(node, ip, register=not central.require_provisioned)
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


def _attestation_fields(
    body: dict[str, Any], keys: tuple[str, ...] = ("attestation_policy", "attestation_key")
) -> dict[str, Any]:
    """The attestation policy/key of a body (popped), as ``set_attestation`` fields."""
    from edge_min.central.attestation import provisioning_attestation
    from edge_min.security.quote import BadPolicy

    picked = {k: body.pop(k) for k in keys if k in body}
    try:
        return provisioning_attestation(picked)
    except BadPolicy as exc:
        raise ProvisioningError(exc.message) from exc


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
            "use ip_address, ssh_user, sync_key, details, attestation_policy, attestation_key"
        )
    return fields
