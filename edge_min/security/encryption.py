"""The encryption subsystem: key rotation and background re-sealing, ``keys`` commands, lockdown.

Contributes the ``encryption.rotate`` job (a new data key every ``rotation_interval``), the
re-sealing work on the loop's tick (one small transaction per turn: values under retiring
keys, and plaintext rows after encryption was switched on), its part of the status, two
metrics, and the commands ``keys status``, ``keys rotate`` and ``keys decrypt-all``.

``Encryption.drop_keys()`` is for lockdown (``host.find(Encryption)``): it erases every data
key from memory; afterwards reading or writing an encrypted column raises ``KeysDropped``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from edge_min.subsystem import Command, CommandContext, Job, Subsystem

if TYPE_CHECKING:
    from edge_min.security.keyring import KeyRing
    from edge_min.security.rotation import Resealer
    from edge_min.store import Store

log = logging.getLogger("edge_min.security")

STEP_PAUSE = 0.02  # seconds between two re-sealing transactions: the engine runs in between
IDLE_CHECK = 30.0  # how often an idle ring is asked whether a key retired (another process)
ROTATE_CHECK_MAX = 60.0


class Encryption(Subsystem):
    """Encryption at rest of the device database's payload columns."""

    name = "encryption"
    needs = ("storage",)

    ring: KeyRing | None = None

    def open(self) -> None:
        """Take the storage connection's key ring; a first pass seals any plaintext rows."""
        from edge_min.security.atrest import rotation_interval
        from edge_min.security.keyring import SealingCipher
        from edge_min.security.rotation import Resealer
        from edge_min.store.subsystem import Storage

        self.store: Store = self.host.get(Storage).store
        cipher = self.store.cipher
        self.ring = cipher.ring if isinstance(cipher, SealingCipher) else None
        self.interval = rotation_interval(self.host.config)
        self._resealer: Resealer | None = None
        self._next = float("-inf")
        if self.ring is not None:
            self._resealer = Resealer(self.ring, self.store.raw)

    def drop_keys(self) -> None:
        """Erase the data keys from memory (lockdown): encrypted columns raise ``KeysDropped``."""
        if self.ring is not None:
            self.ring.drop_keys()
            log.warning("storage data keys dropped from memory")

    def restore_keys(self) -> None:
        """After an unlock: the data keys are unwrapped again from the master key file."""
        if self.ring is not None and self.ring.dropped:
            self.ring.restore_keys()
            log.warning("storage data keys restored (lockdown lifted)")

    def jobs(self) -> Sequence[Job]:
        """``encryption.rotate``: a new data key once the current one is ``interval`` old."""
        if self.ring is None:
            return []
        every = max(1.0, min(self.interval, ROTATE_CHECK_MAX))
        return [Job("encryption.rotate", every, self.rotate_if_due)]

    def rotate_if_due(self) -> str | None:
        """Rotate when the current key is old enough; the new key's id, or None."""
        from edge_min.security.rotation import rotation_due

        ring = self.ring
        if ring is None or ring.dropped:
            return None
        if not rotation_due(ring, self.store.raw, self.host.clock.time(), self.interval):
            return None
        kid = ring.rotate(self.store.raw)
        log.info("storage data key rotated: %s is current; older rows re-sealed in background", kid)
        self._next = float("-inf")
        if self._resealer is not None:
            self._resealer.restart()
        return kid

    def tick(self, now: float) -> float | None:
        """One re-sealing transaction when there is work; when idle, look again later."""
        from edge_min.security.rotation import has_retiring

        resealer, ring = self._resealer, self.ring
        if resealer is None or ring is None or ring.dropped or now < self._next:
            return None if resealer is None else self._next
        if resealer.done:
            if not has_retiring(self.store.raw):
                self._next = now + IDLE_CHECK
                return self._next
            resealer.restart()
        resealer.step()
        if resealer.done:
            self._finish_pass()
            self._next = now + IDLE_CHECK
            return self._next
        return now + STEP_PAUSE

    def _finish_pass(self) -> None:
        from edge_min.security.rotation import retire

        assert self._resealer is not None and self.ring is not None
        report = self._resealer.report
        if report.plaintext_sealed:
            checkpoint(self.store)
            log.info("sealed %d plaintext payload values", report.plaintext_sealed)
        retire(self.ring, self.store.raw, self.host.clock.time())

    def status(self) -> Mapping[str, Any]:
        """Whether payloads are encrypted, the current key, how many keys, re-sealing."""
        ring = self.ring
        if ring is None:
            return {"encryption": {"enabled": False}}
        rows = [] if ring.dropped else ring.rows(self.store.raw)
        current = next((str(r["id"]) for r in rows if r["state"] == "current"), None)
        return {
            "encryption": {
                "enabled": True,
                "algorithm": "AES-256-GCM",
                "current_key": current,
                "keys": len(rows),
                "keys_dropped": ring.dropped,
                "rotation_interval_s": self.interval,
                "resealing": self._resealer is not None and not self._resealer.done,
            }
        }

    def metrics(self) -> Mapping[str, float]:
        """``encryption_keys`` in the ring; ``encryption_resealing`` 1 while re-sealing."""
        if self.ring is None or self.ring.dropped:
            return {}
        resealing = self._resealer is not None and not self._resealer.done
        return {
            "encryption_keys": float(self.store.raw.count("storage_keys")),
            "encryption_resealing": 1.0 if resealing else 0.0,
        }

    @classmethod
    def commands(cls) -> Sequence[Command]:
        """``keys status``, ``keys rotate`` and ``keys decrypt-all``."""
        return [
            Command(
                ("keys", "status"),
                "show the storage data keys and how many values each still protects",
                "edge-min keys status",
                keys_status,
            ),
            Command(
                ("keys", "rotate"),
                "make a new storage data key now; older values are re-encrypted",
                "edge-min keys rotate",
                keys_rotate,
            ),
            Command(
                ("keys", "decrypt-all"),
                "store every encrypted value as plaintext again and delete the keys "
                "(after setting encryption.storage.enabled: false)",
                "edge-min keys decrypt-all",
                keys_decrypt_all,
            ),
        ]


