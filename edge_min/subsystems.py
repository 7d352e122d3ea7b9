"""The subsystems every runtime assembles, in opening order: add a subsystem with one line.

Each entry is a ``edge_min.subsystem.Subsystem`` subclass living in its own package; a
subsystem comes after everything its ``needs`` names. The boot chain check is first (it
refuses before any data is opened); the monitor is last: it gathers the health checks,
metrics, alert actions and uplink the others contribute.
"""

from __future__ import annotations

from edge_min.lifecycle.subsystem import Lifecycle
from edge_min.monitor.subsystem import Monitoring
from edge_min.security.attestation import Attestation
from edge_min.security.boot import SecureBoot
from edge_min.security.encryption import Encryption
from edge_min.security.subsystem import Security
from edge_min.security.tamper import Tamper
from edge_min.store.subsystem import Storage
from edge_min.subsystem import Subsystem
from edge_min.sync.subsystem import Sync
from edge_min.update.follow import RolloutFollower
from edge_min.update.subsystem import Update
from edge_min.workflows.subsystem import Workflows

SUBSYSTEMS: tuple[type[Subsystem], ...] = (
    SecureBoot,  # first: with security.secure_boot, nothing opens on an unverified boot chain
    Storage,
    Encryption,
    Workflows,
    Sync,
    Security,
    Tamper,
    Attestation,  # after tamper: a quote carries measurements tamper has taken
    RolloutFollower,  # staged rollouts from central (edge_min.update.follow)
    Lifecycle,  # its report reads the monitor's health when it runs, not when it opens
    Update,  # a slot on trial commits on the monitor's health, read once the loop turns
    Monitoring,
)
