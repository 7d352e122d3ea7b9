"""The parts every central assembles, in matching order: add a part with one line.

Each entry is a ``edge_min.central.part.CentralPart`` subclass living in its own module,
where its routes are drawn::

    Sync       edge_min.central.sync_api    POST /api/sync/push, GET /api/sync/pull
    Devices    edge_min.central.devices     GET, DELETE /api/devices/{id},
                                            POST /api/devices/{id}/provision | update | restart
    Telemetry  edge_min.central.telemetry   POST, GET /api/alerts and /api/metrics, GET /health

A part whose route is a literal under another's ``{parameter}`` comes before that part.
"""

from __future__ import annotations

from edge_min.central.devices import Devices
from edge_min.central.part import CentralPart
from edge_min.central.sync_api import Sync
from edge_min.central.telemetry import Telemetry

CENTRAL_PARTS: tuple[type[CentralPart], ...] = (
    Sync,
    Devices,
    Telemetry,
)
