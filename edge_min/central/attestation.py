"""Remote attestation on central: challenges, quote verification, trust, results.

Routes::

    POST /api/attestation/challenge        the calling device gets a fresh nonce:
                                           {"nonce": 64 hex, "expires_at", "ttl"}
    POST /api/attestation/quote            a quote frame (application/cbor,
                                           edge_min.security.quote) in; the verdict out:
                                           {"result": "pass"|"fail", "reason", "trust", ...}
    GET  /api/attestation/pending          {"requested": bool, "trust"}: whether central wants
                                           a quote now (the device polls it)
    GET  /api/devices/{id}/attestation     trust, key, policy and the newest results
    POST /api/devices/{id}/attestation     ask the device for a quote at its next poll

A quote is checked in this order, all of it in one store transaction: its nonce was issued
to this device, is unused and unexpired (else 409 ``attestation_nonce``, recorded as
``refused``, trust unchanged); its key is the device's registered key (the first quote
registers it: trust on first use) and its signature verifies; its measurements and boot
facts are accepted by the device's policy (without a policy the first quote's values are
adopted as the baseline). A key or signature or policy mismatch is a ``fail``.

Trust (``trust_of``): ``trusted`` after a pass younger than the policy's ``max_age`` (else
the central's ``attestation_max_age``), ``untrusted`` after a fail or when overdue,
``unknown`` for a device that never attested and has no operator policy (a device with an
operator policy and no attestation within max_age of it is overdue). Central refuses sync
pushes of an untrusted device with 403 ``device_untrusted`` unless ``refuse_untrusted`` is
off (``--allow-untrusted-sync``).

A malformed quote is 400 ``bad_quote`` naming the field; a quote naming another device than
the caller is 403 ``attestation_device_mismatch``.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from edge_min.central.part import Central, CentralPart, int_param
from edge_min.clock import iso
from edge_min.routing import ApiError, Request, Response
from edge_min.subsystem import ApiRoute

if TYPE_CHECKING:
    from edge_min.central.model import Device
    from edge_min.security.quote import Policy

NONCE_TTL = 300.0  # seconds a challenge stays answerable
DEFAULT_MAX_AGE = 2 * 86400.0  # twice the spec's attestation.interval of a day
RESULTS_SHOWN = 20


class Attestation(CentralPart):
    """Challenges, quotes, the pending poll and the operator's view of a device's trust."""

    name = "attestation"
    device_paths = frozenset(
        {
            ("POST", "/api/attestation/challenge"),
            ("POST", "/api/attestation/quote"),
            ("GET", "/api/attestation/pending"),
        }
    )

    def routes(self) -> Sequence[ApiRoute]:
        """Its routes; the ``/api/devices/{id}/attestation`` POST sits under Devices'
        ``{action}``, so this part comes before Devices in CENTRAL_PARTS."""
        return (
            ApiRoute("POST", "/api/attestation/challenge", "write", self.challenge),
            ApiRoute("POST", "/api/attestation/quote", "write", self.quote),
            ApiRoute("GET", "/api/attestation/pending", "read", self.pending),
            ApiRoute("GET", "/api/devices/{device_id}/attestation", "read", self.show),
            ApiRoute("POST", "/api/devices/{device_id}/attestation", "write", self.ask),
        )

    def challenge(self, request: Request) -> dict[str, Any]:
        """A fresh single-use nonce for the calling device."""
        device = self.central.device_of(request)
        nonce = secrets.token_hex(32)
        expires = self.central.store.issue_nonce(device.id, nonce, NONCE_TTL)
        return {"nonce": nonce, "expires_at": iso(expires), "ttl": NONCE_TTL}

    def quote(self, request: Request) -> dict[str, Any]:
        """Verify a quote and record the verdict; answer it with the device's trust."""
        from edge_min.security.quote import BadQuote, baseline, compare, parse_quote

        central = self.central
        device = central.device_of(request)
        try:
            q = parse_quote(request.body)
        except BadQuote as exc:
            raise ApiError(400, exc.code, exc.message) from exc
        if q.device_id != device.id:
            raise ApiError(
                403,
                "attestation_device_mismatch",
                f"the quote names device {q.device_id!r} but {device.id!r} sent it",
            )

        def judge(policy: Policy | None) -> tuple[str, str | None, Policy | None]:
            if policy is None:
                adopted = baseline(q.measurements, q.boot)
                return "pass", "no policy yet: this quote's values are the baseline", adopted
            reasons = compare(policy, q.measurements, q.boot)
            return ("fail", "; ".join(reasons), None) if reasons else ("pass", None, None)

        record = central.store.attest(
            device.id,
            q.nonce,
            q.public_key.hex(),
            q.signed(),
            judge,
            measurements=q.measurements,
            boot=q.boot,
        )
        if record["outcome"] == "refused":
            raise ApiError(409, "attestation_nonce", f"quote refused: {record['reason']}")
        trust, why = trust_of(central, central.store.attestation_info(device.id))
        return {
            "device_id": device.id,
            "result": record["outcome"],
            "reason": record["reason"],
            "at": record["at"],
            "trust": trust,
            "trust_reason": why,
        }

    def pending(self, request: Request) -> dict[str, Any]:
        """Whether central wants a quote from the calling device now."""
        device = self.central.device_of(request)
        info = self.central.store.attestation_info(device.id)
        trust, why = trust_of(self.central, info)
        overdue = trust == "untrusted" and (why or "").startswith("overdue")
        requested = info["requested_at"] is not None or overdue or trust == "unknown"
        return {"requested": requested, "trust": trust, "trust_reason": why}

    def show(self, request: Request) -> dict[str, Any]:
        """A device's trust, key, policy and newest results (``?limit=``)."""
        device_id = request.params["device_id"]
        self.central.store.get_device(device_id)  # NotFound: 404
        limit = int_param(request, "limit", RESULTS_SHOWN, minimum=1)
        info = self.central.store.attestation_info(device_id, results=limit)
        trust, why = trust_of(self.central, info)
        key = info["key"]
        if key is not None:
            import hashlib

            key["fingerprint"] = hashlib.sha256(bytes.fromhex(key["public_key"])).hexdigest()[:16]
        return {
            "device_id": device_id,
            "trust": trust,
            "trust_reason": why,
            "refuse_untrusted_sync": self.central.refuse_untrusted,
            "key": key,
            "policy": info["policy"],
            "requested_at": info["requested_at"],
            "results": info["results"],
        }

    def ask(self, request: Request) -> Response:
        """Central asks the device for a quote: it attests at its next poll."""
        at = self.central.store.request_attestation(request.params["device_id"])
        return Response(202, {"device_id": request.params["device_id"], "requested_at": at})


