"""The `edge-min sync` command functions against a real central: run, status, conflicts."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import pytest

from edge_min.config import load_config
from edge_min.config.sync import NetworkPolicy, SyncConfig
from edge_min.errors import NotFound
from edge_min.runtime import Paths
from edge_min.security.atrest import open_device_store
from edge_min.sync import commands
from edge_min.sync.commands import ProgressPrinter, load_sync_key
from edge_min.sync.tracker import ChangeTracker
from tests.integration.sync.helpers import start_central


def _setup(tmp_path: Path, url: str, *, encryption: bool = False) -> tuple[object, Paths]:
    base = load_config(None)
    config = replace(
        base,
        sync=replace(base.sync, central_url=url),
        sync_config=SyncConfig(network=NetworkPolicy(max_bandwidth=0, encryption=encryption)),
    )
    return config, Paths(root=tmp_path / "edge", db=tmp_path / "edge" / "edge.db")


def test_sync_run_status_and_conflicts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server = start_central(tmp_path / "central.db")
    try:
        config, paths = _setup(tmp_path, server.url)
        paths.root.mkdir(parents=True)
        with open_device_store(config, paths, changes=ChangeTracker) as store:
            store.agents.create("a1", "python", {"entry": "x:y"}, "1")
        args = argparse.Namespace(now=True, entity=["agents"], json=False)
        assert commands.sync_run(args, config, paths) == 0
        out = capsys.readouterr()
        assert "agents: pushed 1 (accepted 1" in out.out
        assert "push agents: 1/1" in out.err  # not a TTY: plain progress lines
        assert commands.sync_status(argparse.Namespace(), config, paths) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["status"] == "success" and doc["entities"]["agents"]["pending"] == 0
        assert doc["node"].startswith("edge-")
        assert commands.sync_conflicts(argparse.Namespace(json=False), config, paths) == 0
        assert "no unresolved conflicts" in capsys.readouterr().out
        with pytest.raises(NotFound, match="sync conflicts"):
            commands.sync_resolve(argparse.Namespace(id="nope", take="edge"), config, paths)
    finally:
        server.stop()


def test_sync_run_fails_with_exit_1_when_central_is_down(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, paths = _setup(tmp_path, "http://127.0.0.1:9")
    args = argparse.Namespace(now=True, entity=None, json=True)
    assert commands.sync_run(args, config, paths) == 1
    report = json.loads(capsys.readouterr().out)
    assert not report["ok"] and "refused" in report["entities"]["agents"]["error"]


def test_progress_bar_on_a_terminal() -> None:
    import io

    buf = io.StringIO()
    bar = ProgressPrinter(buf, tty=True)
    bar("agents", "push", 10, 40)
    bar.finish()
    assert "[#######" in buf.getvalue() and "10/40" in buf.getvalue()


def test_the_sync_key_is_made_once_and_kept(tmp_path: Path) -> None:
    key = load_sync_key(tmp_path)
    assert len(key) == 32 and load_sync_key(tmp_path) == key
    assert (tmp_path / "keys" / "sync.key").stat().st_mode & 0o077 == 0
    (tmp_path / "keys" / "sync.key").write_bytes(b"short")
    from edge_min.sync.errors import SyncKeyError

    with pytest.raises(SyncKeyError, match="32 raw bytes"):
        load_sync_key(tmp_path)


@pytest.mark.parametrize(
    ("edge_default", "conflicts", "b_config"),
    [
        (None, 0, {"v": "A"}),  # the spec's policy for agents: central_wins
        ("manual", 1, {"v": "B"}),  # edge-config's default for entities without their own
    ],
)
def test_edge_config_conflict_resolution_is_the_policy_of_entities_without_one(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    edge_default: str | None,
    conflicts: int,
    b_config: dict[str, str],
) -> None:
    server = start_central(tmp_path / "central.db")
    try:
        devices = []
        for name in ("a", "b"):
            folder = tmp_path / name
            folder.mkdir()
            policy = f"  conflict_resolution: {edge_default}\n" if edge_default else ""
            (folder / "edge-config.yaml").write_text(
                f"sync:\n  central_url: {server.url}\n{policy}"
            )
            # sync-config.yaml names the network policy only: every entity keeps its default
            (folder / "sync-config.yaml").write_text(
                "sync:\n  network:\n    max_bandwidth: 0\n    encryption: false\n"
            )
            config = load_config(folder / "edge-config.yaml")
            devices.append((config, Paths(root=folder, db=folder / "edge.db")))
        (config_a, paths_a), (config_b, paths_b) = devices
        args = argparse.Namespace(now=True, entity=["agents"], json=False)
        with open_device_store(config_a, paths_a, changes=ChangeTracker) as store:
            agent_id = store.agents.create("a1", "python", {"v": "0"}, "1")["id"]
        assert commands.sync_run(args, config_a, paths_a) == 0
        assert commands.sync_run(args, config_b, paths_b) == 0  # b pulls a1
        for cfg, paths, value in ((config_a, paths_a, "A"), (config_b, paths_b, "B")):
            with open_device_store(cfg, paths, changes=ChangeTracker) as store:
                store.agents.update(agent_id, config={"v": value})
        assert commands.sync_run(args, config_a, paths_a) == 0
        commands.sync_run(args, config_b, paths_b)  # b's edit is based on the old version
        capsys.readouterr()
        assert commands.sync_conflicts(argparse.Namespace(json=True), config_b, paths_b) == 0
        assert len(json.loads(capsys.readouterr().out)) == conflicts
        with open_device_store(config_b, paths_b, changes=ChangeTracker) as store:
            assert store.agents.require(agent_id)["config"] == b_config
    finally:
        server.stop()
