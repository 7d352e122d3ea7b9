"""The sync manager: when each entity syncs, in what order, and how a batch crosses the link.

One sync of an entity pushes its local changes in batches (``SyncState.outgoing``; the
push cursor moves in ``SyncState.acknowledge`` only after central's ``push_result``), then
pulls central's records after its pull cursor until an empty answer
(``SyncState.apply_pulled`` commits a batch and moves the cursor in one transaction), then
pushes once more whatever conflict resolution queued. A cut anywhere loses at most the batch
in flight: the next attempt rebuilds the same batch with the same id (central answers it
idempotently) or pulls the same records again (applying twice changes nothing).

Scheduling (``tick(now)``, monotonic seconds, never blocks):

- each entity is due every ``schedule[e]`` seconds (sync-config.yaml), else every
  ``sync_interval`` (edge-config.yaml); all are due at the first tick;
- a failed attempt is retried with exponential backoff and jitter (``retry``); after
  ``max_attempts`` failures in a row the entity waits for its next regular schedule;
- ``offline_mode``: ``always`` never syncs, ``auto`` syncs only while the link is up,
  ``never`` tries regardless; ``link_changed(True)`` with ``sync_on_connect`` makes every
  entity due at once (and forgets backoff);
- within one run, entities take turns batch by batch, weighted by priority (high 4, medium 2,
  low 1 batches per round, high first): high goes first and gets most of the link, yet a
  low entity moves at least one batch every round, so it is never starved, even when a run
  is cut short by ``max_batches``.

``tick`` only decides; the runtime's ``SyncLink`` runs ``sync_once(due)`` on a worker thread
(it talks to the network), or inline on hosts without threads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from edge_min.clock import Clock, SystemClock, iso
from edge_min.config.sync import ENTITIES, SyncConfig
from edge_min.errors import ConfigError, EdgeError
from edge_min.sync.errors import BadFrame, SyncError
from edge_min.sync.retry import RetryTracker, is_retryable
from edge_min.sync.transport import Transport, TransportError

log = logging.getLogger("edge_min.sync.manager")

PRIORITY_WEIGHT = {"high": 4, "medium": 2, "low": 1}
PRIORITY_RANK = {"high": 0, "medium": 1, "low": 2}
DEFAULT_BATCH_BYTES = 1024 * 1024
# push, pull, push again: a resolution that keeps edge data is re-pushed in the same run.
PUSH_PULL_CYCLES = 3
# Foreign keys of the spec's schema: a child's pulled rows need their parents' rows first.
PARENTS = {
    "workflow_executions": ("workflows",),
    "agent_executions": ("agents", "workflow_executions"),
}
PUSH_PATH = "/api/sync/push"
PULL_PATH = "/api/sync/pull"

Progress = Callable[[str, str, int, int], object]
"""``progress(entity, phase, done, total)``: phase "push" or "pull"; total 0 when unknown."""


@dataclass
class EntityReport:
    """What one sync did for one entity."""

    entity: str
    ok: bool = True
    pushed: int = 0
    accepted: int = 0
    conflicts: int = 0
    pulled: int = 0
    applied: int = 0
    batches: int = 0
    finished: bool = False
    error: str | None = None
    error_code: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        return dict(self.__dict__)


@dataclass
class SyncReport:
    """What one ``sync_once`` did."""

    started_at: str
    finished_at: str | None = None
    entities: dict[str, EntityReport] = field(default_factory=dict)
    skipped: str | None = None

    @property
    def ok(self) -> bool:
        """True when it ran and every entity succeeded."""
        return self.skipped is None and all(r.ok for r in self.entities.values())

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        return {
            "ok": self.ok,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "skipped": self.skipped,
            "entities": {e: r.to_dict() for e, r in self.entities.items()},
        }

    def summary(self) -> str:
        """One line per entity, for people."""
        if self.skipped:
            return f"sync skipped: {self.skipped}"
        lines = []
        for e, r in self.entities.items():
            state = "ok" if r.ok else f"FAILED: {r.error}"
            lines.append(
                f"{e}: pushed {r.pushed} (accepted {r.accepted}, conflicts {r.conflicts}), "
                f"pulled {r.pulled} (applied {r.applied}) in {r.batches} batch(es): {state}"
            )
        return "\n".join(lines)


class _Cancelled(Exception):
    """``restart()`` asked the run in progress to stop at the next batch boundary."""


class SyncManager:
    """Runs sync for the four entities: schedule, priority, retry, offline mode, transport."""

    def __init__(
        self,
        state: Any,
        transport: Transport,
        *,
        node: str,
        sync_config: SyncConfig | None = None,
        sync_interval: float = 300.0,
        sync_on_connect: bool = True,
        offline_mode: str = "auto",
        key: bytes | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        max_batch_bytes: int = DEFAULT_BATCH_BYTES,
        max_frame_bytes: int | None = None,
        entities: Iterable[str] | None = None,
    ) -> None:
        from edge_min.sync.protocol import DEFAULT_MAX_BYTES

        if offline_mode not in ("auto", "always", "never"):
            raise ConfigError(
                f"offline_mode must be auto, always or never, got {offline_mode!r}",
                path="runtime.offline_mode",
                value=offline_mode,
            )
        self.state = state
        self.transport = transport
        self.node = node
        self.config = sync_config or SyncConfig()
        self.sync_interval = float(sync_interval)
        self.sync_on_connect = sync_on_connect
        self.offline_mode = offline_mode
        self.key = key
        self.clock: Clock = clock or SystemClock()
        self.max_frame_bytes = max_frame_bytes or DEFAULT_MAX_BYTES
        self.max_batch_bytes = min(max_batch_bytes, self.max_frame_bytes // 2)
        self.entities = tuple(entities or ENTITIES)
        self.retry = RetryTracker(self.config.retry, rng)
        self.link_up = offline_mode != "always"
        self.consecutive_failures = 0
        self.last_report: SyncReport | None = None
        self._next_due: dict[str, float] = {}
        self._claimed: tuple[str, ...] = ()
        self._running = False
        self._cancel = False
        self._peer_comps = {"zlib", "none"}
        self._snapshot: dict[str, dict[str, Any]] | None = None
        self._outcome: dict[str, bool] = {}
        #: Central's refusal of this device's pushes (``device_untrusted``), or None.
        self.refused: dict[str, str] | None = None

    # -- policy -------------------------------------------------------------------------------

    def interval(self, entity: str) -> float:
        """Seconds between regular syncs of ``entity``."""
        return float(self.config.schedule.get(entity, self.sync_interval))

    def priority(self, entity: str) -> str:
        """high, medium or low."""
        policy = self.config.entities.get(entity)
        return policy.priority if policy else "medium"

    def batch_size(self, entity: str) -> int:
        """Items per push batch and records per pull."""
        policy = self.config.entities.get(entity)
        return policy.batch_size if policy else 100

    def conflict_policy(self, entity: str) -> str:
        """The entity's conflict_resolution."""
        policy = self.config.entities.get(entity)
        return policy.conflict_resolution if policy else "last_modified"

    def ordered(self, entities: Iterable[str]) -> list[str]:
        """``entities`` high priority first (stable within a priority)."""
        return sorted(entities, key=lambda e: PRIORITY_RANK.get(self.priority(e), 1))

    def may_sync(self) -> str | None:
        """None if a sync may run now, else why not."""
        if self.offline_mode == "always":
            return "offline_mode is 'always' (runtime.offline_mode in edge-config.yaml)"
        if self.offline_mode == "auto" and not self.link_up:
            return "the link to central is down (offline_mode auto)"
        return None

    # -- scheduling ---------------------------------------------------------------------------

    def tick(self, now: float | None = None) -> list[str]:
        """The entities due at ``now`` (monotonic), high priority first; claims them.

        Returns [] while offline, while a run is in progress or claimed, or when nothing is
        due. The caller runs ``sync_once(returned)`` (on a worker thread) next.
        """
        now = self.clock.monotonic() if now is None else now
        if self._running or self._claimed or self.may_sync() is not None:
            return []
        due = [e for e in self.entities if self._next_due.setdefault(e, now) <= now]
        self._claimed = tuple(self.ordered(due))
        return list(self._claimed)

    def next_deadline(self) -> float | None:
        """The monotonic time the next entity falls due (None before the first tick)."""
        if self.offline_mode == "always" or not self._next_due:
            return None
        return min(self._next_due.values())

    def link_changed(self, up: bool) -> None:
        """The runtime saw the link to central go up or down."""
        was, self.link_up = self.link_up, up
        if up and not was and self.sync_on_connect:
            now = self.clock.monotonic()
            self.retry.reset()
            for e in self.entities:
                self._next_due[e] = min(self._next_due.get(e, now), now)
            log.info("link to central is back: every entity is due now (sync_on_connect)")

    def restart(self) -> None:
        """Drop the connection, forget backoff, make every entity due (the monitor's action)."""
        self._cancel = self._running
        self._claimed = ()
        self.retry.reset()
        self.transport.close()
        now = self.clock.monotonic()
        for e in self.entities:
            self._next_due[e] = now
        log.info("sync restarted: every entity is due now")

    # -- running ------------------------------------------------------------------------------

    def sync_once(
        self,
        entities: Iterable[str] | None = None,
        progress: Progress | None = None,
        *,
        max_batches: int | None = None,
    ) -> SyncReport:
        """Sync ``entities`` (default all) now, batches interleaved by priority.

        ``max_batches`` bounds the batches this run moves (the rest wait for the next run).
        Failures are recorded per entity (and scheduled for retry), never raised.
        """
        wanted = self.ordered(
            self.with_parents(entities if entities is not None else self.entities)
        )
        report = SyncReport(started_at=iso(self.clock.time()))
        why_not = self.may_sync()
        if why_not is not None:
            report.skipped = why_not
            report.finished_at = report.started_at
            self._claimed = ()
            return report
        self._running, self._cancel = True, False
        try:
            self._run(wanted, report, progress, max_batches)
        finally:
            self._running = False
            self._claimed = ()
            report.finished_at = iso(self.clock.time())
            self.last_report = report
            if report.entities:
                self.consecutive_failures = 0 if report.ok else self.consecutive_failures + 1
            self._note_refusal(report)
            self._refresh_snapshot()
        return report

    def _note_refusal(self, report: SyncReport) -> None:
        """Remember central refusing our pushes until a push is accepted again."""
        for rep in report.entities.values():
            if rep.error_code == "device_untrusted":
                self.refused = {"code": rep.error_code, "message": rep.error or ""}
                return
        if any(r.ok and r.pushed for r in report.entities.values()):
            self.refused = None

    def with_parents(self, entities: Iterable[str]) -> list[str]:
        """``entities`` and every entity their rows refer to (foreign keys), so pulls can land."""
        out: list[str] = []

        def add(e: str) -> None:
            for parent in PARENTS.get(e, ()):
                add(parent)
            if e not in out and e in self.entities:
                out.append(e)

        for e in entities:
            add(e)
        return out

    def _run(
        self,
        wanted: list[str],
        report: SyncReport,
        progress: Progress | None,
        max_batches: int | None,
    ) -> None:
        steps: dict[str, Iterator[bool]] = {}
        self._outcome = {}
        for e in wanted:
            report.entities[e] = EntityReport(e)
            steps[e] = self._entity_steps(e, report.entities[e], progress, set(wanted))
        moved = 0
        link_error: EdgeError | None = None
        while steps:
            for e in [e for e in wanted if e in steps]:
                for _ in range(PRIORITY_WEIGHT.get(self.priority(e), 1)):
                    if max_batches is not None and moved >= max_batches:
                        return
                    error: EdgeError | None = link_error
                    if error is None:
                        try:
                            if not next(steps[e]):
                                break  # waiting for a parent entity: its turn passes
                            moved += 1
                            continue
                        except StopIteration:
                            self._succeeded(e, report.entities[e])
                        except _Cancelled:
                            error = SyncError("cancelled by restart")
                        except EdgeError as exc:
                            error = exc
                            # The link is gone: the others would only wait for timeouts.
                            if isinstance(exc, TransportError):
                                link_error = exc
                        except Exception as exc:  # a bug: report it, keep the runtime alive
                            log.exception("sync of %s failed unexpectedly", e)
                            error = SyncError(f"internal error: {type(exc).__name__}: {exc}")
                    if error is not None:
                        self._failed(e, report.entities[e], error)
                    self._outcome[e] = error is None
                    del steps[e]
                    break

    def _entity_steps(
        self, entity: str, rep: EntityReport, progress: Progress | None, run: set[str]
    ) -> Iterator[bool]:
        """One batch per ``next()`` (True), or False while a parent entity is still pulling.

        Push all, pull all (once the parents in this run are done, so every row a record
        refers to is here first), push what conflict resolution queued.
        """
        policy = self.conflict_policy(entity)
        limit = self.batch_size(entity)
        total = self._pending(entity)
        for cycle in range(PUSH_PULL_CYCLES):
            while True:
                self._check_cancel()
                batch = self.state.outgoing(entity, limit=limit, max_bytes=self.max_batch_bytes)
                if not batch.items:
                    break
                self._push(batch, policy, rep)
                if progress is not None:
                    progress(entity, "push", rep.pushed, max(total, rep.pushed))
                yield True
            if cycle == PUSH_PULL_CYCLES - 1:
                break
            for parent in PARENTS.get(entity, ()):
                while parent in run and parent not in self._outcome:
                    yield False
                if parent in run and not self._outcome[parent]:
                    raise SyncError(
                        f"{entity} was not pulled because {parent}, which its rows refer "
                        "to, failed first; both are tried again"
                    )
            while True:
                self._check_cancel()
                got = self._pull(entity, policy, limit, rep)
                if not got:
                    break
                if progress is not None:
                    progress(entity, "pull", rep.pulled, 0)
                yield True
            if self._pending(entity) == 0:
                break
        rep.finished = True

    def _check_cancel(self) -> None:
        if self._cancel:
            raise _Cancelled()

    def _pending(self, entity: str) -> int:
        return int(self.state.pending_count(entity))

    # -- one batch each way ---------------------------------------------------------------------

    def _push(self, batch: Any, policy: str, rep: EntityReport) -> None:
        from edge_min.sync.protocol import CONTENT_TYPE, choose_compression, encode_frame

        batch = with_content_id(batch)
        frame = encode_frame(
            {"kind": "push", "node": self.node, "entity": batch.entity, "batch": batch.batch_id},
            batch.items,
            key=self.key,
            compression=choose_compression(self.config.network.compression, self._peer_comps),
            max_bytes=self.max_frame_bytes,
        )
        status, _headers, body = self.transport.request(
            "POST", PUSH_PATH, frame, {"Content-Type": CONTENT_TYPE}
        )
        header, results = self._open_answer(status, body, "push_result")
        if header.get("batch") != batch.batch_id or len(results) != len(batch.items):
            raise BadFrame(
                f"central answered batch {header.get('batch')!r} with {len(results)} results "
                f"to batch {batch.batch_id!r} of {len(batch.items)} items; not applied"
            )
        ack = self.state.acknowledge(batch, results, policy)
        rep.batches += 1
        rep.pushed += len(batch.items)
        rep.accepted += _count(getattr(ack, "accepted", 0))
        rep.conflicts += _count(getattr(ack, "conflicts", 0))

    def _pull(self, entity: str, policy: str, limit: int, rep: EntityReport) -> int:
        after = int(self.state.pull_cursor(entity))
        query = urlencode({"entity": entity, "after": after, "limit": limit})
        status, _headers, body = self.transport.request("GET", f"{PULL_PATH}?{query}", b"", {})
        header, records = self._open_answer(status, body, "pull_result")
        if header.get("entity") != entity:
            raise BadFrame(f"asked to pull {entity!r}, central answered {header.get('entity')!r}")
        if not records:
            return 0
        versions = [r.get("version") for r in records]
        if not all(isinstance(v, int) and v > after for v in versions):
            raise BadFrame(f"central sent {entity} records not after version {after}; not applied")
        applied = self.state.apply_pulled(entity, records, policy, max(versions))
        rep.batches += 1
        rep.pulled += len(records)
        rep.applied += _count(getattr(applied, "applied", len(records)))
        rep.conflicts += _count(getattr(applied, "conflicts", 0))
        return len(records)

    def _open_answer(self, status: int, body: bytes, kind: str) -> tuple[dict[str, Any], list[Any]]:
        from edge_min.sync.errors import FrameError
        from edge_min.sync.protocol import decode_frame, peek_header, raise_for_error

        try:
            head = peek_header(body, max_bytes=self.max_frame_bytes)
        except FrameError as exc:
            if status != 200:
                snippet = body[:200].decode("utf-8", "replace")
                err = SyncError(f"central answered HTTP {status}: {snippet}", http_status=status)
                err.code = "storage_error" if status >= 500 else "sync_http_error"
                raise err from exc
            raise
        if head.get("kind") == "error":
            # Error frames travel unencrypted, so a device with the wrong key can read them.
            raise_for_error(*decode_frame(body, key=self.key, max_bytes=self.max_frame_bytes))
        header, items = decode_frame(
            body, key=self.key, max_bytes=self.max_frame_bytes, require_encryption=bool(self.key)
        )
        if status != 200 or header.get("kind") != kind:
            raise BadFrame(f"central answered HTTP {status} with a {header.get('kind')!r} frame")
        if header.get("comp") == "zstd":
            self._peer_comps.add("zstd")  # central writes zstd, so it reads it too
        return header, items

    # -- outcomes -------------------------------------------------------------------------------

    def _succeeded(self, entity: str, rep: EntityReport) -> None:
        rep.ok = True
        self.retry.succeeded(entity)
        self._next_due[entity] = self.clock.monotonic() + self.interval(entity)
        try:
            self.state.record_attempt(entity, True, None)
        except EdgeError as exc:
            log.error("could not record the sync of %s: %s", entity, exc.message)

    def _failed(self, entity: str, rep: EntityReport, exc: EdgeError) -> None:
        rep.ok, rep.error, rep.error_code = False, exc.message, exc.code
        now = self.clock.monotonic()
        retry_at = self.retry.failed(entity, now, retryable=is_retryable(exc))
        if retry_at is None:
            self._next_due[entity] = now + self.interval(entity)
            log.warning("sync of %s failed (%s); next try on schedule", entity, exc.message)
        else:
            self._next_due[entity] = retry_at
            log.info("sync of %s failed (%s); retry in %.1f s", entity, exc.message, retry_at - now)
        try:
            self.state.record_attempt(entity, False, exc.message)
        except EdgeError as store_exc:  # the store is the problem: the report still says why
            log.error("could not record the failed sync of %s: %s", entity, store_exc.message)

    # -- status ---------------------------------------------------------------------------------

    def _refresh_snapshot(self) -> None:
        try:
            self._snapshot = dict(self.state.status())
        except EdgeError as exc:
            log.error("could not read sync status: %s", exc.message)

    def refresh_status(self) -> None:
        """Re-read per-entity status from the store (call on the thread that owns it)."""
        self._refresh_snapshot()

    def status(self, state: Any = None) -> dict[str, Any]:
        """What ``GET /sync/status`` answers; ``state`` reads fresh counts from another store.

        Without ``state`` the per-entity part is as of the last run (or ``refresh_status``).
        """
        entities = dict(state.status()) if state is not None else dict(self._snapshot or {})
        return status_document(
            entities,
            running=self._running,
            consecutive_failures=self.consecutive_failures,
            extra={
                "link": "up" if self.link_up else "down",
                "offline_mode": self.offline_mode,
                "next_due_in": self._due_in(),
                "refused": self.refused,
            },
        )

    def _due_in(self) -> dict[str, float]:
        now = self.clock.monotonic()
        return {e: round(max(0.0, t - now), 1) for e, t in self._next_due.items()}


