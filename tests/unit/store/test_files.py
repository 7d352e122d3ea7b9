"""FileStore: areas, safe names, the storage quota (database included), tmp cleanup."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_min.errors import ConfigError, NotFound, QuotaExceeded, StorageError
from edge_min.store import open_store
from edge_min.store.files import AREAS, FileStore


def _all_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_areas_are_created_and_files_round_trip(tmp_path: Path) -> None:
    fs = FileStore(tmp_path / "root")
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == sorted(AREAS)
    p = fs.write("models", "clf/model.onnx", b"weights")
    assert p == tmp_path / "root" / "models" / "clf" / "model.onnx"
    fs.write("data", "in.json", [b"{", b'"a": 1', b"}"])
    assert fs.read("models", "clf/model.onnx") == b"weights"
    assert fs.read("data", "in.json") == b'{"a": 1}'
    assert fs.list("models") == ["clf/model.onnx"] and fs.list("logs") == []
    fs.write("data", "in.json", b"replaced")
    assert fs.read("data", "in.json") == b"replaced"
    assert fs.delete("data", "in.json") is True and fs.delete("data", "in.json") is False
    with pytest.raises(NotFound, match=r"no file data/in\.json"):
        fs.read("data", "in.json")


@pytest.mark.parametrize(
    "name", ["", "..", "../x", "a/../../x", "/etc/passwd", ".", "./", "..\\x", "a\x00b"]
)
def test_names_that_escape_the_area_are_refused(tmp_path: Path, name: str) -> None:
    fs = FileStore(tmp_path)
    with pytest.raises(StorageError, match="is not allowed in data/"):
        fs.write("data", name, b"x")
    assert _all_files(tmp_path) == []


def test_unknown_area_and_symlink_escape(tmp_path: Path) -> None:
    fs = FileStore(tmp_path / "root")
    with pytest.raises(StorageError, match="unknown file area 'etc'; use one of models"):
        fs.path("etc", "x")
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, tmp_path / "root" / "data" / "link")
    with pytest.raises(StorageError, match="resolves outside data/"):
        fs.write("data", "link/x", b"x")
    assert list(outside.iterdir()) == []


def test_a_write_over_the_quota_fails_and_leaves_nothing(tmp_path: Path) -> None:
    fs = FileStore(tmp_path, max_bytes=1000)
    fs.write("data", "a.bin", b"x" * 600)
    with pytest.raises(QuotaExceeded) as err:
        fs.write("data", "b.bin", b"y" * 500)
    msg = str(err.value)
    assert "usage is 600B" in msg and "limit 1000B" in msg and "needs 500B" in msg
    assert (err.value.usage, err.value.limit, err.value.needed) == (600, 1000, 500)
    assert _all_files(tmp_path) == ["data/a.bin"]
    fs.write("data", "b.bin", b"y" * 400)  # exactly at the limit is allowed
    assert fs.total_usage() == 1000 and fs.free_bytes() == 0


def test_a_streamed_write_stops_at_the_quota_and_keeps_the_old_file(tmp_path: Path) -> None:
    fs = FileStore(tmp_path, max_bytes="1KB")
    fs.write("data", "f.bin", b"old")
    pulled: list[int] = []

    def chunks() -> Iterator[bytes]:
        for i in range(100):
            pulled.append(i)
            yield b"z" * 100

    with pytest.raises(QuotaExceeded, match=r"needs at least 1\.1KB but usage is 0B"):
        fs.write("data", "f.bin", chunks())
    assert len(pulled) == 11  # stopped as soon as the running total passed the limit
    assert fs.read("data", "f.bin") == b"old"
    assert _all_files(tmp_path) == ["data/f.bin"]


def test_replacing_a_file_counts_only_the_difference(tmp_path: Path) -> None:
    fs = FileStore(tmp_path, max_bytes=1000)
    fs.write("models", "m", b"a" * 800)
    fs.write("models", "m", b"b" * 900)
    assert fs.usage()["models"] == 900


def test_the_database_counts_against_the_quota(tmp_path: Path) -> None:
    fs = FileStore(tmp_path, max_bytes=1000, db_size=lambda: 900)
    assert fs.usage()["database"] == 900 and fs.total_usage() == 900
    with pytest.raises(QuotaExceeded, match="usage is 900B"):
        fs.write("tmp", "x", b"x" * 200)
    # With a real database: its size (db + wal) is what the quota sees.
    store = open_store(tmp_path / "edge.db")
    for i in range(50):
        store.workflows.create(f"w{i}", {"pad": "x" * 1000}, "1")
    db_bytes = store.size_bytes()
    assert db_bytes > 50_000
    real = FileStore(tmp_path / "files", max_bytes=db_bytes + 100, db_size=store.size_bytes)
    assert real.usage()["database"] == db_bytes
    real.write("data", "small", b"s" * 100)
    with pytest.raises(QuotaExceeded):
        real.write("data", "one-more", b"s")
    store.close()


def test_usage_per_area(tmp_path: Path) -> None:
    fs = FileStore(tmp_path)
    fs.write("logs", "a.log", b"1234")
    fs.write("models", "m/b", b"12")
    assert fs.usage() == {"models": 2, "data": 0, "tmp": 0, "logs": 4, "database": 0}
    assert fs.free_bytes() is None


def test_cleanup_tmp_removes_old_scratch_and_abandoned_temp_files(tmp_path: Path) -> None:
    fs = FileStore(tmp_path)
    now = 2_000_000_000.0
    old = fs.write("tmp", "old/a", b"a" * 10)
    fresh = fs.write("tmp", "fresh", b"b" * 20)
    abandoned = tmp_path / "data" / ".edge-tmp-dead-x.bin"
    abandoned.write_bytes(b"c" * 5)
    kept_data = fs.write("data", "keep", b"d" * 7)
    for p in (old, abandoned, kept_data):
        os.utime(p, (now - 7200, now - 7200))
    os.utime(fresh, (now - 60, now - 60))
    assert fs.cleanup_tmp(older_than_seconds=3600, now=now) == 15
    assert _all_files(tmp_path) == ["data/keep", "tmp/fresh"]


def test_a_bad_limit_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"runtime\.max_storage_usage"):
        FileStore(tmp_path, max_bytes="lots")
