"""The runtime in a browser's Web Worker: its loop, and nothing told before it is persisted.

The worker (``wasm/web/worker.js``) boots Pyodide, mounts the data folder on durable storage
(IndexedDB through Emscripten's IDBFS: the files live in memory and ``persist()`` copies what
changed into IndexedDB in one transaction), unpacks the wheels, then hands this module two
functions and awaits ``BrowserHost.serve()``:

- ``persist()``: an awaitable that resolves once every change of the data folder is durable,
  and rejects when it could not be (quota, IndexedDB gone, a blocked origin);
- ``post(text)``: a JSON message to the page.

``serve`` opens the unmodified ``edge_min.runtime.Runtime`` over the browser platform
(``targets.browser.platform``) with inline executors (no threads), and turns its loop on the
worker's event loop (asyncio on Pyodide's webloop, so sleeping is a ``setTimeout``)::

    calls from the page -> Runtime.tick(now) -> waits that ended -> persist() -> replies

One rule carries the durability promise: **a reply leaves only after a persist that began
after it was computed**, so whatever the page was told (a run id, a finished run, an added
agent) is in IndexedDB before the page hears of it, and survives a reload or a killed
renderer. A turn that changed no file persists nothing. While a persist is in flight no
Python runs, so the copy is of the files at a transaction boundary. When a persist fails the
replies waiting on it are rejected with ``NotPersisted`` (``not_persisted``), ``status()``
says ``storage.state: "failed"`` with the reason, the next turns retry, and the runtime never
goes on as if memory were durable.

The target hooks (``edge_min.hooks``) become messages to the page: ``serving`` posts
``ready`` (after the first persist), ``stopping`` posts ``stopping`` and ``fatal`` posts the
error (``ready`` then rejects with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edge_min.errors import NotPersisted
from edge_min.hooks import Hooks, NoHooks, ServingAddress, TargetHooks
from targets.browser.calls import Calls, Pending, error_dict
from targets.browser.platform import BrowserPlatform
from targets.browser.transport import BrowserSync, provide_webcrypto, xhr_transport_factory

if TYPE_CHECKING:
    from edge_min.clock import Clock
    from edge_min.config import EdgeConfig
    from edge_min.runtime import Runtime

log = logging.getLogger("edge_min.browser")

#: Where the worker mounts durable storage; the data directory is ``<mount>/edge-data``.
MOUNT = "/data"

#: What a tab changes in the defaults, and why (docs/browser.md):
#: - offline_mode always until the page configures central (``edgeMin.configure``), then
#:   auto: it syncs while the link is up (``sync_config``);
#: - encryption at rest off: the master key would sit in the same origin storage as the data
#:   it protects (its AES would be WebCrypto's through JSPI, as for sync payloads; untested
#:   with it on in a tab);
#: - attestation off: its Ed25519 quotes need ``cryptography`` too, and a tab has no TPM;
#: - scheduled backups off: a backup would be one more whole copy of the database in the
#:   same origin storage (evicted with it), and each would be copied into IndexedDB again.
BROWSER_CONFIG: dict[str, Any] = {
    "runtime": {"offline_mode": "always"},
    "storage": {"backup_interval": 0},
    "security": {"encryption_enabled": False, "attestation_enabled": False},
}

Persist = Callable[[], Awaitable[object]]
Post = Callable[[str], object]


def browser_config(overrides: Mapping[str, Any] | None = None) -> EdgeConfig:
    """The browser's edge-config: ``BROWSER_CONFIG`` with ``overrides`` merged in, validated."""
    from edge_min.config import parse_config

    merged: dict[str, Any] = {k: dict(v) for k, v in BROWSER_CONFIG.items()}
    for section, values in (overrides or {}).items():
        if isinstance(values, Mapping) and isinstance(merged.get(section), dict):
            merged[section].update(values)
        else:
            merged[section] = values
    return parse_config(merged, source="the browser's edge-config")


def sync_config(settings: BrowserSync | None, base: EdgeConfig | None = None) -> EdgeConfig:
    """The tab's config once central is configured: ``sync.central_url``, offline_mode auto
    (a link failure only queues the work), and payload encryption as ``settings`` says."""
    config = base or browser_config()
    if settings is None:
        return config
    network = dataclasses.replace(config.sync_config.network, encryption=settings.encryption)
    return dataclasses.replace(
        config,
        runtime=dataclasses.replace(config.runtime, offline_mode="auto"),
        sync=dataclasses.replace(config.sync, central_url=settings.central_url),
        sync_config=dataclasses.replace(config.sync_config, network=network),
    )


def files_signature(root: str) -> tuple[tuple[str, int, int], ...]:
    """(path, mtime in ns, size) of every file under ``root``: what a persist would copy."""
    found: list[tuple[str, int, int]] = []
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
                continue
            st = entry.stat(follow_symlinks=False)
            found.append((entry.path, st.st_mtime_ns, st.st_size))
    return tuple(sorted(found))


class PageHooks(NoHooks):
    """The runtime's target hooks as messages to the page."""

    def __init__(self, post: Callable[[dict[str, Any]], None]) -> None:
        self.post = post

    def serving(self, address: ServingAddress | None) -> None:
        """``ready``: the runtime is open and what it wrote at opening is persisted."""
        self.post({"type": "ready"})

    def stopping(self) -> None:
        """``stopping``."""
        self.post({"type": "stopping"})

    def fatal(self, error: BaseException) -> None:
        """``fatal`` with the error's code and message."""
        self.post({"type": "fatal", "error": error_dict(error)})


