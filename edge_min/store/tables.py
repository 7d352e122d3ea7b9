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
from typing import Any

NO_DEFAULT: Any = object()


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

    def column(self, name: str) -> Column | None:
        """The column called ``name``, or None."""
        by_name = self.__dict__.get("_by_name")
        if by_name is None:  # built once; the dataclass is frozen, so set it directly
            by_name = {c.name: c for c in self.columns}
            object.__setattr__(self, "_by_name", by_name)
        return by_name.get(name)

    @property
    def column_names(self) -> tuple[str, ...]:
        """Column names in declaration order."""
        return tuple(c.name for c in self.columns)


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
    )
}

SPEC_TABLES = ("workflows", "workflow_executions", "agents", "agent_executions", "sync_log")