def checkpoint(store: Store) -> None:
    """Truncate the WAL (drops frames that held plaintext) where the backend can."""
    fn = getattr(store.raw, "checkpoint_truncate", None)
    if fn is not None:
        fn()


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def keys_status(ctx: CommandContext) -> int:
    """Print the key ring: each key, its state and the values it protects (JSON)."""
    from edge_min.errors import UsageError
    from edge_min.security.atrest import encryption_enabled
    from edge_min.security.keyring import fingerprint, master_key_path
    from edge_min.security.rotation import key_usage
    from edge_min.store import open_store

    config, paths = ctx.context()
    if not paths.db.exists():
        raise UsageError(f"no database at {paths.db}; start the runtime with `edge-min run`")
    master = master_key_path(paths.root)
    # Counting needs no key: the stored text names its key. Nothing is opened or made here.
    with open_store(str(paths.db), synchronous=config.storage.synchronous) as store:
        usage = key_usage(store.raw)
    _print(
        {
            "enabled": encryption_enabled(config),
            "master_key_file": str(master),
            "master_key": fingerprint(master.read_bytes()) if master.exists() else None,
            **usage,
        }
    )
    return 0


def keys_rotate(ctx: CommandContext) -> int:
    """Make a new current key; re-seal here when no runtime runs, else the runtime does."""
    from edge_min.errors import UsageError
    from edge_min.security.atrest import encryption_enabled, open_device_store
    from edge_min.security.rotation import Resealer, retire

    config, paths = ctx.context()
    if not encryption_enabled(config):
        raise UsageError("encryption.storage.enabled is false: there are no keys to rotate")
    with ctx.holding() as here, open_device_store(config, paths) as store:
        cipher = store.cipher
        ring = getattr(cipher, "ring", None)
        assert ring is not None
        kid = ring.rotate(store.raw)
        if not here:
            print(f"new key {kid} is current; the running runtime re-encrypts older values")
            return 0
        report = Resealer(ring, store.raw).run()
        # No runtime holds the data directory: no connection has a stale ring to wait out.
        gone = retire(ring, store.raw, store.clock.time(), grace=0.0)
        if report.plaintext_sealed:
            checkpoint(store)
    print(
        f"new key {kid} is current; re-encrypted {report.rewritten} values; "
        f"deleted {', '.join(gone) or 'no'} retired keys"
        + (f"; {len(report.unreadable)} unreadable values kept" if report.unreadable else "")
    )
    return 1 if report.unreadable else 0


def keys_decrypt_all(ctx: CommandContext) -> int:
    """Store every value as plaintext and delete the key ring (encryption switched off)."""
    from edge_min.errors import RuntimeBusy, UsageError
    from edge_min.security.atrest import encryption_enabled, open_device_store
    from edge_min.security.rotation import PLAIN, Resealer, forget_all

    config, paths = ctx.context()
    if encryption_enabled(config):
        raise UsageError(
            "encryption.storage.enabled is true, so the next start would encrypt everything "
            "again; set it to false (edge-security.yaml, or security.encryption_enabled in "
            "edge-config.yaml) first"
        )
    if not paths.db.exists():
        raise UsageError(f"no database at {paths.db}; nothing to decrypt")
    with ctx.holding() as here:
        if not here:
            raise RuntimeBusy(
                f"edge-min run (pid {ctx.holder()}) is using {paths.root}; stop it first"
            )
        with open_device_store(config, paths, decrypting=True) as store:
            ring = getattr(store.cipher, "ring", None)
            assert ring is not None
            report = Resealer(ring, store.raw, mode=PLAIN).run()
            gone = forget_all(ring, store.raw)
            checkpoint(store)
    if report.unreadable:
        print(
            f"decrypted {report.rewritten} values; {len(report.unreadable)} fail "
            f"authentication and stay encrypted (the keys are kept): "
            f"{', '.join(report.unreadable[:10])}"
        )
        return 1
    print(f"decrypted {report.rewritten} values; deleted keys {', '.join(gone) or '(none)'}")
    return 0