@dataclass
class StorageState:
    """What ``status().storage`` shows: the backend, the last persist and the last failure."""

    backend: str
    state: str = "opening"  # opening, ok, failed
    persists: int = 0
    last_ms: float | None = None
    total_ms: float = 0.0
    error: dict[str, str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def view(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "backend": self.backend,
            "state": self.state,
            "persists": self.persists,
            "last_persist_ms": self.last_ms,
            "mean_persist_ms": round(self.total_ms / self.persists, 2) if self.persists else None,
            "error": self.error,
            **self.extra,
        }


class BrowserHost:
    """One runtime in one worker: opened by ``serve``, turned until ``stop``."""

    def __init__(
        self,
        persist: Persist,
        post: Post,
        *,
        mount: str = MOUNT,
        config: EdgeConfig | None = None,
        backend: str = "idbfs",
        clock: Clock | None = None,
        platform: BrowserPlatform | None = None,
        hooks: tuple[TargetHooks, ...] = (),
    ) -> None:
        self._persist = persist
        self._post_text = post
        #: The durable folder (everything under it is persisted) and the data dir inside it.
        self.mount = mount
        self.root = f"{mount}/edge-data"
        #: The base config; ``open`` adds what ``edgeMin.configure`` stored (``BrowserSync``).
        self.base_config = config or browser_config()
        self.config = self.base_config
        self.settings: BrowserSync | None = None
        self.clock = clock
        self.platform = platform or BrowserPlatform()
        self.storage = StorageState(backend)
        self.hooks = Hooks([PageHooks(self.post), *hooks])
        self.runtime: Runtime | None = None
        self.calls: Calls | None = None
        self._inbox: list[dict[str, Any]] = []
        self._held: list[Pending] = []  # replies computed, waiting for the next persist
        self._wake = asyncio.Event()
        self._stopping = False
        self._persisted: tuple[tuple[str, int, int], ...] | None = None

    # -- the page's side -------------------------------------------------------------------

    def post(self, message: dict[str, Any]) -> None:
        """Send one message to the page (as JSON text: no proxies cross the boundary)."""
        self._post_text(json.dumps(message, default=str))

    def receive(self, text: str) -> None:
        """A message from the page (JSON text): queued for the loop's next turn."""
        try:
            message = json.loads(text)
        except ValueError:
            log.error("dropped a message that is not JSON: %.200s", text)
            return
        if not isinstance(message, dict):
            log.error("dropped a message that is not an object: %.200s", text)
            return
        self._inbox.append(message)
        self._wake.set()

    def stop(self) -> None:
        """Ask the loop to stop after its current turn."""
        self._stopping = True
        self._wake.set()

    # -- the loop --------------------------------------------------------------------------

    def open(self) -> Runtime:
        """Open the runtime on the browser platform, inline executors, no local API."""
        from edge_min.runtime import Paths, Runtime

        self.settings = BrowserSync.load(self.root)
        self.config = sync_config(self.settings, self.base_config)
        paths = Paths.resolve(self.config, self.root)
        runtime = Runtime(
            self.config,
            paths,
            clock=self.clock,
            platform=self.platform,
            transport=xhr_transport_factory(self.settings) if self.settings else None,
        )
        self.runtime = runtime.open()
        waits = self.calls.waits if self.calls is not None else {}
        self.calls = Calls(runtime, self, waits)
        return runtime

    def reopen(self) -> Runtime:
        """Close the runtime and open it again on what is stored now (after ``configure``)."""
        if self.runtime is not None:
            runtime, self.runtime = self.runtime, None
            runtime.close()
        return self.open()

    async def serve(self) -> None:
        """Open, persist what opening wrote, say ready, then turn the loop until ``stop``."""
        with self.hooks.fatal_on_error():
            try:
                # the core's AES-GCM on WebCrypto (sync payload encryption), where JSPI allows
                provide_webcrypto()
                runtime = self.open()
                await self._persist_or_raise()
                self.hooks.serving(None)
                while not self._stopping:
                    delay = await self.turn()
                    self.hooks.alive()
                    await self._sleep(delay)
                self.hooks.stopping()
            finally:
                if self.runtime is not None:
                    runtime = self.runtime
                    self.runtime = None
                    runtime.close()

    async def turn(self) -> float:
        """One turn: the page's calls, a tick, ended waits, a persist, the replies."""
        assert self.runtime is not None and self.calls is not None
        inbox, self._inbox = self._inbox, []
        for message in inbox:
            self._held.extend(self.calls.handle(message))
            if self.calls.reopen:  # configure stored new settings: the next call sees them
                self.reopen()
        delay = self.runtime.tick()
        self._held.extend(self.calls.ended_waits())
        if self._held or self._changed():
            held, self._held = self._held, []
            try:
                await self._persist_or_raise()
            except NotPersisted as exc:
                for pending in held:
                    self.post(pending.rejected(exc))
                return min(delay, 1.0)
            for pending in held:
                self.post(pending.posted())
        if self._inbox:
            return 0.0
        return delay

    def _changed(self) -> bool:
        return files_signature(self.mount) != self._persisted

    async def _persist_or_raise(self) -> None:
        """Persist now; on failure record it and raise ``NotPersisted``."""
        signature = files_signature(self.mount)
        started = time.monotonic()
        try:
            await self._persist()
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            self.storage.state = "failed"
            error = NotPersisted(
                f"the database could not be persisted to {self.storage.backend} ({reason}); "
                "nothing since the last persist is reported done, and it is retried each turn"
            )
            self.storage.error = error.to_dict()
            log.error("persist failed: %s", reason)
            raise error from exc
        elapsed = (time.monotonic() - started) * 1000
        self._persisted = signature
        self.storage.state = "ok"
        self.storage.error = None
        self.storage.persists += 1
        self.storage.last_ms = round(elapsed, 2)
        self.storage.total_ms += elapsed

    async def _sleep(self, delay: float) -> None:
        if self._stopping or self._inbox:
            return
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, delay))