def trust_of(central: Central, info: dict[str, Any]) -> tuple[str, str | None]:
    """(``trusted``/``untrusted``/``unknown``, why) from ``attestation_info`` at central's now."""
    now = central.clock.time()
    policy = info.get("policy")
    max_age = float(central.attestation_max_age)
    if policy is not None and policy["values"].get("max_age"):
        max_age = float(policy["values"]["max_age"])
    verdict = info.get("verdict")
    if verdict is None:
        if (
            policy is not None
            and policy["source"] == "operator"
            and (now - policy["set_epoch"] > max_age)
        ):
            return "untrusted", (
                f"overdue: no attestation since its policy was set at {policy['set_at']} "
                f"(max age {max_age:g} s)"
            )
        return "unknown", "never attested"
    if verdict["outcome"] == "fail":
        return "untrusted", f"attestation failed at {verdict['at']}: {verdict['reason']}"
    if now - verdict["at_epoch"] > max_age:
        return "untrusted", (
            f"overdue: last passed at {verdict['at']}, more than {max_age:g} s ago"
        )
    return "trusted", None


def trust_summary(central: Central, device_id: str) -> dict[str, Any]:
    """``{"trust", "reason"}`` of a device, for its registry entry."""
    trust, why = trust_of(central, central.store.attestation_info(device_id))
    return {"trust": trust, "reason": why}


def refuse_untrusted(central: Central, device: Device) -> None:
    """403 ``device_untrusted`` for an untrusted device, unless central allows it."""
    if not central.refuse_untrusted:
        return
    trust, why = trust_of(central, central.store.attestation_info(device.id))
    if trust == "untrusted":
        raise ApiError(
            403,
            "device_untrusted",
            f"device {device.id!r} is untrusted ({why}); its pushes are refused until it "
            "passes attestation",
        )


def provisioning_attestation(body: dict[str, Any]) -> dict[str, Any]:
    """Pop ``attestation_policy`` / ``attestation_key`` from a provisioning or update body.

    Returns ``set_attestation`` fields (``policy``, ``public_key``; None forgets);
    ``BadPolicy`` names a bad policy, a bad key is BadPolicy too.
    """
    from edge_min.security.quote import BadPolicy, parse_policy

    fields: dict[str, Any] = {}
    if "attestation_policy" in body:
        raw = body.pop("attestation_policy")
        fields["policy"] = None if raw is None else parse_policy(raw).to_dict()
    if "attestation_key" in body:
        key = body.pop("attestation_key")
        if key is not None:
            try:
                ok = isinstance(key, str) and len(bytes.fromhex(key)) == 32
            except ValueError:
                ok = False
            if not ok:
                raise BadPolicy("attestation_key must be 64 hex digits (an Ed25519 public key)")
            key = key.lower()
        fields["public_key"] = key
    return fields
