"""Wiring sync for a data directory (node id, payload key, transport, manager) and the
``edge-min sync`` commands the CLI calls.

- ``build_manager(config, paths, store)``: the SyncManager edge-config.yaml and
  sync-config.yaml describe, over a ``SyncState`` on ``store``.
- ``node_id(store)``: the device id central knows this edge by: ``meta['device.id']`` (the
  key the change tracker uses), set on first use to the device certificate's CN when one is
  configured (under mutual TLS central insists on it), else to ``edge-`` + 16 hex digits.
- ``load_sync_key(root)``: the 32-byte payload key in ``<root>/keys/sync.key`` (made, 0600,
  on first use when ``network.encryption`` is on; give central the same key).
- ``sync_run`` / ``sync_status`` / ``sync_conflicts`` / ``sync_resolve``: one function per
  subcommand, each ``(args, config, paths) -> exit code``, with ``add_*_arguments`` helpers.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from edge_min.clock import Clock, SystemClock
from edge_min.config.sync import ENTITIES
from edge_min.security.keyfile import create_key_file
from edge_min.sync.errors import SyncKeyError, SyncUnavailable

if TYPE_CHECKING:
    from edge_min.sync.transport import Transport, TransportFactory

NODE_META_KEY = "device.id"  # edge_min.sync.changes.DEVICE_KEY
KEY_FILE = Path("keys") / "sync.key"
KEY_BYTES = 32
BAR_WIDTH = 28


# -- identity and key -------------------------------------------------------------------------


def node_id(store: Any, security_config: Any = None) -> str:
    """This edge's device id (remembered in meta; the certificate's CN under mutual TLS)."""
    known = store.meta.get(NODE_META_KEY)
    if known:
        return str(known)
    node = _certificate_cn(security_config) or f"edge-{secrets.token_hex(8)}"
    store.meta.set(NODE_META_KEY, node)
    return node


def _certificate_cn(security_config: Any) -> str | None:
    from edge_min.security.certs import certificate_cn

    encryption = getattr(security_config, "encryption", None)
    comm = encryption.communication if encryption is not None else security_config
    if not getattr(comm, "enabled", False):
        return None
    return certificate_cn(getattr(comm, "certificate_path", None))


def load_sync_key(root: str | os.PathLike[str], *, create: bool = True) -> bytes:
    """The payload key in ``<root>/keys/sync.key``; made (0600) if absent and ``create``."""
    path = Path(root) / KEY_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if not create:
            raise SyncKeyError(
                f"no sync key at {path}; network.encryption is on, so both sides need the "
                "same 32-byte key: copy central's key file there"
            ) from None
        # Whole or absent after a power cut; a racing process's key wins for both.
        data = create_key_file(path, KEY_BYTES)
    text = data.strip()
    if len(text) == 2 * KEY_BYTES:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass
    if len(data) != KEY_BYTES:
        raise SyncKeyError(
            f"sync key {path} holds {len(data)} bytes; it must be 32 raw bytes or 64 hex "
            "digits (the same key central has for this device)"
        )
    return data


# -- building ---------------------------------------------------------------------------------


def build_manager(
    config: Any,
    paths: Any,
    store: Any,
    *,
    clock: Clock | None = None,
    node: str | None = None,
    allow_insecure: bool = False,
    timeout: float | None = None,
    transport: TransportFactory | None = None,
) -> Any:
    """The SyncManager for ``config`` (an EdgeConfig) over ``store`` in ``paths.root``.

    ``transport`` makes the link to central (``edge_min.sync.transport.TransportFactory``);
    by default HTTP(S) to ``sync.central_url`` (``http_transport``).
    """
    from edge_min.sync.changes import SyncState
    from edge_min.sync.manager import SyncManager
    from edge_min.sync.transport import http_transport

    clock = clock or SystemClock()
    node = node or node_id(store, config.security_config)
    network = config.sync_config.network
    key = load_sync_key(paths.root) if network.encryption else None
    link: Transport
    if transport is None:
        link = http_transport(config, node, allow_insecure=allow_insecure, timeout=timeout)
    else:
        link = transport(config, node)
    # A batch should cross the capped link in about 10 s, so a cut costs little to resend.
    batch_bytes = 1024 * 1024
    if network.max_bandwidth > 0:
        batch_bytes = int(min(batch_bytes, max(16 * 1024, network.max_bandwidth * 10)))
    return SyncManager(
        SyncState(store, node, clock),
        link,
        node=node,
        sync_config=config.sync_config,
        sync_interval=config.sync.sync_interval,
        sync_on_connect=config.sync.sync_on_connect,
        offline_mode=config.runtime.offline_mode,
        key=key,
        clock=clock,
        max_batch_bytes=batch_bytes,
    )


def _open(config: Any, paths: Any) -> Any:
    from edge_min.security.atrest import open_device_store
    from edge_min.sync.tracker import ChangeTracker

    return open_device_store(config, paths, changes=ChangeTracker)


# -- progress ---------------------------------------------------------------------------------


class ProgressPrinter:
    """A one-line progress bar on a terminal, plain lines otherwise."""

    def __init__(self, stream: TextIO | None = None, tty: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self._drawn = False

    def __call__(self, entity: str, phase: str, done: int, total: int) -> None:
        """Show progress of one entity's push or pull."""
        if not self.tty:
            of = f"/{total}" if total else ""
            print(f"{phase} {entity}: {done}{of}", file=self.stream, flush=True)
            return
        if total:
            filled = min(BAR_WIDTH, BAR_WIDTH * done // max(total, 1))
            bar = "#" * filled + "." * (BAR_WIDTH - filled)
            text = f"{phase:4} {entity:20} [{bar}] {done}/{total}"
        else:
            text = f"{phase:4} {entity:20} {done} records"
        self.stream.write("\r\x1b[2K" + text)
        self.stream.flush()
        self._drawn = True

    def finish(self) -> None:
        """End the progress line."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


# -- the commands -----------------------------------------------------------------------------


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``edge-min sync``."""
    p.add_argument(
        "--now",
        action="store_true",
        help="one attempt right away, no retry (default: retry with backoff as sync-config's "
        "retry says)",
    )
    p.add_argument(
        "--entity",
        action="append",
        choices=ENTITIES,
        metavar="E",
        help=f"sync only this entity (repeatable; one of {', '.join(ENTITIES)})",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--allow-insecure-http",
        action="store_true",
        help="allow plain http:// to a central that is not on loopback (logs a warning)",
    )


def add_status_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``edge-min sync status`` (none yet)."""


def add_conflicts_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``edge-min sync conflicts``."""
    p.add_argument("--json", action="store_true", help="print the conflicts as JSON")


def add_resolve_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``edge-min sync resolve ID --take edge|central``."""
    p.add_argument("id", help="the conflict id (from `edge-min sync conflicts`)")
    p.add_argument(
        "--take",
        required=True,
        choices=("edge", "central"),
        help="keep this edge's row (pushed at the next sync) or central's",
    )


def sync_run(args: argparse.Namespace, config: Any, paths: Any) -> int:
    """``edge-min sync [--now] [--entity E]``: sync now, show progress, print a summary."""
    import random
    import time

    from edge_min.sync.retry import RetryTracker

    store = _open(config, paths)
    try:
        mgr = build_manager(
            config, paths, store, allow_insecure=getattr(args, "allow_insecure_http", False)
        )
        bar = ProgressPrinter()
        wanted = list(args.entity or ENTITIES)
        tracker = RetryTracker(config.sync_config.retry, random.Random())
        while True:
            report = mgr.sync_once(wanted, progress=bar)
            bar.finish()
            failed = [e for e, r in report.entities.items() if not r.ok]
            if report.ok or args.now or report.skipped or not failed:
                break
            delays = {e: tracker.failed(e, 0.0, retryable=_retryable(report, e)) for e in failed}
            again = {e: d for e, d in delays.items() if d is not None}
            if not again:
                break
            wait = max(again.values())
            print(
                f"sync failed ({report.entities[failed[0]].error}); retrying in {wait:.0f} s",
                file=sys.stderr,
            )
            time.sleep(wait)
            wanted = list(again)
        mgr.transport.close()
        if args.json:
            print(json.dumps(report.to_dict(), indent=2, sort_keys=True))
        else:
            print(report.summary())
        return 0 if report.ok else 1
    finally:
        store.close()


def _retryable(report: Any, entity: str) -> bool:
    from edge_min.sync.retry import PERMANENT_CODES

    return report.entities[entity].error_code not in PERMANENT_CODES


def sync_status(args: argparse.Namespace, config: Any, paths: Any) -> int:
    """``edge-min sync status``: the /sync/status document of this data directory."""
    from edge_min.sync.changes import SyncState
    from edge_min.sync.manager import status_document

    store = _open(config, paths)
    try:
        state = SyncState(store, node_id(store, config.security_config), SystemClock())
        doc = status_document(dict(state.status()))
        doc["central_url"] = config.sync.central_url
        doc["node"] = state_node(store)
        print(json.dumps(doc, indent=2, sort_keys=True, default=str))
        return 0
    finally:
        store.close()


def state_node(store: Any) -> str | None:
    """The node id remembered in meta, if any."""
    value = store.meta.get(NODE_META_KEY)
    return str(value) if value else None


def sync_conflicts(args: argparse.Namespace, config: Any, paths: Any) -> int:
    """``edge-min sync conflicts``: the unresolved conflicts (manual policy)."""
    from edge_min.sync.changes import SyncState

    store = _open(config, paths)
    try:
        state = SyncState(store, node_id(store, config.security_config), SystemClock())
        rows = list(state.conflicts())
        if args.json:
            print(json.dumps(rows, indent=2, sort_keys=True, default=str))
        elif not rows:
            print("no unresolved conflicts")
        else:
            for r in rows:
                print(
                    f"{r.get('id')}  {r.get('entity')}/{r.get('entity_id')}  "
                    f"detected {r.get('detected_at')}  (central version "
                    f"{r.get('central_version')})"
                )
            print(
                f"{len(rows)} conflict(s); settle one with "
                "`edge-min sync resolve ID --take edge|central`"
            )
        return 0
    finally:
        store.close()


def sync_resolve(args: argparse.Namespace, config: Any, paths: Any) -> int:
    """``edge-min sync resolve ID --take edge|central``."""
    from edge_min.sync.changes import SyncState

    store = _open(config, paths)
    try:
        state = SyncState(store, node_id(store, config.security_config), SystemClock())
        state.resolve(args.id, args.take)
        then = "pushed at the next sync" if args.take == "edge" else "central's row applied"
        print(f"conflict {args.id} resolved: took {args.take} ({then})")
        return 0
    finally:
        store.close()


# -- asking a running runtime ---------------------------------------------------------------


def sync_via_runtime(config: Any, paths: Any, base: str, timeout: float = 120.0) -> int:
    """POST /sync/now to the runtime at ``base``; wait for the run; print a summary."""
    import time

    from edge_min.clock import iso
    from edge_min.security.local import LocalApiError, call_local_api

    def call(method: str, path: str) -> dict[str, Any]:
        try:
            return dict(call_local_api(config, paths.root, base, method, path))
        except LocalApiError as exc:
            raise SyncUnavailable(exc.message) from exc

    started = time.time()
    try:
        call("POST", "/sync/now")
    except SyncUnavailable as exc:
        print(f"sync: failed: {exc}")
        return 1
    deadline = time.monotonic() + timeout
    while True:
        doc = call("GET", "/sync/status")
        attempts = [e.get("last_attempt") or "" for e in doc.get("entities", {}).values()]
        finished = doc["status"] != "running" and attempts and min(attempts) >= iso(started)
        if finished or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    for entity, info in sorted(doc.get("entities", {}).items()):
        error = f", error: {info['last_error']}" if info.get("last_error") else ""
        print(
            f"{entity}: pending {info.get('pending')}, last success {info.get('last_success')}"
            f"{error}"
        )
    print(f"sync: {doc['status']}")
    return 0 if doc["status"] == "success" else 1
