"""The subsystems every runtime assembles, in opening order: add a subsystem with one line.

Each entry is a ``edge_min.subsystem.Subsystem`` subclass living in its own package; a
subsystem comes after everything its ``needs`` names. The monitor is last: it gathers the
health checks, metrics, alert actions and uplink the others contribute.
"""

from __future__ import annotations

from edge_min.monitor.subsystem import Monitoring
from edge_min.security.subsystem import Security
from edge_min.store.subsystem import Storage
from edge_min.subsystem import Subsystem
from edge_min.sync.subsystem import Sync
from edge_min.workflows.subsystem import Workflows

SUBSYSTEMS: tuple[type[Subsystem], ...] = (
    Storage,
    Workflows,
    Sync,
    Security,
    Monitoring,
)
