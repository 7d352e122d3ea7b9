"""The supervisor: starts the right slot, counts the tries of a trial, falls back.

``edge-min update supervise`` is what the systemd unit (or setup.sh's background runner)
runs instead of ``edge-min run``. In a loop it

1. asks the installer which slot to start (``Installer.begin_start``): the slot on trial,
   its try counted in the state file *before* the start, or the active one; after
   ``MAX_TRIES`` failed tries the trial is given up and the active slot starts again;
2. checks the slot's files against the digest recorded at install (a slot that does not
   match is never started), and puts back the database backup of a slot that cannot read
   the database a newer version migrated (``Installer.ready_db``);
3. starts ``<slot>/edge-min [--config C] [--data-dir D] run`` with ``EDGE_MIN_UPDATE_ROOT``,
   ``EDGE_MIN_UPDATE_SLOT`` and ``EDGE_MIN_UPDATE_TRY`` in its environment, so the runtime's
   ``Update`` subsystem knows it is on trial and commits once healthy;
4. watches it: a trial that exits, reports itself unhealthy or has not committed within
   ``update.health_timeout`` is stopped and counted as failed; a committed slot that exits
   is started again (backing off 1, 2, 4 ... 30 s), never swapped for the other slot; a
   switch or rollback written by a command stops the child and starts the new choice.

``<root>/supervisor.json`` says what runs (pid, slot, try, child pid) for ``update status``.
A SIGTERM stops the child (SIGTERM, then SIGKILL after 30 s) and then the supervisor.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_min.update.installer import Installer
from edge_min.update.slots import (
    NoPreviousVersion,
    SlotBusy,
    SlotDigestMismatch,
    SlotError,
    program,
    verify_slot,
)

if TYPE_CHECKING:
    from edge_min.platform.child import Child

log = logging.getLogger("edge_min.update")

ENV_ROOT = "EDGE_MIN_UPDATE_ROOT"
ENV_SLOT = "EDGE_MIN_UPDATE_SLOT"
ENV_TRY = "EDGE_MIN_UPDATE_TRY"
STATUS_FILE = "supervisor.json"
SUPERVISOR_LOCK = "supervisor.lock"
POLL = 0.2
MAX_BACKOFF = 30.0
STABLE_RUN = 60.0  # a committed child that ran this long resets the restart backoff


class Supervisor:
    """Run the device's slots until stopped (see the module docstring)."""

    def __init__(
        self,
        installer: Installer,
        run_args: Sequence[str],
        *,
        db: Path | None,
        health_timeout: float,
        log_file: Path,
        announce: Callable[[str], object] = lambda line: print(line, flush=True),
    ) -> None:
        self.installer = installer
        self.root = installer.root
        self.run_args = list(run_args)
        self.db = db
        self.health_timeout = health_timeout
        self.log_file = log_file
        self.announce = announce
        self.clock = installer.clock
        self.step = installer.step
        self._stopping: list[int] = []
        self._waiter: Any = None

    def run(self) -> int:
        """Supervise until SIGTERM/SIGINT; the exit code (2: nothing bootable)."""
        from edge_min.platform.locks import DataDirLock
        from edge_min.platform.loop import PosixLoopHost

        lock = DataDirLock(self.root / SUPERVISOR_LOCK)
        if not lock.acquire():
            raise SlotBusy(
                f"another supervisor (pid {lock.holder()}) already runs {self.root}; stop it first"
            )
        host = PosixLoopHost()
        self._waiter = host.waiter()

        def on_stop(signum: int) -> None:
            self._stopping.append(signum)
            self._waiter.set()

        undo = host.on_stop(on_stop)
        try:
            return self._loop()
        finally:
            undo()
            self._waiter.close()
            (self.root / STATUS_FILE).unlink(missing_ok=True)
            lock.release()

    def _sleep(self, seconds: float) -> None:
        self._waiter.wait(seconds)
        self._waiter.clear()

    def _loop(self) -> int:
        backoff = 1.0
        while not self._stopping:
            slot, tries = self.installer.begin_start(self.db)
            if slot is None:
                self.announce("edge-min update: no slot is installed; install-payload first")
                return 2
            if not self._bootable(slot, tries):
                if tries == 0 and not self._rescue(slot):
                    return 2
                continue
            if self.db is not None and self.installer.ready_db(slot, self.db):
                self.announce(f"edge-min update: restored the database slot {slot} can read")
            child = self._start(slot, tries)
            began = self.clock.monotonic()
            outcome = self._watch(child, slot, tries)
            if outcome == "crashed":
                if self.clock.monotonic() - began > STABLE_RUN:
                    backoff = 1.0
                self._sleep(backoff)
                backoff = min(MAX_BACKOFF, backoff * 2)
            elif outcome == "failed":
                self._sleep(0.5)
        return 0

    def _bootable(self, slot: str, tries: int) -> bool:
        try:
            verify_slot(self.root, self.installer.state(), slot)
            return True
        except SlotDigestMismatch as exc:
            self.announce(f"edge-min update: {exc}")
            if tries:
                self.installer.rollback(f"not started: {exc}")
            return False

    def _rescue(self, slot: str) -> bool:
        """The committed slot cannot start: the other good version is the only way on."""
        try:
            to = self.installer.rollback(f"active slot {slot} does not match its digest")
        except NoPreviousVersion as exc:
            self.announce(f"edge-min update: nothing bootable: {exc}")
            return False
        self.announce(f"edge-min update: slot {slot} is damaged; starting slot {to}")
        return True

    def _start(self, slot: str, tries: int) -> Child:
        from edge_min.platform.child import current_environment, start_child

        env = current_environment()
        env.update({ENV_ROOT: str(self.root), ENV_SLOT: slot, ENV_TRY: str(tries)})
        self.step("child.start")
        child = start_child([str(program(self.root, slot)), *self.run_args], env, self.log_file)
        version = self.installer.state()["slots"][slot]["version"]
        self._write_status({"slot": slot, "try": tries, "child_pid": child.pid, "version": version})
        what = f"try {tries} of slot {slot}" if tries else f"slot {slot}"
        self.announce(f"edge-min update: started {what} ({version}), pid {child.pid}")
        self.step("child.started")
        return child

    def _write_status(self, view: dict[str, Any]) -> None:
        path = self.root / STATUS_FILE
        tmp = path.with_name(f".{STATUS_FILE}.tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), **view}))
        os.replace(tmp, path)

    def _watch(self, child: Child, slot: str, tries: int) -> str:
        """Until the child should stop: ``stopped``, ``failed``, ``crashed`` or ``switch``."""
        started = self.clock.monotonic()
        while True:
            if self._stopping:
                child.stop()
                return "stopped"
            rc = child.poll()
            try:
                st = self.installer.state()
            except SlotError as exc:  # hand-edited; keep the child, say so
                log.error("%s", exc)
                st = None
            if tries and st is not None:
                trying = st["trying"]
                if trying is None or trying["slot"] != slot:
                    if st["active"] == slot:
                        self.announce(f"edge-min update: slot {slot} committed")
                        tries = 0  # from now on a committed slot
                        continue
                    child.stop()
                    return "switch"
                if trying.get("unhealthy"):
                    child.stop()
                    self.announce(f"edge-min update: try {tries} unhealthy: {trying['unhealthy']}")
                    return "failed"
                if rc is not None:
                    reason = f"exited with status {rc} before it was committed (try {tries})"
                    self.installer.failed_start(slot, tries, reason)
                    self.announce(f"edge-min update: {reason}")
                    return "failed"
                if self.clock.monotonic() - started > self.health_timeout:
                    child.stop()
                    reason = f"not healthy within update.health_timeout ({self.health_timeout:g}s)"
                    self.installer.failed_start(slot, tries, reason)
                    self.announce(f"edge-min update: try {tries}: {reason}")
                    return "failed"
            elif st is not None and (st["trying"] is not None or st["active"] != slot):
                child.stop()
                return "switch"
            elif rc is not None:
                self.announce(f"edge-min update: slot {slot} exited with status {rc}; restarting")
                return "crashed"
            self._sleep(POLL)
