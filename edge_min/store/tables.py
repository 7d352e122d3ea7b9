"""The tables the storage port knows: columns, types, primary key, defaults, NOT NULL.

This is the one description both backends use: ``MemoryStore`` builds its dicts from it and
``SqliteStore`` validates every column name against it before building SQL, and checks at
open that the database's ``PRAGMA table_info`` agrees (``SchemaError`` if not). The first
five tables are the spec's ``edge-schema.sql`` (migration 1); the rest come from our own
migrations in ``migrations.py``. Adding a table means a migration there and a ``Table`` here;
``tests/integration/test_schema.py`` fails if the two disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

NO_DEFAULT: Any = object()

# The Python types a value of each column type may have as is (None always may); anything
# else goes through ``base.check_value``, which converts (bool -> int) or rejects it.
_EXACT_TYPES: dict[str, frozenset[type]] = {
    "TEXT": frozenset({str, type(None)}),
    "INTEGER": frozenset({int, type(None)}),
    "REAL": frozenset({int, float, type(None)}),
}
_ANY_TYPES: frozenset[type] = frozenset({str, int, float, bytes, type(None)})


@dataclass(frozen=True)
class Column:
    """One column: SQLite type name, NOT NULL and a literal default (``NO_DEFAULT`` if none)."""

    name: str
    type: str
    not_null: bool = False
    default: Any = NO_DEFAULT

    @property
    def has_default(self) -> bool:
        """Whether the column has a DEFAULT clause."""
        return self.default is not NO_DEFAULT

    @property
    def default_sql(self) -> str | None:
        """The default as ``PRAGMA table_info`` reports it (``'pending'``), or None."""
        if not self.has_default:
            return None
        if isinstance(self.default, str):
            return "'" + self.default.replace("'", "''") + "'"
        return str(self.default)


@dataclass(frozen=True)
class Table:
    """A table: ordered columns and the primary key columns."""

    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] = ("id",)

    # The cached properties below are derived once per table and used on every row write
    # (cached_property stores into __dict__, which a frozen dataclass without slots allows).

    @cached_property
    def by_name(self) -> dict[str, Column]:
        """Columns by name."""
        return {c.name: c for c in self.columns}

    def column(self, name: str) -> Column | None:
        """The column called ``name``, or None."""
        return self.by_name.get(name)

    @cached_property
    def column_names(self) -> tuple[str, ...]:
        """Column names in declaration order."""
        return tuple(c.name for c in self.columns)

    @cached_property
    def exact_types(self) -> dict[str, frozenset[type]]:
        """Per column, the Python types its values may have without conversion or a check."""
        return {c.name: _EXACT_TYPES.get(c.type, _ANY_TYPES) for c in self.columns}

    @cached_property
    def required(self) -> tuple[str, ...]:
        """Columns that may not be NULL (NOT NULL or in the primary key), in column order."""
        return tuple(c.name for c in self.columns if c.not_null or c.name in self.primary_key)

    @cached_property
    def blank_row(self) -> dict[str, Any]:
        """Every column, in order, set to its default (None where it has none)."""
        return {c.name: None if c.default is NO_DEFAULT else c.default for c in self.columns}


def _t(name: str) -> Column:
    return Column(name, "TEXT")


def _tn(name: str) -> Column:
    return Column(name, "TEXT", not_null=True)


_SYNC = (Column("sync_status", "TEXT", not_null=True, default="pending"), _t("last_synced_at"))

TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        Table(
            "workflows",
            (
                _t("id"),
                _tn("name"),
                _tn("definition"),
                _tn("version"),
                _tn("created_at"),
                _tn("updated_at"),
                *_SYNC,
            ),
        ),
        Table(
            "workflow_executions",
            (
                _t("id"),
                _tn("workflow_id"),
                _tn("status"),
                _t("input"),
                _t("output"),
                _tn("started_at"),
                _t("completed_at"),
                *_SYNC,
            ),
        ),
        Table(
            "agents",
            (
                _t("id"),
                _tn("name"),
                _tn("type"),
                _tn("config"),
                _tn("version"),
                _tn("created_at"),
                _tn("updated_at"),
                *_SYNC,
            ),
        ),
        Table(
            "agent_executions",
            (
                _t("id"),
                _tn("agent_id"),
                _tn("workflow_execution_id"),
                _tn("status"),
                _t("input"),
                _t("output"),
                _tn("started_at"),
                _t("completed_at"),
                _t("metrics"),
                *_SYNC,
            ),
        ),
        Table(
            "sync_log",
            (
                _t("id"),
                _tn("operation"),
                _tn("entity_type"),
                _tn("entity_id"),
                _tn("status"),
                _tn("timestamp"),
                _t("details"),
            ),
        ),
        # Migration 2: our own tables.
        Table("meta", (_t("key"), _tn("value")), primary_key=("key",)),
        Table(
            "schedule_state",
            (_t("job_id"), Column("last_run_at", "REAL"), Column("next_run_at", "REAL")),
            primary_key=("job_id",),
        ),
        # Migration 3: the monitor's buffer, alert states and outbox.
        Table(
            "metrics_buffer",
            (
                Column("seq", "INTEGER"),
                Column("collected_at", "REAL", True),
                Column("metrics", "TEXT", True),
            ),
            primary_key=("seq",),
        ),
        Table(
            "monitor_alerts",
            (
                _t("name"),
                _tn("state"),
                Column("value", "REAL"),
                Column("since", "REAL"),
                Column("fired_at", "REAL"),
                Column("resolved_at", "REAL"),
                Column("updated_at", "REAL", True),
            ),
            primary_key=("name",),
        ),
        Table(
            "monitor_outbox",
            (
                _t("id"),
                _tn("kind"),
                _tn("payload"),
                Column("created_at", "REAL", True),
                Column("attempts", "INTEGER", True, 0),
                _t("last_error"),
                Column("sent_at", "REAL"),
            ),
        ),
        # Migration 4: sync change tracking (edge_min.sync.changes).
        Table(
            "sync_changes",
            (
                Column("seq", "INTEGER"),
                _tn("entity"),
                _tn("entity_id"),
                _tn("op"),
                _tn("hlc"),
                _tn("fields"),
                _tn("at"),
            ),
            primary_key=("seq",),
        ),
        Table(
            "sync_rows",
            (
                _t("entity"),
                _t("entity_id"),
                _tn("hlc"),
                _tn("field_hlcs"),
                Column("central_version", "INTEGER"),
                Column("deleted", "INTEGER", True, 0),
                _t("base_field_hlcs"),
            ),
            primary_key=("entity", "entity_id"),
        ),
        Table(
            "sync_cursors",
            (
                _t("entity"),
                Column("push_seq", "INTEGER", True, 0),
                Column("pull_version", "INTEGER", True, 0),
                _t("last_attempt"),
                _t("last_success"),
                _t("last_error"),
                Column("failures", "INTEGER", True, 0),
            ),
            primary_key=("entity",),
        ),
        Table(
            "sync_conflicts",
            (
                _t("id"),
                _tn("entity"),
                _tn("entity_id"),
                _t("edge_row"),
                _t("central_row"),
                Column("central_version", "INTEGER"),
                _tn("detected_at"),
                _t("resolved_at"),
                _t("resolution"),
            ),
        ),
        # Migration 5: the at-rest key ring (edge_min.security.keyring).
        Table(
            "storage_keys",
            (
                _t("id"),
                _tn("wrapped"),
                _tn("master"),
                _tn("state"),
                Column("created_at", "REAL", True),
                Column("retired_at", "REAL"),
            ),
        ),
    )
}

SPEC_TABLES = ("workflows", "workflow_executions", "agents", "agent_executions", "sync_log")
