"""The at-rest key ring: data keys wrapped by the device master key, and the field cipher.

- The **master key** (32 random bytes) is the file ``<data>/keys/storage.key`` (0600,
  fsync'd, made once by ``keyfile.create_key_file``). It never enters the database.
- **Data keys** are rows of ``storage_keys`` (migration 5), each wrapped with AES-256-GCM
  under the master key (associated data: the key's id), with the master key's fingerprint.
  A key and the rows it seals commit in the same database, so a kill -9 at any moment
  leaves every row readable, and a backup carries the keys its rows need.
- One key is ``current`` (new values are sealed with it); older ones are ``retiring`` until
  the background job (``rotation``) has re-sealed their rows, then deleted.

``KeyRing`` is shared by every connection of one runtime (it caches the unwrapped keys: one
``Aead`` per key); ``KeyRing.cipher`` is the ``FieldCipherFactory`` a ``Store`` takes, and
gives each connection a ``SealingCipher`` that reads the ring through that connection. A
writer re-reads which key is current at most ``REFRESH_SECONDS`` after it last looked, so a
rotation made by another process (``edge-min keys rotate``) is followed within that time.
``drop_keys()`` (lockdown) forgets every key: from then on sealing or opening a value
raises ``KeysDropped``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from pathlib import Path
from typing import Any

from edge_min.clock import Clock, SystemClock
from edge_min.errors import KeysDropped, MasterKeyMismatch, ValueRejected
from edge_min.security.aead import KEY_BYTES, NONCE_BYTES, TAG_BYTES, Aead, TagMismatch
from edge_min.store.base import Storage
from edge_min.store.sealed import SEALED_PREFIX

KEY_TABLE = "storage_keys"
MASTER_KEY_FILE = Path("keys") / "storage.key"
REFRESH_SECONDS = 5.0
CURRENT, RETIRING = "current", "retiring"
PURPOSE = "Encryption at rest (encryption.storage.enabled)"
_WRAP_AAD = b"edge-min/storage-key/"
_b2a = binascii.b2a_base64
_URLSAFE = bytes.maketrans(b"+/", b"-_")  # base64url, as base64.urlsafe_b64encode does
_MIN_SEALED = len(base64.urlsafe_b64encode(bytes(NONCE_BYTES + TAG_BYTES)))


def master_key_path(root: str | os.PathLike[str]) -> Path:
    """Where the device master key of a data directory lives."""
    return Path(root) / MASTER_KEY_FILE


def fingerprint(master: bytes) -> str:
    """A short public name of a master key (16 hex digits), stored next to what it wraps."""
    return hashlib.sha256(b"edge-min storage master key\0" + master).hexdigest()[:16]


# Nonces: 96 random bits each, as NIST SP 800-38D allows, drawn from the OS in blocks of
# _NONCE_BLOCK so a value costs no system call of its own (one getrandom per value was the
# cipher's largest cost). A forked child must never reuse its parent's unused block: the
# fork generation, bumped in every child, makes each pool refill there first.
_NONCE_BLOCK = 512
_fork_generation = [0]
_fork_hook = [False]


def _after_fork_in_child() -> None:
    _fork_generation[0] += 1


def _aad(table: str, column: str, row_id: str) -> bytes:
    return f"enc1|{table}|{column}|{row_id}".encode()


class KeyRing:
    """The data keys of one device database, unwrapped on first use and cached."""

    def __init__(
        self,
        master_file: str | os.PathLike[str],
        clock: Clock | None = None,
        *,
        refresh_seconds: float = REFRESH_SECONDS,
    ) -> None:
        self.master_file = Path(master_file)
        self.clock: Clock = clock or SystemClock()
        self.refresh_seconds = refresh_seconds
        self._master: Aead | None = None
        self.master_id: str | None = None
        self._keys: dict[str, Aead] = {}
        self._current: tuple[str, Aead] | None = None
        self._checked = float("-inf")
        #: True once ``drop_keys`` ran: nothing is sealed or opened any more.
        self.dropped = False

    # -- the master key ----------------------------------------------------------------

    def _master_key(self, db: Storage) -> Aead:
        if self._master is not None:
            return self._master
        from edge_min.security.keyfile import create_key_file

        if self.master_file.exists():
            master = self.master_file.read_bytes()
        else:
            wrapped = db.select(KEY_TABLE, limit=1)
            if wrapped:
                raise MasterKeyMismatch(
                    f"the database's data keys are wrapped under master key "
                    f"{wrapped[0]['master']}, but {self.master_file} does not exist; copy "
                    "keys/storage.key from the device (or its backup) that made this database"
                )
            master = create_key_file(self.master_file, KEY_BYTES)
        if len(master) != KEY_BYTES:
            raise MasterKeyMismatch(
                f"{self.master_file} is {len(master)} bytes, not a {KEY_BYTES}-byte master key"
            )
        self.master_id = fingerprint(master)
        self._master = Aead(master, PURPOSE)
        return self._master

    def _wrap(self, db: Storage, kid: str, key: bytes) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._master_key(db).seal(nonce, key, _WRAP_AAD + kid.encode())
        return base64.urlsafe_b64encode(nonce + sealed).decode("ascii")

    def unwrap(self, db: Storage, row: dict[str, Any]) -> Aead:
        """The data key of a ring row, unwrapped under this device's master key."""
        master = self._master_key(db)
        kid = str(row["id"])
        if row["master"] != self.master_id:
            raise MasterKeyMismatch(
                f"data key {kid} is wrapped under master key {row['master']}, but "
                f"{self.master_file} is master key {self.master_id}: this database (or backup) "
                "comes from another device; restore that device's keys/storage.key to open it"
            )
        try:
            blob = base64.urlsafe_b64decode(str(row["wrapped"]))
            key = master.open(blob[:NONCE_BYTES], blob[NONCE_BYTES:], _WRAP_AAD + kid.encode())
        except (binascii.Error, TagMismatch):
            raise MasterKeyMismatch(
                f"data key {kid} in {KEY_TABLE} does not unwrap under {self.master_file} "
                "(altered, or wrapped by another master key with the same name)"
            ) from None
        return Aead(key, PURPOSE)

    # -- the ring ----------------------------------------------------------------------

    def _alive(self) -> None:
        if self.dropped:
            raise KeysDropped(
                "the storage data keys were dropped from memory (the device locked down); "
                "encrypted columns cannot be read or written until an admin lifts the "
                "lockdown (`edge-min security unlock`)"
            )

    def load(self, db: Storage) -> None:
        """Read the ring from ``db`` and unwrap keys not cached yet."""
        self._alive()
        rows = db.select(KEY_TABLE, order_by=("created_at", "id"))
        keys = dict(self._keys)
        current: tuple[str, Aead] | None = None
        for row in rows:
            kid = str(row["id"])
            if kid not in keys:
                keys[kid] = self.unwrap(db, row)
            if row["state"] == CURRENT:
                current = (kid, keys[kid])
        if not rows:
            self._master_key(db)  # made now, before the first key needs it
        self._keys = {k: v for k, v in keys.items() if any(str(r["id"]) == k for r in rows)}
        self._current = current
        self._checked = self.clock.monotonic()

    def rows(self, db: Storage) -> list[dict[str, Any]]:
        """The ring's rows as stored, oldest first (the wrapped keys stay wrapped)."""
        return db.select(KEY_TABLE, order_by=("created_at", "id"))

    def current(self, db: Storage) -> tuple[str, Aead]:
        """The key new values are sealed with, re-checked every ``refresh_seconds``."""
        self._alive()
        now = self.clock.monotonic()
        if self._current is None or now - self._checked >= self.refresh_seconds:
            found = db.select(KEY_TABLE, {"state": CURRENT}, limit=1)
            if not found:
                raise MasterKeyMismatch(
                    f"encryption at rest is on but {KEY_TABLE} has no current key (it was "
                    "removed by hand?); open the store again to make one"
                )
            if self._current is None or self._current[0] != found[0]["id"]:
                self.load(db)
            self._checked = now
        assert self._current is not None
        return self._current

    def key(self, db: Storage, kid: str) -> Aead | None:
        """The key with this id (the ring re-read once if it is not known), or None."""
        self._alive()
        key = self._keys.get(kid)
        if key is None:
            self.load(db)
            key = self._keys.get(kid)
        return key

    def ensure(self, db: Storage) -> str:
        """The current key's id, making the first key if the ring is empty."""
        self.load(db)
        if self._current is not None:
            return self._current[0]
        return self.rotate(db, first=True)

    def rotate(self, db: Storage, *, first: bool = False) -> str:
        """Make a new current key; the previous one starts retiring. The new key's id.

        With ``first``, only if the ring has no current key yet (checked under the write
        lock: another process opening the same empty database may have made it meanwhile).
        """
        self._alive()
        now = self.clock.time()
        with db.atomic():
            if first:
                made = db.select(KEY_TABLE, {"state": CURRENT}, limit=1)
                if made:
                    self.load(db)
                    return str(made[0]["id"])
            kid = secrets.token_hex(4)
            while db.get(KEY_TABLE, {"id": kid}) is not None:
                kid = secrets.token_hex(4)
            wrapped = self._wrap(db, kid, secrets.token_bytes(KEY_BYTES))
            db.update(KEY_TABLE, {"state": CURRENT}, {"state": RETIRING, "retired_at": now})
            db.insert(
                KEY_TABLE,
                {
                    "id": kid,
                    "wrapped": wrapped,
                    "master": self.master_id,
                    "state": CURRENT,
                    "created_at": now,
                },
            )
        self.load(db)
        return kid

    def forget(self, db: Storage, kid: str) -> None:
        """Delete a key from the ring (the caller made sure no row uses it)."""
        db.delete(KEY_TABLE, {"id": kid})
        self.load(db)

    def drop_keys(self) -> None:
        """Erase every key from memory (lockdown); sealing and opening raise ``KeysDropped``.

        Python cannot scrub the bytes objects it made; dropping every reference is what
        this can do (the AES contexts free their key schedules with them).
        """
        self.dropped = True
        self._keys = {}
        self._current = None
        self._master = None

    def restore_keys(self) -> None:
        """After an unlock: keys are read again from the master key file on first use."""
        self.dropped = False
        self._checked = float("-inf")

    def cipher(self, db: Storage) -> SealingCipher:
        """A connection's field cipher (``FieldCipherFactory`` for ``Store``)."""
        return SealingCipher(self, db)


