"""The tamper subsystem: integrity checks at start and every interval, and the response.

``tamper_detection`` in edge-security.yaml names the checks (``edge_min.security.measure``):

- ``boot_integrity``: the program's files against its signed manifest
  (``edge_min.security.manifest``); an absent manifest is a startup error naming the fix.
- ``filesystem_integrity``: the loaded config files and each agent's model file and command
  script, against the baseline taken when they were added.
- ``hardware_integrity``: the platform's hardware fingerprint, against the baseline.

The baselines of the last two are taken at the first start (trust on first use) and kept in
the ``meta`` table; so is the program's signer when no build key is provisioned. A
legitimate change re-measures: ``agent add`` (through ``remeasure``), ``edge-min security
accept`` (admin). On a difference the ``response`` runs once per new set of differences:

- ``log``: a warning and a ``sync_log`` entry (operation ``tamper``);
- ``alert``: that, and the ``tamper_detected`` alert queued for central (notify_central);
- ``lockdown``: that, and the host's gate closes (``edge_min.gate``: the API answers 423,
  runs stop at a step boundary, sync stops), data keys are dropped from memory
  (``KeyHolder``) once the runs in flight have recorded their stop (``Drainer``, at most
  ``DRAIN_LIMIT``), the tamper report goes to central, and the lockdown is recorded in the
  database so it survives a restart. Only ``unlock`` (an admin) lifts it, after measuring
  again; who and when go to ``sync_log``.

States: ``ok``, ``tampered`` (a difference under ``log``/``alert``, until accepted),
``locked_down``; ``disabled`` when tamper_detection.enabled is false (a recorded lockdown
still holds). Routes and commands are in ``edge_min.security.tamper_api``.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from edge_min.clock import iso
from edge_min.errors import KeysDropped, UsageError
from edge_min.gate import LOCKDOWN_KEY, TAMPER_REPORT_KIND, lockdown_record
from edge_min.security import measure
from edge_min.security.manifest import (
    Manifest,
    ManifestInvalid,
    TamperError,
    read_manifest,
    this_program,
    trusted_build_keys,
)
from edge_min.subsystem import (
    ApiContext,
    ApiRoute,
    CheckFn,
    Command,
    Drainer,
    Job,
    KeyHolder,
    Subsystem,
)

if TYPE_CHECKING:
    from edge_min.store import Store

log = logging.getLogger("edge_min.security")

OK, TAMPERED, LOCKED, DISABLED = "ok", "tampered", "locked_down", "disabled"
BASELINE_KEY = "security.tamper.baseline"
REPORT_KEY = "security.tamper.report"  # the tamper report central has not acknowledged yet
ALERT_NAME = "tamper_detected"
REPORT_RETRY_SECONDS = 30.0
DRAIN_LIMIT = 60.0  # seconds a lockdown waits for steps in flight before it drops the keys
BASELINED = ("filesystem_integrity", "hardware_integrity")


class Tamper(Subsystem):
    """Integrity checks and the lockdown; ``measurements()``, ``state``, ``lockdown()``."""

    name = "tamper"
    needs = ("storage",)

    store: Store

    def open(self) -> None:
        """Restore a recorded lockdown, then check once before any run can start."""
        from edge_min.store.subsystem import Storage

        self.settings = self.host.config.security_config.tamper_detection
        self.store = self.host.get(Storage).store
        self.state = OK if self.settings.enabled else DISABLED
        self.locked: dict[str, Any] | None = None
        self.latest: dict[str, measure.Measurement] = {}
        self.results: dict[str, dict[str, Any]] = {}
        self.last_check_at: float | None = None
        self._responded: tuple[str, ...] = ()
        self._notices: list[Callable[[], None]] = []
        self._keys_dropped = False
        self._report_at = 0.0
        self._taken: dict[str, Any] = {}
        # Found by the check at open: answered on the first turn of the loop, once every
        # subsystem is open; meanwhile a lockdown response holds the gate shut in memory.
        self._pending: dict[str, list[str]] | None = None
        record = lockdown_record(self.store.meta)
        if record is not None:
            # Still locked down: the gate closes now; the keys go on the first turn, once
            # the check below has measured (agents' files are named in sealed rows) and its
            # finding is recorded.
            self._close(record, drop=False)
        if not self.settings.enabled:
            return
        if "boot_integrity" in self.settings.checks:
            self._manifest()  # ManifestMissing: a startup error that names the fix
        self.check(respond=False)

    # -- the checks --------------------------------------------------------------------------

    def jobs(self) -> Sequence[Job]:
        """``security.tamper_check`` every ``tamper_detection.interval``."""
        if not self.settings.enabled:
            return []
        return [Job("security.tamper_check", self.settings.interval, self.check)]

    def check(self, respond: bool = True) -> dict[str, list[str]]:
        """Measure every configured check now; respond to differences; the differences.

        With ``respond=False`` (the check at open) the response waits for the first turn of
        the loop, but a lockdown's gate closes at once, so no run starts before it.
        """
        record = lockdown_record(self.store.meta)  # another process may have locked down
        if record is not None and self.state != LOCKED:
            self._close(record)
        now = self.host.clock.time()
        baseline = self._baseline()
        found: dict[str, list[str]] = {}
        pinned = False
        for check in self.settings.checks:
            current, diffs, first = self._measure(check, baseline)
            self.latest[check] = current
            pinned |= first
            self.results[check] = {
                "status": "tampered" if diffs else "ok",
                "measured_at": iso(now),
                "items": len(current),
                "differences": diffs,
            }
            if diffs:
                found[check] = diffs
        if pinned:
            self._save_baseline(baseline, "first start (trust on first use)")
            log.info("tamper detection: baseline taken at first start (trust on first use)")
        self.last_check_at = now
        if respond:
            self._pending = None  # this check's findings supersede the one at open
        if found and respond:
            self._respond(found)
        elif found:
            self._pending = found
            if self.settings.response == "lockdown":
                self.host.gate.close(f"tamper detected at start: {', '.join(found)}")
        return found

    def _measure(
        self, check: str, baseline: dict[str, Any]
    ) -> tuple[measure.Measurement, list[str], bool]:
        """(current measurement, differences, whether a first baseline was taken)."""
        if check == "boot_integrity":
            program = this_program()
            current = measure.measure_program(program.files())
            try:
                manifest = self._manifest()
            except ManifestInvalid as exc:  # a foreign or broken signature is tampering too
                return current, [f"manifest: {exc.message}"], False
            first = False
            if trusted_build_keys() is None:
                pin = baseline.get("build_key")
                if pin is None:
                    baseline["build_key"], first = manifest.public_key, True
                elif pin != manifest.public_key:
                    return (
                        current,
                        [
                            f"manifest: signed by {manifest.public_key[:16]}..., "
                            f"not the pinned build key {pin[:16]}..."
                        ],
                        False,
                    )
            return current, measure.differences(manifest.files, current), first
        current = self._current(check)
        known = baseline.get(check)
        if known is None:
            baseline[check] = current
            return current, [], True
        return current, measure.differences(known, current), False

    def _current(self, check: str) -> measure.Measurement:
        if check == "hardware_integrity":
            return measure.fingerprint(self.host.platform.hardware_facts())
        return measure.measure_files(self._filesystem_paths())

    def _filesystem_paths(self) -> list[str]:
        from edge_min.agents.registry import BUILTINS

        paths = measure.config_files(self.host.config.files)
        for name in sorted(r["name"] for r in self.store.agents.list()):
            if name not in BUILTINS:  # part of the program: boot_integrity's
                paths += self._agent_paths(name)
        return paths

    def _agent_paths(self, name: str) -> list[str]:
        from edge_min.workflows.subsystem import Workflows

        workflows = self.host.find(Workflows)
        if workflows is None:
            return []
        try:
            return measure.agent_files(workflows.agents.config(name))
        except Exception as exc:  # an agent whose config no longer parses: its row counts
            log.warning("tamper detection: agent %s not measurable: %s", name, exc)
            return []

    def _manifest(self) -> Manifest:
        return read_manifest(this_program().manifest_path, trusted_build_keys())

    # -- baselines ---------------------------------------------------------------------------

    def _baseline(self) -> dict[str, Any]:
        raw = self.store.meta.get(BASELINE_KEY)
        baseline = dict(json.loads(raw)) if raw else {}
        # Kept for view(), which API threads call: they may not use this connection.
        self._taken = {"at": baseline.get("at"), "by": baseline.get("by")}
        return baseline

    def _save_baseline(self, baseline: dict[str, Any], by: str) -> None:
        baseline.update(at=iso(self.host.clock.time()), by=by)
        self.store.meta.set(BASELINE_KEY, json.dumps(baseline, sort_keys=True))
        self._taken = {"at": baseline["at"], "by": by}

    def accept(self, what: str = "all", by: str = "unknown") -> dict[str, Any]:
        """Take ``what`` (a check, ``agent:NAME`` or ``all``) as it is now: new baselines."""
        if self.locked is not None:  # accepting would whitewash it: unlock is the way out
            self.host.gate.check(f"accepting changes ({what})")
        baseline = self._rebaseline(what)
        self._save_baseline(baseline, by)
        self.store.sync_log.append("accept", "security", "tamper", "ok", {"what": what, "by": by})
        log.info("tamper detection: %s re-measured and accepted by %s", what, by)
        self._pending = None
        remaining = self.check()
        if not remaining and self.state == TAMPERED:
            self.state, self._responded = OK, ()
        if not remaining and self.locked is None:
            self.host.gate.open()  # shut only by the check at open, which this answers
        return self.view()

    def remeasure(self, what: str, by: str) -> None:
        """A legitimate change (``agent add``): re-measure what it touched (``Remeasurer``)."""
        if self.settings.enabled and "filesystem_integrity" in self.settings.checks:
            self.accept(what, by)

    def _rebaseline(self, what: str) -> dict[str, Any]:
        checks = list(self.settings.checks) if what == "all" else [what]
        if what.startswith("agent:"):
            checks = ["filesystem_integrity"]
        baseline = self._baseline()
        for check in checks:
            if check == "boot_integrity":
                manifest = self._manifest()  # a program change needs a newly signed manifest
                diffs = measure.differences(
                    manifest.files, measure.measure_program(this_program().files())
                )
                if diffs:
                    raise TamperError(
                        f"the program still differs from its signed manifest ({diffs[0]}"
                        f"{', ...' if len(diffs) > 1 else ''}); reinstall it, or sign a new "
                        "manifest at build time"
                    )
                if trusted_build_keys() is None:
                    baseline["build_key"] = manifest.public_key
            elif check in BASELINED:
                current = self._current(check)
                if what.startswith("agent:"):  # only that agent's files; the rest stay as were
                    items = set(self._agent_paths(what.split(":", 1)[1]))
                    old = baseline.get(check, {})
                    merged = {k: v for k, v in old.items() if k in current}  # dereferenced: out
                    merged.update({k: current[k] for k in items if k in current})
                    current = merged
                baseline[check] = current
            else:
                raise UsageError(f"unknown check {check!r}; use one of {', '.join(measure.CHECKS)}")
        return baseline

    # -- the response ------------------------------------------------------------------------

    def _respond(self, found: Mapping[str, list[str]]) -> None:
        key = tuple(f"{c}: {d}" for c, ds in sorted(found.items()) for d in ds)
        if key == self._responded:
            return  # told once; a new difference is told again
        self._responded = key
        response = self.settings.response
        summary = "; ".join(
            f"{c}: {', '.join(ds[:3])}{', ...' if len(ds) > 3 else ''}" for c, ds in found.items()
        )
        log.warning("tamper detected (response %s): %s", response, summary)
        details = {"checks": dict(found), "response": response}
        self.store.sync_log.append("tamper", "security", "tamper", "detected", details)
        if self.state == OK:
            self.state = TAMPERED
        if response == "alert":
            self._notices.append(lambda: self._alert(found, summary))
        elif response == "lockdown":
            self.lockdown(f"tamper detected: {summary}", checks=dict(found))

    def _alert(self, found: Mapping[str, list[str]], summary: str) -> None:
        from edge_min.monitor.subsystem import Monitoring

        monitoring = self.host.find(Monitoring)
        if monitoring is None:
            log.warning("alert %s: no monitor in this runtime to notify central", ALERT_NAME)
            return
        payload = {
            "alert": ALERT_NAME,
            "state": "firing",
            "severity": "critical",
            "message": summary,
            "checks": dict(found),
        }
        nid = monitoring.monitor.outbox.enqueue("alert", payload, self.host.clock.time())
        log.warning("alert %s firing: %s (notify_central: queued %s)", ALERT_NAME, summary, nid)

    def lockdown(
        self, reason: str, *, checks: Mapping[str, Any] | None = None, by: str = "tamper detection"
    ) -> None:
        """Lock the device down now (tamper found, or central asked); survives restarts."""
        if self.state == LOCKED:
            return
        now = iso(self.host.clock.time())
        record = {"reason": reason, "at": now, "by": by, "checks": dict(checks or {})}
        self.store.meta.set(LOCKDOWN_KEY, json.dumps(record, sort_keys=True))
        report = {
            "kind": TAMPER_REPORT_KIND,
            "alert": ALERT_NAME,
            "severity": "critical",
            "state": LOCKED,
            "message": reason,
            "at": now,
            "checks": record["checks"],
        }
        self.store.meta.set(REPORT_KEY, json.dumps(report, sort_keys=True))
        self.store.sync_log.append("lockdown", "security", "tamper", LOCKED, record)
        self._close(record)
        log.error(
            "device locked down: %s; an admin lifts it with `edge-min security unlock`", reason
        )

    def _close(self, record: dict[str, Any], drop: bool = True) -> None:
        self.locked = record
        self.state = LOCKED
        self.host.gate.close(str(record.get("reason")))
        # The keys go once the runs in flight have stopped at their step boundary and
        # recorded it (sealed), or after DRAIN_LIMIT: a step still running then is re-run
        # after an unlock, as after a crash.
        self._keys_dropped = False
        self._drop_by = self.host.clock.monotonic() + DRAIN_LIMIT
        if drop:
            self._drop_when_drained()

    def _drop_when_drained(self) -> None:
        waiting = [
            sub.name
            for sub in self.host.subsystems()
            if sub is not self and isinstance(sub, Drainer) and not sub.drained()
        ]
        if not waiting:
            self._drop_keys()
        elif self.host.clock.monotonic() >= self._drop_by:
            log.warning(
                "lockdown: %s still busy after %.0fs; dropping the data keys anyway",
                ", ".join(waiting),
                DRAIN_LIMIT,
            )
            self._drop_keys()

    def _drop_keys(self) -> None:
        for sub in self.host.subsystems():
            if sub is not self and isinstance(sub, KeyHolder):
                try:
                    sub.drop_keys()
                except Exception:  # the others must still drop theirs
                    log.exception("lockdown: %s could not drop its keys", sub.name)
        self._keys_dropped = True

    def _restore_keys(self) -> None:
        for sub in self.host.subsystems():
            if sub is not self and isinstance(sub, KeyHolder):
                sub.restore_keys()
        self._keys_dropped = False

    def unlock(self, by: str) -> dict[str, Any]:
        """Lift the lockdown (an admin): measure again, new baselines, record who and when."""
        if self.state != LOCKED or self.locked is None:
            raise UsageError("the device is not locked down; nothing to unlock")
        record = self.locked
        self._restore_keys()  # the records below are sealed: the keys are needed to write them
        try:
            baseline = self._rebaseline("all") if self.settings.enabled else self._baseline()
            self._save_baseline(baseline, by)
            at = iso(self.host.clock.time())
            details = {"by": by, "at": at, "lockdown": record}
            with self.store.atomic():
                self.store.meta.delete(LOCKDOWN_KEY)
                self.store.meta.delete(REPORT_KEY)
                self.store.sync_log.append("unlock", "security", "tamper", "ok", details)
        except BaseException:
            self._drop_keys()  # still locked down
            raise
        self.host.gate.open()
        self.locked, self._responded = None, ()
        self.state = OK if self.settings.enabled else DISABLED
        log.warning("lockdown lifted by %s at %s", by, at)
        if self.settings.enabled:
            self.check()
        return self.view()

    # -- the loop, the API's view, what others read ---------------------------------------

    def tick(self, now: float) -> float | None:
        """Respond to what the check at open found; send alerts and the tamper report."""
        if self._pending is not None:
            found, self._pending = self._pending, None
            self._respond(found)
        while self._notices:
            self._notices.pop(0)()
        if self.state == LOCKED and not self._keys_dropped:
            self._drop_when_drained()
        if now >= self._report_at and self.store.meta.get(REPORT_KEY) and self.host.online:
            self._send_report(now)
        return None

    def _send_report(self, now: float) -> None:
        raw = self.store.meta.get(REPORT_KEY)
        uplink = next((u for s in self.host.subsystems() if (u := s.uplink())), None)
        if not raw or uplink is None:
            return
        try:
            uplink("/api/alerts", json.loads(raw))
        except Exception as exc:  # central unreachable: try again later, never lose it
            self._report_at = now + REPORT_RETRY_SECONDS
            log.warning(
                "tamper report not delivered (retry in %.0fs): %s", REPORT_RETRY_SECONDS, exc
            )
            return
        self.store.meta.delete(REPORT_KEY)
        log.info("tamper report delivered to central")

    def measurements(self, fresh: bool = False) -> dict[str, dict[str, str]]:
        """The latest measurement: check name -> item -> sha256 hex (for attestation).

        ``fresh`` (a quote is being made) checks again first, responding as the timed
        check does, so a quote never carries a measurement older than the moment it is
        made; while a lockdown holds the keys (the agents' rows are sealed) the last
        measurement stands.
        """
        if fresh and self.settings.enabled:
            with contextlib.suppress(KeysDropped):
                self.check()
        return {check: dict(items) for check, items in self.latest.items()}

    def view(self) -> dict[str, Any]:
        """``GET /security/status``: each check, its last measurement, the state."""
        return {
            "state": self.state,
            "enabled": self.settings.enabled,
            "response": self.settings.response,
            "interval_s": self.settings.interval,
            "last_check_at": iso(self.last_check_at) if self.last_check_at else None,
            "lockdown": self.locked,
            "keys_dropped": self._keys_dropped,
            "baseline": dict(self._taken),
            "checks": {
                c: {**self.results.get(c, {}), "measurement": self.latest.get(c, {})}
                for c in self.settings.checks
            },
        }

    def status(self) -> Mapping[str, Any]:
        """The tamper state in ``edge-min status``."""
        return {"tamper": {"state": self.state, "locked_down": self.locked is not None}}

    def metrics(self) -> Mapping[str, float]:
        """``tamper_detected``: 1 while a difference stands or the device is locked down."""
        return {"tamper_detected": 0.0 if self.state in (OK, DISABLED) else 1.0}

    def health_checks(self) -> Mapping[str, CheckFn]:
        """``tamper``: healthy while no tampering stands."""
        return {"tamper": lambda: (self.state in (OK, DISABLED), f"tamper state {self.state}")}

    def routes(self, api: ApiContext) -> Sequence[ApiRoute]:
        """``/security/status``, ``/security/accept``, ``/security/unlock``, ``/lockdown``."""
        from edge_min.security.tamper_api import tamper_routes

        return tamper_routes(self, api)

    @classmethod
    def commands(cls) -> Sequence[Command]:
        """``security status|accept|unlock|manifest``."""
        from edge_min.security.tamper_api import COMMANDS

        return COMMANDS
