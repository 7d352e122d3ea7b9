"""Encryption at rest, as the config asks: the device store opened with (or without) the cipher.

``open_device_store`` is how every connection to the device database is made (the runtime's,
the API threads', the CLI's sync): with ``encryption.storage.enabled`` (edge-security.yaml;
edge-config.yaml's ``security.encryption_enabled`` is reconciled into it) the payload columns
are sealed by the runtime's one ``KeyRing`` and the first data key is made if the ring is
empty; with it off, plaintext is stored as before, and opening is refused while the ring still
holds keys (values may be sealed under them) until ``edge-min keys decrypt-all`` has run.

The rotation interval in seconds is edge-config.yaml's ``security.key_rotation_interval`` when
it agrees with edge-security.yaml's ``key_rotation_days`` (the loader makes them agree, rounding
to whole days), so an interval set in seconds is kept exactly; otherwise the days.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from edge_min.clock import Clock
from edge_min.errors import EncryptedRowsExist, MasterKeyMismatch, StorageError
from edge_min.security.keyring import KEY_TABLE, KeyRing, master_key_path

if TYPE_CHECKING:
    from edge_min.config import EdgeConfig
    from edge_min.runtime import Paths
    from edge_min.store import Store
    from edge_min.store.repos import ChangeRecorderFactory

DAY = 86400.0


def encryption_enabled(config: EdgeConfig) -> bool:
    """Whether payload columns are sealed (``encryption.storage.enabled``)."""
    return bool(config.security_config.encryption.storage.enabled)


def rotation_interval(config: EdgeConfig) -> float:
    """Seconds a data key is current before a new one is made."""
    days = int(config.security_config.encryption.storage.key_rotation_days)
    seconds = float(config.security.key_rotation_interval)
    return seconds if max(1, round(seconds / DAY)) == days else days * DAY


def key_ring(config: EdgeConfig, paths: Paths, clock: Clock | None = None) -> KeyRing | None:
    """The key ring of the data directory when encryption is on (keys read when first used)."""
    if not encryption_enabled(config):
        return None
    return KeyRing(master_key_path(paths.root), clock)


def open_device_store(
    config: EdgeConfig,
    paths: Paths,
    *,
    ring: KeyRing | None = None,
    clock: Clock | None = None,
    changes: ChangeRecorderFactory | None = None,
    decrypting: bool = False,
) -> Store:
    """A connection to the device database, sealed by ``ring`` when encryption is on.

    ``ring`` is shared by a runtime's connections (made here from the config if None).
    ``decrypting`` (``keys decrypt-all``) opens with the cipher while encryption is off.
    """
    from edge_min.store import open_store

    enabled = encryption_enabled(config)
    if ring is None and (enabled or decrypting):
        ring = KeyRing(master_key_path(paths.root), clock)
    store = open_store(
        str(paths.db),
        synchronous=config.storage.synchronous,
        clock=clock,
        changes=changes,
        cipher=ring.cipher if ring is not None and (enabled or decrypting) else None,
    )
    try:
        if enabled:
            assert ring is not None
            # A lockdown dropped the keys: the connection still opens (plain columns, the
            # gate's 423), and a sealed column raises KeysDropped until an unlock.
            if not ring.dropped:
                ring.ensure(store.raw)
        elif decrypting:
            assert ring is not None
            ring.load(store.raw)
        else:
            refuse_plaintext_over_keys(store)
    except BaseException:
        store.close()
        raise
    return store


def refuse_plaintext_over_keys(store: Store) -> None:
    """``EncryptedRowsExist`` when encryption is off but the ring still holds keys."""
    keys = store.raw.count(KEY_TABLE)
    if keys:
        raise EncryptedRowsExist(
            f"encryption.storage.enabled is false, but {store.raw.count(KEY_TABLE)} data "
            f"key(s) in the database may still protect rows; run `edge-min keys decrypt-all` "
            "to store them as plaintext first, or switch encryption back on"
        )


def check_backup_keys(backup: str | Path, paths: Paths) -> None:
    """Refuse a backup whose key ring this device's master key cannot unwrap, before restoring.

    A backup of an encrypted database opens only with the master key file that wrapped its
    keys: on another device, copy that device's ``keys/storage.key`` first.
    """
    from edge_min.store import MemoryStore
    from edge_min.store.sqlite import read_table

    try:
        rows = read_table(backup, KEY_TABLE)
    except StorageError:
        return  # not a database at all: restore's own checks say so
    if not rows:
        return
    master = master_key_path(paths.root)
    if not master.exists():
        raise MasterKeyMismatch(
            f"refusing to restore {backup}: its data keys are wrapped under master key "
            f"{rows[0]['master']}, and {master} does not exist; copy keys/storage.key from the "
            "device that made the backup (a backup is useless without it)"
        )
    ring = KeyRing(master)
    scratch = MemoryStore()  # the ring unwraps through a store; nothing is written to it
    for row in rows:
        try:
            ring.unwrap(scratch, row)
        except MasterKeyMismatch as exc:
            raise MasterKeyMismatch(f"refusing to restore {backup}: {exc.message}") from None
