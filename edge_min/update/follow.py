"""Following central's staged rollouts on the device: ask, download with resume, install, report.

Each turn of ``Follower.follow_once`` (the subsystem runs one every ``sync.sync_interval``
while the link is up and the device is not locked down):

1. sends the state reports not yet delivered (``POST /api/updates/state``, oldest first; a
   report central refuses with a 4xx is dropped, a link failure keeps it for the next turn);
2. reports a fallback: the installer's ``pending_report()`` (the A/B supervisor went back
   to the old slot and kept why) becomes ``rolled_back`` with that reason, once;
3. reports ``committed`` once the installer's committed version is the one being installed
   (after a restart into the new slot, too: the progress is kept in a file);
4. asks ``GET /api/updates/assigned``: 204 drops a download under way (the rollout halted
   or was cancelled); an assignment is downloaded into ``<data>/update/downloads/`` in
   ranges of ``CHUNK_BYTES`` (``Range: bytes=N-``), appended to a ``.part`` file that
   survives a restart, so a cut link or a kill costs at most one range; the whole file is
   checked against the assignment's sha256 and length (a mismatch starts over, and the
   third one is reported ``failed``);
5. hands the file to the installer, ``install(bundle_path) -> None`` (a raise is
   ``failed`` with its message) and reports ``installing``, ``installed`` and what follows.

Every state change is reported with the version the device runs. Progress lives in
``<data>/update/follow.json``, written to a temporary file, fsynced and renamed: the one
truth of where this device is in which rollout, read again at start.

The installer is injected (``Follower(install=...)``). On a runtime started by the A/B
supervisor (``$EDGE_MIN_UPDATE_ROOT``), ``RolloutFollower`` gives it
``edge_min.update.install.install_bundle`` into those slots, the active slot's version as
the committed one, and the installer's ``pending_report()``; elsewhere an assignment fails
with a message saying the device is not supervised.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_min.clock import iso
from edge_min.errors import EdgeError
from edge_min.subsystem import Job, Subsystem
from edge_min.update.slots import Step, no_step

if TYPE_CHECKING:
    from edge_min.clock import Clock
    from edge_min.platform.executor import Executor, Handle
    from edge_min.sync.transport import Transport

log = logging.getLogger("edge_min.update.follow")

ASSIGNED_PATH = "/api/updates/assigned"
STATE_PATH = "/api/updates/state"
CHUNK_BYTES = 1024 * 1024  # one range request; well under the transport's answer limit
DOWNLOADS = Path("update") / "downloads"
STATE_FILE = Path("update") / "follow.json"
MAX_DIGEST_MISMATCHES = 3
TERMINAL = ("committed", "failed", "rolled_back")

Install = Callable[[Path], object]
ENV_ROOT = "EDGE_MIN_UPDATE_ROOT"  # set by the A/B supervisor (edge_min.update.supervisor)


class Follower:
    """The device side of staged rollouts over a transport to central (no runtime needed)."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        transport: Callable[[], Transport],
        clock: Clock,
        *,
        install: Install | None = None,
        committed_version: Callable[[], str | None] | None = None,
        pending_report: Callable[[], Any] | None = None,
        trial_version: Callable[[], str | None] | None = None,
        step: Step = no_step,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        """``trial_version`` is the version the installer has on trial (installed, switched
        to, not committed yet), if any; ``step`` is told of each durable step (a range
        appended, the state file written: the kill-9 tests count them); ``chunk_bytes`` is
        the size of one range request."""
        self.root = Path(root)
        self.downloads = self.root / DOWNLOADS
        self.state_path = self.root / STATE_FILE
        self._transport = transport
        self.clock = clock
        self._install = install
        self._committed_version = committed_version
        self._pending_report = pending_report
        self._trial_version = trial_version
        self._fresh = True  # no turn yet in this process: an "installing" state was cut off
        self.step = step
        self.chunk_bytes = chunk_bytes
        self.stopping = False
        self.state: dict[str, Any] = self._load()

    # -- the installer, injected or the default ----------------------------------------------

    def install(self, path: Path) -> None:
        """Hand ``path`` to the installer."""
        if self._install is None:
            raise EdgeError(
                "this runtime does not run under the A/B supervisor (`edge-min update "
                "supervise`, which sets $EDGE_MIN_UPDATE_ROOT), so it cannot install an "
                f"update; install {path.name} by hand with `edge-min update install`"
            )
        self._install(path)

    def committed_version(self) -> str | None:
        """The version the device runs and has committed."""
        if self._committed_version is not None:
            return self._committed_version()
        from edge_min import __version__

        return __version__

    def pending_report(self) -> Any:
        """What the installer still has to tell central (a fallback and its reason), or None."""
        if self._pending_report is not None:
            return self._pending_report()
        return None

    # -- one turn -----------------------------------------------------------------------------

    def follow_once(self) -> dict[str, Any]:
        """Report, ask, download, install: one turn (on a worker); the state after it."""
        try:
            self._turn()
            self.state["last"] = {"at": iso(self.clock.time()), "error": None}
        except EdgeError as exc:  # a link failure, a refusal: next turn tries again
            log.info("update follow: %s", exc.message)
            self.state["last"] = {"at": iso(self.clock.time()), "error": exc.message}
        except OSError as exc:
            log.warning("update follow: %s", exc)
            self.state["last"] = {"at": iso(self.clock.time()), "error": str(exc)}
        self._save()
        return self.status()

    def status(self) -> dict[str, Any]:
        """Where this device is: the current assignment and its state, undelivered reports."""
        current = self.state.get("current")
        return {
            "current": dict(current) if current else None,
            "unreported": len(self.state["outbox"]),
            "last": self.state.get("last"),
        }

    def _turn(self) -> None:
        current = self.state.get("current")
        if self._fresh and current and current["state"] == "installing":
            self._resume_install(current)
        self._fresh = False
        self._flush()
        self._check_fallback()
        self._check_committed()
        self._flush()
        assignment = self._ask()
        current = self.state.get("current")
        if assignment is None:
            if current and current["state"] in ("assigned", "downloading", "downloaded"):
                log.info(
                    "rollout %s assigns nothing now; dropping its download", current["rollout"]
                )
                self._drop_files(current)
                self.state["current"] = None
            return
        rollout = assignment["rollout"]
        if rollout in self.state["done"]:
            return
        if (
            current
            and current["rollout"] == rollout
            and current["state"] in ("installing", "installed")
        ):
            return  # installed here, waiting for the commit (or the fallback) to show
        if self.committed_version() == assignment["version"]:
            self.state["current"] = {**_assignment(assignment), "state": "installed"}
            self._check_committed()
            self._flush()
            return
        if (
            not current
            or current["rollout"] != rollout
            or current["sha256"] != assignment["sha256"]
        ):
            if current:
                self._drop_files(current)
            current = self.state["current"] = {**_assignment(assignment), "state": "assigned"}
            current["mismatches"] = 0
        if current["state"] in ("assigned", "downloading"):
            if current["state"] == "assigned":
                current["state"] = "downloading"
                self._report(current, "downloading")
                self._flush()
            if not self._download(current):
                return
        if current["state"] == "downloaded":
            self._install_current(current)
        self._flush()

    # -- steps --------------------------------------------------------------------------------

    def _ask(self) -> dict[str, Any] | None:
        status, _headers, body = self._transport().request("GET", ASSIGNED_PATH)
        if status == 204:
            return None
        doc = _json(body)
        if status != 200 or not isinstance(doc, dict):
            raise EdgeError(f"central answered HTTP {status} to {ASSIGNED_PATH}: {body[:200]!r}")
        for key in ("rollout", "version", "bundle_url", "sha256", "length"):
            if key not in doc:
                raise EdgeError(f"central's assignment has no {key!r}: {doc!r}")
        return doc

    def _download(self, current: dict[str, Any]) -> bool:
        """Fetch the rest of the bundle; True once the whole file is there and verified."""
        part = self._part(current)
        part.parent.mkdir(parents=True, exist_ok=True)
        length = int(current["length"])
        with part.open("ab") as out:
            if 0 < out.tell() < length:
                log.info(
                    "resuming the download of %s at byte %d of %d",
                    current["bundle_url"],
                    out.tell(),
                    length,
                )
            while out.tell() < length:
                start = out.tell()
                end = min(start + self.chunk_bytes, length) - 1
                status, headers, body = self._transport().request(
                    "GET", current["bundle_url"], headers={"Range": f"bytes={start}-{end}"}
                )
                if status == 206 and headers.get("content-range", "").startswith(f"bytes {start}-"):
                    out.write(body)
                elif status == 200 and len(body) == length:  # no ranges here: the whole
                    out.seek(0)
                    out.truncate()
                    out.write(body)
                elif status == 416:  # longer than the bundle: start over
                    out.seek(0)
                    out.truncate()
                else:
                    raise EdgeError(
                        f"central answered HTTP {status} to the download of {current['bundle_url']}"
                    )
                out.flush()
                os.fsync(out.fileno())
                self.step("download.range")
                if self.stopping:  # the runtime closes: the .part goes on from here next time
                    break
        if part.stat().st_size < length:
            return False
        digest = _sha256(part)
        if digest != current["sha256"] or part.stat().st_size != length:
            part.unlink()
            current["mismatches"] = current.get("mismatches", 0) + 1
            reason = (
                f"the downloaded bundle's sha256 {digest[:16]}... is not the assigned "
                f"{current['sha256'][:16]}..."
            )
            if current["mismatches"] >= MAX_DIGEST_MISMATCHES:
                self._finish(current, "failed", f"{reason} ({current['mismatches']} times)")
                return False
            raise EdgeError(f"{reason}; downloading it again")
        part.replace(self._bundle(current))
        self.step("download.renamed")
        current["state"] = "downloaded"
        self._report(current, "downloaded")
        self._flush()
        return True

    def _install_current(self, current: dict[str, Any]) -> None:
        self._report(current, "installing")
        current["state"] = "installing"
        self._save()  # an installer that restarts the process finds where it was
        self._flush()
        bundle = self._bundle(current)
        try:
            self.install(bundle)
        except Exception as exc:  # the installer's own refusal, or its bug: both are failures
            reason = exc.message if isinstance(exc, EdgeError) else f"{type(exc).__name__}: {exc}"
            self._drop_files(current)
            self._finish(current, "failed", reason)
            return
        self._drop_files(current)
        current["state"] = "installed"
        self._report(current, "installed")
        self._check_fallback()
        self._check_committed()

    def _resume_install(self, current: dict[str, Any]) -> None:
        """An install an earlier process started and never saw end (a kill, a power cut):
        installed if the installer has its version on trial (or committed), else again
        from the downloaded bundle, else from a new download."""
        version = current["version"]
        trial = self._trial_version() if self._trial_version is not None else None
        if version in (trial, self.committed_version()):
            current["state"] = "installed"
            self._report(current, "installed")
        elif self._bundle(current).is_file():
            log.info("the install of %s was cut off; installing it again", version)
            current["state"] = "downloaded"
        else:
            log.info("the install of %s was cut off and its bundle is gone; downloading", version)
            self._drop_files(current)
            current["state"] = "downloading"
        self._save()

    def _check_fallback(self) -> None:
        report = self.pending_report()
        if not report:
            return
        mark = hashlib.sha256(json.dumps(report, sort_keys=True, default=str).encode()).hexdigest()
        if mark in self.state["fallbacks"]:
            return
        self.state["fallbacks"] = [*self.state["fallbacks"][-19:], mark]
        doc = dict(report) if isinstance(report, Mapping) else {"reason": str(report)}
        current = self.state.get("current") or self.state.get("previous")
        rollout = doc.get("rollout") or (current or {}).get("rollout")
        if not rollout:
            log.warning("a fallback with no rollout to report it to: %s", doc.get("reason"))
            return
        state = doc.get("state") if doc.get("state") in ("failed", "rolled_back") else "rolled_back"
        target = current if current and current["rollout"] == rollout else {"rollout": rollout}
        self._finish(target, str(state), str(doc.get("reason") or "the installer went back"))

    def _check_committed(self) -> None:
        current = self.state.get("current")
        if not current or current["state"] not in ("installing", "installed"):
            return
        if self.committed_version() == current["version"]:
            self._finish(current, "committed", None)

    def _finish(self, current: dict[str, Any], state: str, reason: str | None) -> None:
        self._report(current, state, reason)
        self.state["done"][current["rollout"]] = state
        if self.state.get("current") is current:
            self.state["previous"] = {
                "rollout": current["rollout"],
                "version": current.get("version"),
            }
            self.state["current"] = None

    def _report(self, current: Mapping[str, Any], state: str, reason: str | None = None) -> None:
        """Queue a state report (sent by ``_flush``, kept across restarts until delivered)."""
        log.info("rollout %s: %s%s", current["rollout"], state, f" ({reason})" if reason else "")
        self.state["outbox"].append(
            {
                "rollout": current["rollout"],
                "state": state,
                "reason": reason,
                "version": self.committed_version(),
            }
        )
        self._save()

    def _flush(self) -> None:
        outbox: list[dict[str, Any]] = self.state["outbox"]
        while outbox:
            report = outbox[0]
            status, _headers, body = self._transport().request(
                "POST",
                STATE_PATH,
                json.dumps(report).encode(),
                {"Content-Type": "application/json"},
            )
            if status >= 500:
                raise EdgeError(f"central answered HTTP {status} to a state report: {body[:200]!r}")
            if status >= 300:
                log.warning("central refused the report %s: %s", report, body[:200])
            outbox.pop(0)
            self._save()

    # -- files ----------------------------------------------------------------------------------

    def _part(self, current: Mapping[str, Any]) -> Path:
        return self.downloads / f"{current['rollout']}-{current['sha256'][:16]}.part"

    def _bundle(self, current: Mapping[str, Any]) -> Path:
        return self.downloads / f"{current['rollout']}-{current['sha256'][:16]}.bundle"

    def _drop_files(self, current: Mapping[str, Any]) -> None:
        for path in (self._part(current), self._bundle(current)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _load(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        try:
            loaded = json.loads(self.state_path.read_text())
            state = loaded if isinstance(loaded, dict) else {}
        except FileNotFoundError:
            pass
        except ValueError as exc:
            log.warning("%s is unreadable (%s); following from a clean state", self.state_path, exc)
        state.setdefault("current", None)
        state.setdefault("outbox", [])
        state.setdefault("done", {})
        state.setdefault("fallbacks", [])
        return state

    def _save(self) -> None:
        from edge_min.update.trust import write_whole

        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        self.step("follow.save")
        write_whole(self.state_path, json.dumps(self.state, sort_keys=True).encode("utf-8"))


def _assignment(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {k: doc[k] for k in ("rollout", "version", "bundle_url", "sha256", "length")}


def _json(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class RolloutFollower(Subsystem):
    """A ``Follower`` on the runtime: a turn every ``sync.sync_interval`` while online."""

    name = "update_follow"
    needs = ("storage", "sync")  # a command opened without sync has no link to follow on

    #: What the class hands its Follower (``using`` makes a subclass with others).
    install: Install | None = None
    committed: Callable[[], str | None] | None = None
    fallback: Callable[[], Any] | None = None

    @classmethod
    def using(
        cls,
        install: Install,
        committed_version: Callable[[], str | None] | None = None,
        pending_report: Callable[[], Any] | None = None,
    ) -> type[RolloutFollower]:
        """This subsystem with another installer (tests, targets with their own)."""
        return type(
            cls.__name__,
            (cls,),
            {
                "install": staticmethod(install),
                "committed": None if committed_version is None else staticmethod(committed_version),
                "fallback": None if pending_report is None else staticmethod(pending_report),
            },
        )

    def open(self) -> None:
        """The follower over this device's transport to central; a worker when threaded."""
        from edge_min.store.subsystem import Storage
        from edge_min.sync.commands import node_id

        host = self.host
        self.node = node_id(host.get(Storage).store, host.config.security_config)
        self._link: Transport | None = None
        install, committed = type(self).install, type(self).committed
        fallback = type(self).fallback
        trial: Callable[[], str | None] | None = None
        root = os.environ.get(ENV_ROOT)
        if install is None and root:  # under the A/B supervisor: its slots take the bundle
            from edge_min.update.install import trial_version

            install, committed, fallback = self._slots(Path(root))
            trial = functools.partial(trial_version, Path(root))
        self.follower = Follower(
            host.paths.root,
            self._transport,
            host.clock,
            install=install,
            committed_version=committed,
            pending_report=fallback,
            trial_version=trial,
        )
        self.worker: Executor | None = host.executor("update-follow", 1) if host.threaded else None
        self._inflight: Handle | None = None
        self._status: dict[str, Any] = self.follower.status()

    def _slots(self, root: Path) -> tuple[Install, Callable[[], str | None], Callable[[], Any]]:
        """install_bundle into the slots under ``root``, their committed version, fallbacks."""
        from edge_min.update.install import committed_version, install_bundle
        from edge_min.update.installer import Installer

        host = self.host

        def install(path: Path) -> object:
            return install_bundle(path, root=root, data_dir=host.paths.root, clock=host.clock)

        installer = Installer(root, host.clock)
        return install, lambda: committed_version(root), installer.pending_report

    def _transport(self) -> Transport:
        if self._link is None:
            from edge_min.sync.transport import http_transport

            factory = self.host.transport or http_transport
            self._link = factory(self.host.config, self.node)
        return self._link

    def jobs(self) -> Sequence[Job]:
        """``update.follow`` every sync interval."""
        return [Job("update.follow", self.host.config.sync.sync_interval, self.follow)]

    def follow(self) -> None:
        """Start a turn (on the worker) unless one runs, the link is down or locked down."""
        if self._inflight is not None or self.host.gate.closed is not None:
            return
        if not self.host.online or self.host.config.runtime.offline_mode == "always":
            return
        if self.worker is None:
            self._status = self.follower.follow_once()
        else:
            self._inflight = self.worker.submit(self.follower.follow_once)

    def tick(self, now: float) -> float | None:
        """Take a finished turn's status."""
        if self._inflight is not None and self._inflight.done():
            handle, self._inflight = self._inflight, None
            self._status = handle.result()
        return None

    def status(self) -> Mapping[str, Any]:
        """``update_follow``: the current assignment and its state."""
        return {"update_follow": self._status}

    def close(self) -> None:
        """Stop a download at its next range; drop the connection."""
        self.follower.stopping = True
        if self._link is not None:
            self._link.close()
