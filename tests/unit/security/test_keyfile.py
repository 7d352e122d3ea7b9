"""Key files are made once, 0600 in a 0700 folder, and a racing process gets the same key."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from edge_min.security.keyfile import create_key_file
from edge_min.security.tokens import load_key
from edge_min.sync.commands import load_sync_key


def test_made_once_private_and_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "k.key"
    key = create_key_file(path, 32)
    assert len(key) == 32 and path.read_bytes() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert create_key_file(path, 32) == key  # a second call finds it and keeps it
    assert [p.name for p in path.parent.iterdir()] == ["k.key"]  # no temporary left


def test_racing_creators_all_get_the_winners_key(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "race.key"
    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(lambda _: create_key_file(path, 32), range(32)))
    assert keys == {path.read_bytes()}


def test_the_token_and_sync_keys_use_it(tmp_path: Path) -> None:
    token_key = load_key(tmp_path / "keys" / "api-token.key")
    sync_key = load_sync_key(tmp_path)
    assert len(token_key) == len(sync_key) == 32 and token_key != sync_key
    assert load_sync_key(tmp_path) == sync_key  # read back, not remade
    assert stat.S_IMODE((tmp_path / "keys" / "sync.key").stat().st_mode) == 0o600


def test_a_host_without_link_makes_it_by_exclusive_create(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Emscripten's file systems (Pyodide in a browser) have no os.link at all.
    monkeypatch.delattr(os, "link")
    path = tmp_path / "keys" / "nolink.key"
    key = create_key_file(path, 32)
    assert path.read_bytes() == key and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert create_key_file(path, 32) == key  # found, not replaced
    assert [p.name for p in path.parent.iterdir()] == ["nolink.key"]