class SealingCipher:
    """``FieldCipher`` over a ``KeyRing``, reading the ring through one connection."""

    def __init__(self, ring: KeyRing, db: Storage) -> None:
        self.ring = ring
        self.db = db
        if not _fork_hook[0] and hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_after_fork_in_child)
            _fork_hook[0] = True
        self._pool = b""
        self._pos = 0
        self._generation = -1
        self._monotonic = ring.clock.monotonic

    def _nonce(self) -> bytes:
        pos = self._pos
        if pos >= len(self._pool) or self._generation != _fork_generation[0]:
            self._pool = os.urandom(NONCE_BYTES * _NONCE_BLOCK)
            self._generation = _fork_generation[0]
            pos = 0
        self._pos = pos + NONCE_BYTES
        return self._pool[pos : pos + NONCE_BYTES]

    def seal(self, table: str, column: str, row_id: str, plain: str) -> str:
        """``plain`` sealed under the current key, bound to (table, column, row id)."""
        ring = self.ring
        current = ring._current
        if current is None or self._monotonic() - ring._checked >= ring.refresh_seconds:
            current = ring.current(self.db)
        pos = self._pos
        if pos >= len(self._pool) or self._generation != _fork_generation[0]:
            nonce = self._nonce()
        else:  # the common case of _nonce(), inline: this runs for every value written
            self._pos = pos + NONCE_BYTES
            nonce = self._pool[pos : pos + NONCE_BYTES]
        body = current[1].seal(
            nonce,
            plain.encode("utf-8", "surrogatepass"),
            f"enc1|{table}|{column}|{row_id}".encode(),
        )
        text = _b2a(nonce + body, newline=False).translate(_URLSAFE).decode("ascii")
        return f"{SEALED_PREFIX}{current[0]}:{text}"

    def open(self, table: str, column: str, row_id: str, sealed: str) -> str:
        """The plaintext of ``sealed``; ``ValueRejected`` naming where it is if it fails."""
        kid, _, text = sealed[len(SEALED_PREFIX) :].partition(":")
        where = f"{table}.{column} of row {row_id!r}"
        if len(text) < _MIN_SEALED:
            raise self._rejected(where, table, column, row_id, "it is truncated")
        aead = self.ring.key(self.db, kid)
        if aead is None:
            raise self._rejected(
                where, table, column, row_id, f"its key {kid!r} is not in the key ring"
            )
        try:
            blob = base64.urlsafe_b64decode(text)
            plain = aead.open(blob[:NONCE_BYTES], blob[NONCE_BYTES:], _aad(table, column, row_id))
        except (binascii.Error, ValueError):  # TagMismatch is a ValueError
            raise self._rejected(
                where,
                table,
                column,
                row_id,
                "it fails authentication (altered, truncated, or moved from another row or column)",
            ) from None
        return plain.decode("utf-8", "surrogatepass")

    @staticmethod
    def _rejected(where: str, table: str, column: str, row_id: str, why: str) -> ValueRejected:
        return ValueRejected(
            f"the encrypted value of {where} cannot be read: {why}; nothing was returned for "
            "it, other rows are unaffected",
            table=table,
            column=column,
            row_id=row_id,
        )
