"""The parts every central assembles, in matching order: add a part with one line.

Each entry is a ``edge_min.central.part.CentralPart`` subclass living in its own module,
where its routes are drawn::

    Sync       edge_min.central.sync_api    POST /api/sync/push, GET /api/sync/pull
    Attestation edge_min.central.attestation POST /api/attestation/challenge | quote,
                                            GET /api/attestation/pending,
                                            GET, POST /api/devices/{id}/attestation
    Enrollment edge_min.central.enrollment  POST /api/enroll/tokens, GET /api/enroll/ca,
                                            POST /api/enroll
    Inventory  edge_min.central.inventory   GET /api/devices, POST /api/devices/self/report
    Devices    edge_min.central.devices     GET, DELETE /api/devices/{id},
                                            POST /api/devices/{id}/provision | update | restart
    Rollouts   edge_min.central.rollouts    POST /api/bundles, GET /api/bundles/{id},
                                            POST, GET /api/rollouts, GET /api/rollouts/{id},
                                            POST /api/rollouts/{id}/pause | resume | cancel,
                                            GET /api/updates/assigned, POST /api/updates/state
    Telemetry  edge_min.central.telemetry   POST, GET /api/alerts and /api/metrics, GET /health
    Fleet      edge_min.central.fleet       GET /fleet, GET /fleet/{asset} (the operator page)

A part whose route is a literal under another's ``{parameter}`` comes before that part.
"""

from __future__ import annotations

from edge_min.central.attestation import Attestation
from edge_min.central.devices import Devices
from edge_min.central.enrollment import Enrollment
from edge_min.central.fleet import Fleet
from edge_min.central.inventory import Inventory
from edge_min.central.part import CentralPart
from edge_min.central.rollouts import Rollouts
from edge_min.central.sync_api import Sync
from edge_min.central.telemetry import Telemetry

CENTRAL_PARTS: tuple[type[CentralPart], ...] = (
    Sync,
    Attestation,  # before Devices: POST /api/devices/{id}/attestation is under its {action}
    Enrollment,
    Inventory,  # before Devices: POST /api/devices/self/report is under its {device_id}
    Devices,
    Rollouts,
    Telemetry,
    Fleet,
)
