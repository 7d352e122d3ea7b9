"""The lifecycle subsystem: the device's report to central, its enrollment status, commands.

Every ``sync.sync_interval`` (and once at start) it sends ``POST /api/devices/self/report``
through the sync subsystem's uplink (the same mutual TLS and device identity as sync):
``version`` (edge_min's), ``slot`` (the ``slot`` of an ``update`` subsystem's status, when
one is assembled; else null), ``health`` (the monitor's overall health), ``alerts_firing``
(the names of firing alerts), ``rollout`` (an ``update`` subsystem's ``rollout`` status,
else null), and ``storage`` where the platform has storage facts of its own
(``Platform.storage_facts``: a browser tab's backend, whether persistence was granted, quota
and usage; left out elsewhere). Central keeps the newest for ``GET /api/devices``. Without
the sync subsystem (local commands) or while offline nothing is sent. The request runs on
the subsystem's own worker when the runtime has threads (a central that does not answer
never stalls the loop); a report still in flight when the next falls due is not doubled. A
failed report is kept in the status and tried again at the next interval.

``status()`` is the ``lifecycle`` section of ``edge-min status``: whether the device is
enrolled (``<data>/enrollment.json``), as which id, with which certificate serial and until
when, and the last report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from edge_min.clock import iso
from edge_min.errors import EdgeError
from edge_min.subsystem import Command, Job, Subsystem

if TYPE_CHECKING:
    from edge_min.platform.executor import Executor, Handle

REPORT_PATH = "/api/devices/self/report"


class Lifecycle(Subsystem):
    """Enrollment status and the periodic report to central."""

    name = "lifecycle"
    needs = ("storage",)

    def open(self) -> None:
        """Nothing to open: the report looks up its sources when it runs."""
        self.last_report: dict[str, Any] = {"at": None, "error": None}
        self.worker: Executor | None = None
        self._inflight: Handle | None = None
        if self.host.threaded and self.host.find(_sync_kind()) is not None:
            self.worker = self.host.executor("lifecycle", 1)

    def jobs(self) -> Sequence[Job]:
        """``lifecycle.report`` every sync interval, the first right away."""
        if self.host.find(_sync_kind()) is None:
            return ()
        every = float(self.host.config.sync.sync_interval)
        return [Job("lifecycle.report", every, self.report, first=0.0)]

    def build_report(self) -> dict[str, Any]:
        """What the device tells central about itself."""
        from edge_min import __version__

        report: dict[str, Any] = {
            "version": __version__,
            "slot": None,
            "health": None,
            "alerts_firing": [],
            "rollout": None,
        }
        for sub in self.host.subsystems():
            if sub.name == "update":  # under the A/B supervisor: the slot's own version
                status = dict(sub.status().get("update") or {})
                report["slot"] = status.get("slot")
                report["version"] = status.get("version") or report["version"]
            monitor = getattr(sub, "monitor", None)
            if sub.name == "monitor" and monitor is not None:
                report["health"] = monitor.overall()
                report["alerts_firing"] = sorted(monitor.alerts.firing())
        if report["health"] == "starting":
            report["health"] = None
        storage = self.host.platform.storage_facts()
        if storage is not None:
            report["storage"] = dict(storage)
        return report

    def report(self) -> None:
        """Send the report to central (when online); the outcome goes to the status."""
        sync = self.host.find(_sync_kind())
        uplink = sync.uplink() if sync is not None else None
        if uplink is None or not self.host.online:
            return
        if self._inflight is not None and not self._inflight.done():
            return
        at = iso(self.host.clock.time())
        payload = self.build_report()

        def send() -> None:
            try:
                uplink(REPORT_PATH, payload)
            except EdgeError as exc:
                self.last_report = {"at": self.last_report["at"], "error": f"{at}: {exc.message}"}
                return
            self.last_report = {"at": at, "error": None}

        if self.worker is None:
            send()
        else:
            self._inflight = self.worker.submit(send)

    def status(self) -> Mapping[str, Any]:
        """Enrollment and the last report."""
        from edge_min.lifecycle.enroll import EnrollmentError, enrollment_record

        try:
            record = enrollment_record(self.host.paths.root)
        except EnrollmentError as exc:
            return {"lifecycle": {"enrolled": False, "error": exc.message}}
        out: dict[str, Any] = {"enrolled": record is not None, "report": dict(self.last_report)}
        if record is not None:
            for key in ("device_id", "central_url", "serial", "not_after", "enrolled_at", "tags"):
                out[key] = record.get(key)
        return {"lifecycle": out}

    @classmethod
    def commands(cls) -> Sequence[Command]:
        """``enroll`` and ``decommission`` (``edge_min.lifecycle.commands``)."""
        from edge_min.lifecycle import commands as c

        return [
            Command(
                ("enroll",),
                "enroll with central: a claim token in; certificate, CA and sync key out",
                "edge-min enroll --central https://central:8765 --token emt_... "
                "--ca-sha256 3f2a...",
                c.enroll_command,
                c.enroll_arguments,
            ),
            Command(
                ("decommission",),
                "crypto-erase this device (master key first, then data) and retire it at central",
                "edge-min decommission --yes",
                c.decommission_command,
                c.decommission_arguments,
            ),
        ]


def _sync_kind() -> Any:
    from edge_min.sync.subsystem import Sync

    return Sync
