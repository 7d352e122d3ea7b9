"""Re-sealing in the background: rotation's old keys, plaintext rows, and ``decrypt-all``.

``Resealer.step()`` rewrites at most ``batch`` values of one payload column in one short
transaction and returns; the subsystem calls it from the loop's tick with a pause between
steps, so the engine never waits on it for long. Each value is opened with whatever key it
names (or taken as plaintext) and sealed with the current key, by primary key, through the
unsealed backend: re-sealing is not a data change, so nothing is stamped pending or logged
for sync. A kill -9 at any point leaves a prefix of the work committed and every key still
in the ring, so every row stays readable; the next pass starts again from the beginning.

A retiring key is deleted only in a transaction that counts no value under it, and (when
other processes may hold a stale ring) only ``grace`` seconds after it retired, longer than
``keyring.REFRESH_SECONDS``, the most a writer's idea of the current key can lag.
Counting uses a prefix match on each payload column (``enc1:<key id>:``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from edge_min.errors import ValueRejected
from edge_min.security.keyring import CURRENT, RETIRING, KeyRing
from edge_min.store.base import Gt, NotPrefix, Prefix, Storage
from edge_min.store.sealed import PAYLOAD_COLUMNS, SEALED_PREFIX
from edge_min.store.tables import TABLES

log = logging.getLogger("edge_min.security")

DEFAULT_BATCH = 100
RETIRE_GRACE_SECONDS = 60.0
SEAL, PLAIN = "seal", "plain"


def payload_columns() -> Iterator[tuple[str, str]]:
    """Every (table, column) that holds payloads."""
    for table, cols in PAYLOAD_COLUMNS.items():
        for col in cols:
            yield table, col


def key_prefix(kid: str) -> str:
    """What every value sealed under key ``kid`` starts with."""
    return f"{SEALED_PREFIX}{kid}:"


def count_under(db: Storage, prefix: str, *, negate: bool = False) -> int:
    """Payload values (one per row and column) that start (or, negated, do not) with it."""
    cond = NotPrefix(prefix) if negate else Prefix(prefix)
    return sum(db.count(table, {col: cond}) for table, col in payload_columns())


def key_usage(db: Storage) -> dict[str, Any]:
    """The ring's keys (id, state, created, retired) with the values each still protects,
    and how many payload values are plaintext."""
    keys = []
    for row in db.select("storage_keys", order_by=("created_at", "id")):
        kid = str(row["id"])
        keys.append(
            {
                "id": kid,
                "state": row["state"],
                "created_at": row["created_at"],
                "retired_at": row["retired_at"],
                "master": row["master"],
                "values": count_under(db, key_prefix(kid)),
            }
        )
    return {"keys": keys, "plaintext_values": count_under(db, SEALED_PREFIX, negate=True)}


@dataclass
class PassReport:
    """What one pass over every payload column did."""

    rewritten: int = 0
    plaintext_sealed: int = 0
    unreadable: list[str] = field(default_factory=list)


class Resealer:
    """Walks every payload column in small transactions: ``SEAL`` (everything under the
    current key) or ``PLAIN`` (everything back to plaintext, for ``keys decrypt-all``)."""

    def __init__(
        self, ring: KeyRing, db: Storage, *, mode: str = SEAL, batch: int = DEFAULT_BATCH
    ) -> None:
        self.ring = ring
        self.db = db  # the unsealed backend
        self.cipher = ring.cipher(db)
        self.mode = mode
        self.batch = max(1, int(batch))
        self._todo = list(payload_columns())
        self._after: Any = None
        self.report = PassReport()

    @property
    def done(self) -> bool:
        """Whether this pass has been over every column."""
        return not self._todo

    def restart(self) -> None:
        """Begin a new pass."""
        self._todo = list(payload_columns())
        self._after = None
        self.report = PassReport()

    def step(self) -> int:
        """Rewrite up to ``batch`` values in one transaction; how many (0 once done)."""
        while self._todo:
            table, col = self._todo[0]
            n = self._step(table, col)
            if n is not None:
                return n
            self._todo.pop(0)
            self._after = None
        return 0

    def _step(self, table: str, col: str) -> int | None:
        """One batch of one column; None when the column has nothing left."""
        (pk,) = TABLES[table].primary_key
        if self.mode == SEAL:
            kid, _ = self.ring.current(self.db)
            where: dict[str, Any] = {col: NotPrefix(key_prefix(kid))}
        else:
            where = {col: Prefix(SEALED_PREFIX)}
        if self._after is not None:
            where[pk] = Gt(self._after)
        n = 0
        with self.db.atomic():
            rows = self.db.select(table, where, (pk,), self.batch)
            for row in rows:
                self._after = row[pk]
                new = self._rewrite(table, col, str(row[pk]), str(row[col]))
                if new is not None:
                    self.db.update(table, {pk: row[pk]}, {col: new})
                    n += 1
        if not rows:
            return None
        self.report.rewritten += n
        return n

    def _rewrite(self, table: str, col: str, row_id: str, value: str) -> str | None:
        sealed = value.startswith(SEALED_PREFIX)
        try:
            plain = self.cipher.open(table, col, row_id, value) if sealed else value
        except ValueRejected as exc:  # left as it is (its key stays); reported, never guessed
            self.report.unreadable.append(f"{table}.{col}[{row_id}]")
            log.error("re-encryption skipped a value: %s", exc.message)
            return None
        if self.mode == PLAIN:
            return plain
        if not sealed:
            self.report.plaintext_sealed += 1
        return self.cipher.seal(table, col, row_id, plain)

    def run(self) -> PassReport:
        """A whole pass now (the CLI's ``keys rotate`` / ``decrypt-all``, tests)."""
        while self.step() or not self.done:
            pass
        return self.report


def retire(
    ring: KeyRing, db: Storage, now: float, grace: float = RETIRE_GRACE_SECONDS
) -> list[str]:
    """Delete retiring keys no value uses (each checked inside its own transaction)."""
    gone = []
    for row in ring.rows(db):
        if row["state"] != RETIRING:
            continue
        if row["retired_at"] is not None and now - float(row["retired_at"]) < grace:
            continue
        kid = str(row["id"])
        with db.atomic():
            if count_under(db, key_prefix(kid)) == 0:
                db.delete("storage_keys", {"id": kid})
                gone.append(kid)
    if gone:
        ring.load(db)
        log.info("retired storage keys deleted: %s", ", ".join(gone))
    return gone


def forget_all(ring: KeyRing, db: Storage) -> list[str]:
    """After ``decrypt-all``: delete every key, inside a transaction that finds no sealed value."""
    with db.atomic():
        left = count_under(db, SEALED_PREFIX)
        if left:
            return []
        kids = [str(r["id"]) for r in ring.rows(db)]
        for kid in kids:
            db.delete("storage_keys", {"id": kid})
    return kids


def rotation_due(ring: KeyRing, db: Storage, now: float, interval: float) -> bool:
    """Whether the current key is ``interval`` seconds old."""
    found = db.select("storage_keys", {"state": CURRENT}, limit=1)
    return bool(found) and now - float(found[0]["created_at"]) >= interval


def has_retiring(db: Storage) -> bool:
    """Whether some key waits for its values to be re-sealed."""
    return db.count("storage_keys", {"state": RETIRING}) > 0
