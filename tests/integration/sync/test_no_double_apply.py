"""A row changed again after its first change was batched is not written twice at central."""

from __future__ import annotations

from pathlib import Path

from tests.integration.sync.helpers import (
    central_versions,
    duplicate_applications,
    make_edge,
    start_central,
    versions,
)


def test_a_row_coalesced_into_an_earlier_batch_is_not_pushed_again(tmp_path: Path) -> None:
    server = start_central(tmp_path / "central.db")
    edge = make_edge(tmp_path, "edge-a", server.url, batch_size=2)
    try:
        s = edge.store
        ids = [s.agents.create(f"agent-{i}", "python", {"n": i}, "1")["id"] for i in range(3)]
        s.agents.set(ids[0], version="2")  # a later change of the first row
        report = edge.manager.sync_once(["agents"])
        assert report.ok
        db = tmp_path / "central.db"
        assert duplicate_applications(db) == []
        assert versions(s) == central_versions(db)
        assert report.entities["agents"].pushed == 3
    finally:
        edge.close()
        server.stop()
