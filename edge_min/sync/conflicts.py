"""Conflict policies: pure functions from (edge state, central record, policy) to a decision.

A conflict is a row changed on the edge since its last sync while central holds a version the
edge's change was not based on (a push answered ``conflict``, or a pulled record for a row with
local changes pending). ``resolve`` decides it by the entity's ``conflict_resolution``:

- ``last_modified``: the side with the greater HLC keeps the whole row. HLC text compares as
  (wall ms, counter, node), so equal times are broken by node id, and an edit made after the
  edge observed central's version always has the greater HLC, whatever the wall clocks say.
- ``central_wins`` / ``edge_wins``: that side keeps the whole row.
- ``merge``: per column, a field changed on one side only (its field HLC differs from the base,
  central's field HLCs at the version the edge last synced) comes from that side; a field
  changed on both comes from the greater field HLC. A deletion on either side is decided for
  the whole row by ``last_modified`` (a deleted row has no fields to merge).
- ``manual``: nothing is decided; the caller stores the conflict and holds the row.

A central record is the wire shape ``{id, version, hlc, origin, row, field_hlcs, deleted}``.
Nothing here touches a store: ``changes.SyncState`` applies the decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edge_min.errors import ConfigError

POLICIES = ("last_modified", "central_wins", "edge_wins", "merge", "manual")

# What a decision asks the caller to do with the row.
TAKE_CENTRAL = "take_central"  # write central's record locally; drop the local changes
KEEP_EDGE = "keep_edge"  # keep the local row; push it again based on central's version
MERGED = "merged"  # write the merged row locally; push it if it differs from central's
MANUAL = "manual"  # store the conflict; leave the row; hold its pushes


@dataclass(frozen=True)
class EdgeState:
    """The edge's side of a row: its current data and version metadata."""

    id: str
    row: dict[str, Any] | None  # spec columns minus sync_status/last_synced_at; None if deleted
    hlc: str
    field_hlcs: dict[str, str]
    deleted: bool
    base_version: int | None = None  # the central version the local data is based on
    base_field_hlcs: dict[str, str] = field(default_factory=dict)  # central's at base_version


@dataclass(frozen=True)
class Decision:
    """What a policy decided: the resulting row and metadata, and whether to push it."""

    action: str
    row: dict[str, Any] | None
    hlc: str
    field_hlcs: dict[str, str]
    deleted: bool
    push: bool  # the result differs from central's record: push it (based on central's)
    edge_fields: tuple[str, ...] = ()  # merge: the columns taken from the edge


def check_policy(policy: str) -> str:
    """``policy`` if it is one of ``POLICIES``; ``ConfigError`` naming it otherwise."""
    if policy not in POLICIES:
        raise ConfigError(
            f"unknown conflict_resolution {policy!r}; use one of {', '.join(POLICIES)}",
            path="conflict_resolution",
            value=policy,
        )
    return policy


def _central(central: Mapping[str, Any]) -> Decision:
    deleted = bool(central.get("deleted"))
    return Decision(
        TAKE_CENTRAL,
        None if deleted else dict(central.get("row") or {}),
        str(central["hlc"]),
        dict(central.get("field_hlcs") or {}),
        deleted,
        push=False,
    )


def _edge(edge: EdgeState, action: str = KEEP_EDGE) -> Decision:
    return Decision(
        action,
        None if edge.deleted else dict(edge.row or {}),
        edge.hlc,
        dict(edge.field_hlcs),
        edge.deleted,
        push=action == KEEP_EDGE,
    )


def edge_is_newer(edge: EdgeState, central: Mapping[str, Any]) -> bool:
    """Whether the edge's version is the later one by HLC (ties broken by node id)."""
    return edge.hlc > str(central["hlc"])


def last_modified(edge: EdgeState, central: Mapping[str, Any]) -> Decision:
    """The side with the greater HLC keeps the whole row."""
    return _edge(edge) if edge_is_newer(edge, central) else _central(central)


def central_wins(edge: EdgeState, central: Mapping[str, Any]) -> Decision:
    """Central's record replaces the local row."""
    return _central(central)


def edge_wins(edge: EdgeState, central: Mapping[str, Any]) -> Decision:
    """The local row stays and is pushed again on top of central's version."""
    return _edge(edge)


def manual(edge: EdgeState, central: Mapping[str, Any]) -> Decision:
    """Nothing decided: the row is left as it is until a person resolves the conflict."""
    return _edge(edge, MANUAL)


def merge(edge: EdgeState, central: Mapping[str, Any]) -> Decision:
    """Per field: changed on one side only -> that side; on both -> the greater field HLC."""
    if edge.deleted or central.get("deleted"):
        return last_modified(edge, central)
    c_row: dict[str, Any] = dict(central.get("row") or {})
    c_hlcs: dict[str, str] = dict(central.get("field_hlcs") or {})
    e_row = dict(edge.row or {})
    base = edge.base_field_hlcs
    row: dict[str, Any] = {}
    hlcs: dict[str, str] = {}
    from_edge: list[str] = []
    for name in sorted(set(c_row) | set(e_row) | set(c_hlcs) | set(edge.field_hlcs)):
        e_h, c_h, b_h = edge.field_hlcs.get(name), c_hlcs.get(name), base.get(name)
        e_changed, c_changed = e_h != b_h, c_h != b_h
        # One side changed: that side. Both: the greater field HLC.
        take_edge = (e_h or "") > (c_h or "") if e_changed and c_changed else e_changed
        if take_edge and name not in e_row:
            take_edge = False  # a stamp without data (never happens for whole rows)
        if not take_edge and name not in c_row and name in e_row:
            take_edge = True
        if take_edge:
            row[name] = e_row[name]
            if e_h is not None:
                hlcs[name] = e_h
            if e_row[name] != c_row.get(name) or e_h != c_h:
                from_edge.append(name)
        else:
            if name in c_row:
                row[name] = c_row[name]
            if c_h is not None:
                hlcs[name] = c_h
    return Decision(
        MERGED,
        row,
        max(edge.hlc, str(central["hlc"])),
        hlcs,
        False,
        push=bool(from_edge) or hlcs != c_hlcs,
        edge_fields=tuple(from_edge),
    )


_POLICY_FUNCS = {
    "last_modified": last_modified,
    "central_wins": central_wins,
    "edge_wins": edge_wins,
    "merge": merge,
    "manual": manual,
}


def resolve(edge: EdgeState, central: Mapping[str, Any], policy: str) -> Decision:
    """Decide a conflict between the edge's row and central's record by ``policy``."""
    return _POLICY_FUNCS[check_policy(policy)](edge, central)


def same_content(edge: EdgeState, central: Mapping[str, Any]) -> bool:
    """Whether the edge already holds exactly central's record (nothing to decide)."""
    if edge.deleted or central.get("deleted"):
        return edge.deleted and bool(central.get("deleted"))
    return (edge.row or {}) == (central.get("row") or {}) and edge.field_hlcs == (
        central.get("field_hlcs") or {}
    )
