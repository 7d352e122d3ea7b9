"""The update subsystem: a runtime started from a slot on trial commits it once healthy.

The supervisor (``edge_min.update.supervisor``) starts a slot with ``EDGE_MIN_UPDATE_ROOT``,
``EDGE_MIN_UPDATE_SLOT`` and ``EDGE_MIN_UPDATE_TRY`` set. At ``open`` this subsystem records
the boot attempt in the state file; while the slot is on trial, every turn of the loop asks
the monitor for the runtime's own health (what ``GET /health`` answers): once it has been
``healthy`` without a break for ``update.commit_after`` seconds the slot is committed (with the
database schema it left, so a later rollback knows whether to restore). An ``unhealthy``
result is written to the state file, and the supervisor stops this try.

A runtime not started by a supervisor (a plain ``edge-min run``) has nothing on trial: its
status says ``supervised: false``. Contributes ``status()``, the metrics ``update_trial``
(1 while on trial) and ``update_tries``, and the ``edge-min update ...`` commands.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edge_min.subsystem import Command, Subsystem
from edge_min.update.supervisor import ENV_ROOT, ENV_SLOT, ENV_TRY

log = logging.getLogger("edge_min.update")

TRIAL_TURN = 0.25  # seconds between health looks while on trial


class Update(Subsystem):
    """The A/B trial of the slot this runtime was started from."""

    name = "update"
    # Not "monitor": the monitor opens last (it gathers this one's metrics); its health is
    # read from the first loop turn on, when every subsystem is open.
    needs = ("storage",)

    def open(self) -> None:
        """Find the slot this runtime runs from and record the boot attempt."""
        from edge_min.update.installer import Installer

        root = os.environ.get(ENV_ROOT)
        self.slot = os.environ.get(ENV_SLOT)
        self.tries = int(os.environ.get(ENV_TRY) or 0)
        self.installer = Installer(Path(root), self.host.clock) if root and self.slot else None
        self.commit_after = self.host.config.update.commit_after
        self.healthy_since: float | None = None
        self.told_unhealthy = False
        self.committed = False
        self.trial = self.installer is not None and self.tries > 0
        if self.installer is not None:  # a commit whose trust record a power cut cut off
            from edge_min.update.install import record_committed

            active = self.installer.state().get("active")
            if active and record_committed(self.installer.root, active, self.host.paths.root):
                log.info("update trust: recorded slot %s's committed update", active)
        if self.installer is not None and self.slot is not None and self.trial:
            self.installer.opened(self.slot, self.tries)
            log.info("slot %s on trial (try %d): commits after %gs healthy",
                     self.slot, self.tries, self.commit_after)  # fmt: skip

    def _overall(self) -> tuple[str, str]:
        from edge_min.monitor.subsystem import Monitoring

        found = self.host.find(Monitoring)
        if found is None:  # no health to judge by: the trial runs out (update.health_timeout)
            return "starting", "this runtime has no monitor"
        monitor = found.monitor
        overall = monitor.overall()
        failing = [c for c in monitor.checks.views() if c.get("status") == "fail"]
        why = "; ".join(f"{c['name']}: {str(c.get('output') or '')[:200]}" for c in failing)
        if monitor.stalled():
            why = "the loop stalled" + (f"; {why}" if why else "")
        return overall, why or overall

    def tick(self, now: float) -> float | None:
        """While on trial: commit after ``commit_after`` healthy seconds; report unhealthy."""
        if not self.trial or self.installer is None or self.slot is None:
            return None
        overall, why = self._overall()
        if overall == "healthy":
            if self.healthy_since is None:
                self.healthy_since = now
            if now - self.healthy_since >= self.commit_after:
                self._commit()
                return None
        else:
            self.healthy_since = None
            if overall == "unhealthy" and not self.told_unhealthy:
                self.told_unhealthy = True
                self.installer.unhealthy(self.slot, self.tries, f"health failed: {why}")
                log.error("slot %s on trial is unhealthy: %s", self.slot, why)
        return now + TRIAL_TURN

    def _commit(self) -> None:
        from edge_min.update.installer import schema_version

        assert self.installer is not None and self.slot is not None
        from edge_min.update.install import record_committed

        self.installer.commit(self.slot, schema=schema_version(self.host.paths.db))
        recorded = record_committed(self.installer.root, self.slot, self.host.paths.root)
        if recorded:  # older versions and older metadata are refused from now on
            log.info("update trust: %s recorded as installed", recorded)
        self.trial = False
        self.committed = True
        log.info("slot %s committed after %gs of health", self.slot, self.commit_after)

    def status(self) -> Mapping[str, Any]:
        """``update``: the slot this runtime runs from, its version, whether it is on trial."""
        if self.installer is None:
            return {"update": {"supervised": False}}
        st = self.installer.state()
        record = st["slots"].get(self.slot or "", {})
        return {
            "update": {
                "supervised": True,
                "slot": self.slot,
                "version": record.get("version"),
                "active": st["active"],
                "trial": self.trial,
                "try": self.tries,
                "commit_after": self.commit_after,
                "committed_here": self.committed,
                "pending_report": self.installer.pending_report(),
            }
        }

    def metrics(self) -> Mapping[str, float]:
        """``update_trial`` (1 while this slot is on trial) and ``update_tries``."""
        if self.installer is None:
            return {}
        return {"update_trial": 1.0 if self.trial else 0.0, "update_tries": float(self.tries)}

    @classmethod
    def commands(cls) -> Sequence[Command]:
        """``update install|trust|install-payload|rollback|status|wait|supervise`` and the build
        side's ``update keys|bundle|verify``."""
        from edge_min.update.bundle_commands import BUNDLE_COMMANDS
        from edge_min.update.commands import COMMANDS

        return [*COMMANDS, *BUNDLE_COMMANDS]
