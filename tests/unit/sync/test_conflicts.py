"""Conflict policies as pure functions: each decides what SYNC_DESIGN.md says."""

from __future__ import annotations

from typing import Any

import pytest

from edge_min.errors import ConfigError
from edge_min.sync.conflicts import (
    KEEP_EDGE,
    MANUAL,
    MERGED,
    POLICIES,
    TAKE_CENTRAL,
    EdgeState,
    resolve,
    same_content,
)


def h(ms: int, node: str = "a", counter: int = 0) -> str:
    return f"{ms:013d}.{counter:05d}.{node}"


BASE = {"name": h(100, "c"), "version": h(100, "c"), "definition": h(100, "c")}


def edge(
    row: dict[str, Any] | None,
    hlc: str,
    field_hlcs: dict[str, str],
    *,
    deleted: bool = False,
) -> EdgeState:
    return EdgeState("w1", row, hlc, field_hlcs, deleted, 7, dict(BASE))


def central(row: dict[str, Any], hlc: str, field_hlcs: dict[str, str], **kw: Any) -> dict[str, Any]:
    return {
        "id": "w1",
        "version": 9,
        "hlc": hlc,
        "origin": "c",
        "row": row,
        "field_hlcs": field_hlcs,
        "deleted": kw.get("deleted", False),
    }


ROW = {"id": "w1", "name": "n0", "version": "1", "definition": "{}"}
E = edge({**ROW, "name": "edge"}, h(300, "e"), {**BASE, "name": h(300, "e")})
C = central({**ROW, "version": "2"}, h(200, "c"), {**BASE, "version": h(200, "c")})


def test_last_modified_greater_hlc_keeps_the_whole_row() -> None:
    d = resolve(E, C, "last_modified")
    assert (d.action, d.row, d.push) == (KEEP_EDGE, E.row, True)
    older = edge(E.row, h(150, "e"), E.field_hlcs)
    d = resolve(older, C, "last_modified")
    assert (d.action, d.row, d.hlc, d.push) == (TAKE_CENTRAL, C["row"], C["hlc"], False)


def test_last_modified_tie_on_time_is_broken_by_node_id() -> None:
    same_time_e = edge(E.row, h(200, "zz"), E.field_hlcs)
    assert resolve(same_time_e, C, "last_modified").action == KEEP_EDGE  # "zz" > "c"
    same_time_e = edge(E.row, h(200, "a"), E.field_hlcs)
    assert resolve(same_time_e, C, "last_modified").action == TAKE_CENTRAL  # "a" < "c"


def test_central_wins_and_edge_wins_ignore_the_clocks() -> None:
    assert resolve(E, C, "central_wins").action == TAKE_CENTRAL
    older = edge(E.row, h(1, "e"), E.field_hlcs)
    d = resolve(older, C, "edge_wins")
    assert (d.action, d.row, d.push) == (KEEP_EDGE, older.row, True)


def test_merge_takes_fields_changed_on_one_side_from_that_side() -> None:
    d = resolve(E, C, "merge")
    assert d.action == MERGED and d.push
    assert d.row == {**ROW, "name": "edge", "version": "2"}
    assert d.field_hlcs == {**BASE, "name": h(300, "e"), "version": h(200, "c")}
    assert d.edge_fields == ("name",)
    assert d.hlc == h(300, "e")


def test_merge_field_changed_on_both_sides_goes_to_the_greater_field_hlc() -> None:
    e = edge({**ROW, "name": "edge"}, h(300, "e"), {**BASE, "name": h(300, "e")})
    c = central({**ROW, "name": "central"}, h(400, "c"), {**BASE, "name": h(400, "c")})
    d = resolve(e, c, "merge")
    assert d.row == c["row"] and not d.push  # nothing of the edge's survives: no push
    c = central({**ROW, "name": "central"}, h(250, "c"), {**BASE, "name": h(250, "c")})
    d = resolve(e, c, "merge")
    assert d.row["name"] == "edge" and d.push


def test_merge_with_a_deletion_is_last_modified_for_the_row() -> None:
    deleted = edge(None, h(500, "e"), dict(BASE), deleted=True)
    d = resolve(deleted, C, "merge")
    assert (d.action, d.deleted, d.push) == (KEEP_EDGE, True, True)
    c_del = central({}, h(900, "c"), dict(BASE), deleted=True)
    d = resolve(E, c_del, "merge")
    assert (d.action, d.deleted, d.row) == (TAKE_CENTRAL, True, None)


def test_manual_decides_nothing() -> None:
    d = resolve(E, C, "manual")
    assert (d.action, d.row, d.push) == (MANUAL, E.row, False)


def test_unknown_policy_is_a_config_error_naming_the_choices() -> None:
    with pytest.raises(ConfigError) as err:
        resolve(E, C, "newest")
    assert "'newest'" in str(err.value) and all(p in str(err.value) for p in POLICIES)


def test_same_content() -> None:
    assert same_content(edge(C["row"], C["hlc"], C["field_hlcs"]), C)
    assert not same_content(E, C)
    assert same_content(edge(None, h(1), {}, deleted=True), central({}, h(2), {}, deleted=True))
