"""The central platform's HTTP app: one Router assembled from the central parts.

``CentralApp`` holds what every part shares (the ``CentralStore``, the key and provisioning
policy, the frame size) and offers it to them as ``edge_min.central.part.Central``;
``router()`` builds each part of ``edge_min.central.parts.CENTRAL_PARTS`` (the index of
which part answers which route) and adds its routes in list order. A route that an earlier
one with the same method would always answer first is a ``ConfigError`` here, not a route
that silently never answers.

What the parts share:

- the calling device: ``device_of(request)``, the registry's identity rule
  (``edge_min.central.devices.device_of``: certificate CN or ``X-Edge-Node``, registered on
  first contact unless ``require_provisioned``, refused once decommissioned);
- its payload key: ``key_for(device)``, the device's provisioned key, else ``shared_key``
  (``--sync-key-file``), else none;
- ``max_frame_bytes``, the largest sync frame read or written (and the largest request the
  server reads);
- attestation policy (``edge_min.central.attestation``): ``clock`` (the store's),
  ``refuse_untrusted`` (refuse sync pushes of untrusted devices; default on) and
  ``attestation_max_age`` (how long a pass counts);
- enrollment (``edge_min.central.enrollment``): ``ca``, the CA that signs enrolled devices'
  certificates, and ``require_client_cert``: TLS lets clients without a certificate in
  (so they can enroll) and the router's ``CertificateRequired`` keeps them to the
  enrollment routes; ``factory_ca``, the CA of factory certificates that may stand in for
  a claim token.

With ``operator_key`` the router checks operator tokens (``edge_min.central.operators``):
devices still call their ``device_paths`` by identity, and every other route needs a bearer
token of a role holding the route's permission. Without it every caller may use every route.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from edge_min.central.store import CentralStore
from edge_min.errors import ConfigError
from edge_min.routing import Request, Route, Router

if TYPE_CHECKING:
    from edge_min.central.ca import CentralCA, FactoryCA
    from edge_min.central.model import Device
    from edge_min.central.part import CentralPart
    from edge_min.clock import Clock


class CentralApp:
    """The central server's routes, assembled from its parts over one ``CentralStore``."""

    def __init__(
        self,
        store: CentralStore,
        *,
        require_provisioned: bool = False,
        shared_key: bytes | None = None,
        max_frame_bytes: int | None = None,
        parts: Sequence[type[CentralPart]] | None = None,
        refuse_untrusted: bool = True,
        attestation_max_age: float | None = None,
        operator_key: bytes | None = None,
        ca: CentralCA | None = None,
        require_client_cert: bool = False,
        factory_ca: FactoryCA | None = None,
        allowed_origins: Sequence[str] = (),
    ) -> None:
        from edge_min.api.cors import CorsPolicy
        from edge_min.central.attestation import DEFAULT_MAX_AGE
        from edge_min.clock import SystemClock
        from edge_min.sync.protocol import DEFAULT_MAX_BYTES

        self.store = store
        self.require_provisioned = require_provisioned
        self.shared_key = shared_key
        self.max_frame_bytes = max_frame_bytes or DEFAULT_MAX_BYTES
        self.clock: Clock = getattr(store, "clock", None) or SystemClock()
        self.refuse_untrusted = refuse_untrusted
        self.attestation_max_age = float(attestation_max_age or DEFAULT_MAX_AGE)
        #: The key operator tokens are signed with; None leaves every route open.
        self.operator_key = operator_key
        self.ca = ca
        self.factory_ca = factory_ca
        self.require_client_cert = require_client_cert
        #: Web pages of other origins allowed to call central (the browser target); any
        #: other origin is refused (edge_min.api.cors).
        self.cors = CorsPolicy.of(allowed_origins)
        if parts is None:
            from edge_min.central.parts import CENTRAL_PARTS

            parts = CENTRAL_PARTS
        #: The parts this app assembles, in matching order (default ``CENTRAL_PARTS``).
        self.parts: tuple[type[CentralPart], ...] = tuple(parts)

    def router(self) -> Router:
        """A Router with every route of every part; ConfigError if one could never answer."""
        router = Router(cors=self.cors)
        if self.operator_key is not None:
            from edge_min.central.operators import OperatorAuthorizer, WithEnrollment

            operators = OperatorAuthorizer.for_parts(self.operator_key, self.clock, self.parts)
            router.authorizer = operators
            if self.require_client_cert:
                from edge_min.central.enrollment import CertificateRequired

                router.authorizer = WithEnrollment(CertificateRequired(), operators)
        elif self.require_client_cert:
            from edge_min.central.enrollment import CertificateRequired

            router.authorizer = CertificateRequired()
        owners: list[str] = []
        for kind in self.parts:
            for route in kind(self).routes():
                router.add(route.method, route.pattern, route.handler, permission=route.permission)
                added = router.routes[-1]
                for earlier, owner in zip(router.routes, owners, strict=False):
                    if earlier.method == added.method and earlier.regex.match(added.pattern):
                        raise _unreachable(added, kind.name, earlier, owner)
                owners.append(kind.name)
        return router

    # What the parts share (edge_min.central.part.Central) ------------------------------------

    def device_of(self, request: Request) -> Device:
        """The calling device, its contact recorded; ApiError 400/403 if it is refused."""
        from edge_min.central.devices import device_of

        return device_of(self, request)

    def key_for(self, device: Device) -> bytes | None:
        """The payload key of ``device``: its own, else the shared key, else None."""
        return device.sync_key or self.shared_key


def _unreachable(route: Route, part: str, earlier: Route, owner: str) -> ConfigError:
    """The error for ``route`` of ``part``, which ``earlier`` of ``owner`` always answers first."""
    where = f"{route.method} {route.pattern}"
    if earlier.pattern == route.pattern:
        if part == owner:
            return ConfigError(f"central part {part!r} declares {where} twice")
        return ConfigError(
            f"central parts {owner!r} and {part!r} both declare {where}; "
            "a route belongs to one part"
        )
    fix = (
        "declare it before that one"
        if part == owner
        else f"list {part!r} before {owner!r} in edge_min.central.parts.CENTRAL_PARTS"
    )
    return ConfigError(
        f"central part {part!r} declares {where}, but {owner!r}'s "
        f"{earlier.method} {earlier.pattern} answers it first, so it is never reached; {fix}"
    )
