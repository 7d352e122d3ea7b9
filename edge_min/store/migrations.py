"""Numbered schema migrations; ``SqliteStore`` applies the pending ones when it opens.

Each migration runs in its own ``BEGIN IMMEDIATE`` transaction together with its row in
``schema_migrations``, so a failing one leaves the database exactly at the previous version.
Migration 1 is the spec's ``edge-schema.sql`` verbatim (shipped as ``schema.sql``).

To add one, append a line and describe any new table in ``tables.py``::

    (3, "agent step outputs", "CREATE TABLE step_outputs (...);"),

Never edit or renumber a migration that has shipped: databases in the field already recorded it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib import resources

from edge_min.errors import SchemaError

SqlSource = str | Callable[[], str]
Migration = tuple[int, str, SqlSource]

# The bookkeeping table itself is created outside the numbered migrations (it has to exist
# before we can ask which ones ran).
MIGRATIONS_TABLE_SQL = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
)


def spec_schema_sql() -> str:
    """The spec's schema text, read from the package only when a migration needs it."""
    return resources.files("edge_min.store").joinpath("schema.sql").read_text(encoding="utf-8")


MIGRATIONS: list[Migration] = [
    (1, "edge schema (spec edge-schema.sql, verbatim)", spec_schema_sql),
    (
        2,
        "meta and schedule_state",
        """
        -- Device identity and other small settings (device id, last backup time...).
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        -- The scheduler's catch-up state: when each job last ran and is next due.
        CREATE TABLE schedule_state (job_id TEXT PRIMARY KEY, last_run_at REAL, next_run_at REAL);
        """,
    ),
    (
        3,
        "monitor: metrics buffer, alert states, notification outbox",
        """
-- Metric samples waiting for upload to central; seq orders them (oldest dropped first).
CREATE TABLE metrics_buffer (
    seq INTEGER PRIMARY KEY,
    collected_at REAL NOT NULL,
    metrics TEXT NOT NULL
);
CREATE INDEX idx_metrics_buffer_collected_at ON metrics_buffer(collected_at);
-- Each alert's state (inactive, pending, firing, resolved), so a reboot does not re-notify.
CREATE TABLE monitor_alerts (
    name TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    value REAL,
    since REAL,
    fired_at REAL,
    resolved_at REAL,
    updated_at REAL NOT NULL
);
-- Notifications for central: queued while offline, sent once (sent_at set when delivered).
CREATE TABLE monitor_outbox (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    sent_at REAL
);
CREATE INDEX idx_monitor_outbox_sent_at ON monitor_outbox(sent_at);
""",
    ),
    (
        4,
        "sync: change log, row versions, cursors, conflicts",
        """
-- Local changes of the synced tables, written in the same transaction as the change; seq is
-- the per-node sequence number (the HLC as an integer, so it never repeats after a reset).
CREATE TABLE sync_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    entity TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    op TEXT NOT NULL,
    hlc TEXT NOT NULL,
    fields TEXT NOT NULL,
    at TEXT NOT NULL
);
-- Readers scan an entity's pending changes in seq order; no index by row on purpose: it
-- would make every tracked write pay a random b-tree insert (the engine's hot path).
CREATE INDEX idx_sync_changes_entity_seq ON sync_changes(entity, seq);
-- Each synced row's version metadata as of its last sync point (changes since are in
-- sync_changes); base_field_hlcs are central's field HLCs at central_version (merge's base).
CREATE TABLE sync_rows (
    entity TEXT,
    entity_id TEXT,
    hlc TEXT NOT NULL,
    field_hlcs TEXT NOT NULL,
    central_version INTEGER,
    deleted INTEGER NOT NULL DEFAULT 0,
    base_field_hlcs TEXT,
    PRIMARY KEY (entity, entity_id)
);
-- Per entity: how far pushes (local seq) and pulls (central version) have got, and health.
CREATE TABLE sync_cursors (
    entity TEXT PRIMARY KEY,
    push_seq INTEGER NOT NULL DEFAULT 0,
    pull_version INTEGER NOT NULL DEFAULT 0,
    last_attempt TEXT,
    last_success TEXT,
    last_error TEXT,
    failures INTEGER NOT NULL DEFAULT 0
);
-- Conflicts left to a person (manual policy); the row is held until resolved.
CREATE TABLE sync_conflicts (
    id TEXT PRIMARY KEY,
    entity TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    edge_row TEXT,
    central_row TEXT,
    central_version INTEGER,
    detected_at TEXT NOT NULL,
    resolved_at TEXT,
    resolution TEXT
);
CREATE INDEX idx_sync_conflicts_open ON sync_conflicts(entity, entity_id, resolved_at);
""",
    ),
    (
        5,
        "at-rest encryption: the key ring",
        """
-- Data keys of the payload columns, each wrapped (AES-256-GCM) under the device master key
-- whose fingerprint is `master`; in the database, so a new key and the rows it encrypts
-- commit together and a backup carries the keys its rows need. One row is `current`; older
-- ones are `retiring` until no row uses them, then deleted.
CREATE TABLE storage_keys (
    id TEXT PRIMARY KEY,
    wrapped TEXT NOT NULL,
    master TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    retired_at REAL
);
""",
    ),
]


def migration_sql(migration: Migration) -> str:
    """The SQL text of a migration."""
    sql = migration[2]
    return sql() if callable(sql) else sql


def check_migrations(migrations: Sequence[Migration]) -> list[Migration]:
    """``migrations`` sorted; ``SchemaError`` if versions repeat or are not positive integers."""
    seen: set[int] = set()
    for version, name, _sql in migrations:
        if not isinstance(version, int) or version < 1 or version in seen:
            raise SchemaError(
                f"migration {version!r} ({name!r}): versions must be unique positive integers"
            )
        seen.add(version)
    return sorted(migrations, key=lambda m: m[0])