def status_document(
    entities: dict[str, dict[str, Any]],
    *,
    running: bool = False,
    consecutive_failures: int = 0,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The /sync/status JSON from ``SyncState.status()``: overall success/failed/running/never."""
    shown: dict[str, dict[str, Any]] = {}
    failed = attempted = False
    for e, info in entities.items():
        row = {k: info.get(k) for k in ("last_attempt", "last_success", "pending", "last_error")}
        row["failures"] = info.get("failures", 0)
        shown[e] = row
        if row["last_attempt"]:
            attempted = True
            success = row["last_success"]
            if row["last_error"] and (not success or str(row["last_attempt"]) > str(success)):
                failed = True
    overall = "running" if running else "failed" if failed else "success" if attempted else "never"
    doc: dict[str, Any] = {
        "status": overall,
        "entities": shown,
        "consecutive_failures": consecutive_failures,
    }
    doc.update(extra or {})
    return doc


def with_content_id(batch: Any) -> Any:
    """``batch`` with a digest of its items appended to its id.

    Central answers a batch id it has seen with the stored result. A resend after a cut
    rebuilds the batch from the same change range, but a row edited meanwhile has new
    content; only the same content may reuse the id, or the edge would take central's old
    "accepted" for data central never saw. Same range and same content: the same id.
    """
    if not dataclasses.is_dataclass(batch) or isinstance(batch, type):
        return batch
    items: Any = getattr(batch, "items", [])
    text = json.dumps(items, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return dataclasses.replace(batch, batch_id=f"{getattr(batch, 'batch_id', '')}.{digest}")


def _count(value: Any) -> int:
    """A count from a report field that may be a number or a list of ids."""
    if isinstance(value, int | float):
        return int(value)
    try:
        return len(value)
    except TypeError:
        return 0
