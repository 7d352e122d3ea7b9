"""The one-file launcher (``targets/gateway/launcher.c``) on a small payload, in every run.

The gateway binary is this launcher with the Nuitka standalone folder packed behind it
(``build/onefile.py``). Here the folder is a shell script and a few files, so the unpack
rules are tested in seconds, without a Nuitka build: unpack once, atomically, then exec;
the started process is the program; races, leftovers of killed starts, corruption,
truncation, unsafe names and unwritable caches each end in a clear error or a clean state.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "build"))
import onefile  # type: ignore[import-not-found]

zstandard = pytest.importorskip("zstandard")
pytestmark = pytest.mark.skipif(
    shutil.which("gcc") is None or not Path("/usr/include/zstd.h").exists(),
    reason="needs gcc and libzstd-dev "
    "(make test and make binary install them: scripts/system-deps.sh)",
)

TAG = "9.9.9-0123456789ab"
PROGRAM = """\
#!/bin/sh
here=$(dirname "$0")
echo "pid=$$ onefile=$EDGE_MIN_ONEFILE args=$*"
cat "$here/data/greeting.txt" "$here/link.txt"
exit "${EXIT_WITH:-0}"
"""


@pytest.fixture(scope="module")
def launcher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return onefile.compile_launcher(tmp_path_factory.mktemp("launcher") / "launcher")


@pytest.fixture
def packed(launcher: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "folder"
    (folder / "data").mkdir(parents=True)
    (folder / "prog").write_text(PROGRAM)
    (folder / "prog").chmod(0o755)
    (folder / "data" / "greeting.txt").write_text("hello\n")
    (folder / "link.txt").symlink_to("data/greeting.txt")
    out = tmp_path / "edge-min-test"
    onefile.pack(launcher, folder, "prog", TAG, out)
    return out


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "cache"


def run(binary: Path, cache: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "XDG_CACHE_HOME": str(cache), **env}
    if "EDGE_MIN_UNPACK_DIR" not in env:
        environ.pop("EDGE_MIN_UNPACK_DIR", None)
    return subprocess.run([str(binary), *args], env=environ, capture_output=True, text=True)


def test_first_start_unpacks_then_execs_the_program(packed: Path, cache: Path) -> None:
    proc = subprocess.Popen(
        [str(packed), "a", "b c"],
        env={**os.environ, "XDG_CACHE_HOME": str(cache)},
        stdout=subprocess.PIPE,
        text=True,
    )
    out, _ = proc.communicate(timeout=30)
    # The same pid: the launcher exec'd the program instead of running it as a child.
    assert out.splitlines() == [
        f"pid={proc.pid} onefile={packed} args=a b c",
        "hello",
        "hello",
    ]
    target = cache / "edge-min" / TAG
    assert sorted(p.name for p in (cache / "edge-min").iterdir()) == [TAG]
    assert (target / ".complete").is_file()
    assert os.access(target / "prog", os.X_OK)
    assert os.readlink(target / "link.txt") == "data/greeting.txt"


def test_cached_start_reuses_the_directory_and_passes_the_exit_code(
    packed: Path, cache: Path
) -> None:
    assert run(packed, cache).returncode == 0
    marker = cache / "edge-min" / TAG / ".complete"
    stamp = marker.stat().st_mtime_ns
    (cache / "edge-min" / TAG / "data" / "greeting.txt").write_text("cached\n")
    again = run(packed, cache, EXIT_WITH="3")
    assert again.returncode == 3
    assert again.stdout.splitlines()[1] == "cached"  # ran from the existing directory
    assert marker.stat().st_mtime_ns == stamp


def test_concurrent_first_starts_share_one_directory(packed: Path, cache: Path) -> None:
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: run(packed, cache, "x"), range(6)))
    assert all(r.returncode == 0 and "args=x" in r.stdout for r in results), results
    assert sorted(p.name for p in (cache / "edge-min").iterdir()) == [TAG]


def test_leftovers_of_killed_starts_are_removed_but_live_ones_kept(
    packed: Path, cache: Path
) -> None:
    base = cache / "edge-min"
    dead = base / f"{TAG}.partial.999999999"  # no such pid
    live = base / f"{TAG}.partial.{os.getpid()}"
    for leftover in (dead, live):
        (leftover / "data").mkdir(parents=True)
        (leftover / "data" / "half-written").write_bytes(b"\0" * 100)
    assert run(packed, cache).returncode == 0
    assert not dead.exists() and live.exists()
    assert (base / TAG / ".complete").is_file()


def test_incomplete_directory_is_replaced(packed: Path, cache: Path) -> None:
    # A directory without .complete (copied by hand, say) is never run: it is replaced.
    stale = cache / "edge-min" / TAG
    stale.mkdir(parents=True)
    (stale / "prog").write_text("#!/bin/sh\necho stale\n")
    (stale / "prog").chmod(0o755)
    res = run(packed, cache)
    assert res.returncode == 0 and "hello" in res.stdout, res.stdout + res.stderr
    assert sorted(p.name for p in (cache / "edge-min").iterdir()) == [TAG]


def test_corrupt_payload_is_refused_and_leaves_nothing(packed: Path, cache: Path) -> None:
    info = onefile.read_trailer(packed)
    data = bytearray(packed.read_bytes())
    data[int(info["offset"]) + int(info["size"]) - 3] ^= 0xFF  # inside the frame's checksum
    packed.write_bytes(bytes(data))
    res = run(packed, cache)
    assert res.returncode == 1
    assert "corrupt" in res.stderr and "download it again" in res.stderr, res.stderr
    assert list((cache / "edge-min").iterdir()) == []


def test_truncated_file_is_refused(packed: Path, cache: Path) -> None:
    data = packed.read_bytes()
    packed.write_bytes(data[:-500] + data[-128:])  # payload cut, trailer kept
    res = run(packed, cache)
    assert res.returncode == 1 and "truncated or damaged" in res.stderr, res.stderr


def test_launcher_without_payload_says_so(launcher: Path, cache: Path) -> None:
    res = run(launcher, cache)
    assert res.returncode == 1 and "has no payload" in res.stderr, res.stderr


def test_unsafe_names_in_a_payload_are_refused(launcher: Path, tmp_path: Path) -> None:
    # A crafted payload naming ../escape: nothing may be written outside the directory.
    record = struct.pack("<BIH", 1, 0o644, 9) + b"../escape" + struct.pack("<Q", 2) + b"hi"
    payload = zstandard.ZstdCompressor(write_checksum=True).compress(record + b"\0")
    evil = tmp_path / "evil"
    body = launcher.read_bytes()
    evil.write_bytes(
        body
        + payload
        + onefile.TRAILER.pack(
            onefile.MAGIC, onefile.FORMAT, 0, len(body), len(payload), TAG.encode(), b"prog"
        )
    )
    evil.chmod(0o755)
    res = run(evil, tmp_path / "cache")
    assert res.returncode == 1 and "unsafe path '../escape'" in res.stderr, res.stderr
    assert not (tmp_path / "cache" / "edge-min" / "escape").exists()
    assert list((tmp_path / "cache" / "edge-min").iterdir()) == []


def test_unwritable_cache_names_the_directory_and_the_fix(packed: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    res = run(packed, blocker / "cache")
    assert res.returncode == 1
    assert str(blocker) in res.stderr and "XDG_CACHE_HOME" in res.stderr, res.stderr


def test_unpack_dir_override(packed: Path, tmp_path: Path) -> None:
    # EDGE_MIN_UNPACK_DIR runs an unpacked tree shipped read-only; it is never written.
    res = run(packed, tmp_path / "c", EDGE_MIN_UNPACK_DIR=str(tmp_path / "missing"))
    assert res.returncode == 1 and "EDGE_MIN_UNPACK_DIR" in res.stderr, res.stderr
    assert run(packed, tmp_path / "c").returncode == 0
    tree = tmp_path / "c" / "edge-min" / TAG
    res = run(packed, tmp_path / "elsewhere", EDGE_MIN_UNPACK_DIR=str(tree))
    assert res.returncode == 0 and "hello" in res.stdout
    assert not (tmp_path / "elsewhere").exists()


def test_trailer_round_trip(packed: Path) -> None:
    info = onefile.read_trailer(packed)
    assert info["tag"] == TAG and info["entry"] == "prog"
    assert int(info["offset"]) + int(info["size"]) + 128 == packed.stat().st_size
    with pytest.raises(ValueError, match="no edge-min payload"):
        onefile.read_trailer(ROOT / "README.md")


def test_an_update_keeps_one_older_version_for_rollback(launcher: Path, tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "prog").write_text("#!/bin/sh\necho ok\n")
    (folder / "prog").chmod(0o755)
    other = tmp_path / "other"  # another program (say the -onnx variant) in the same cache
    other.mkdir()
    (other / "other-prog").write_text("#!/bin/sh\necho other\n")
    (other / "other-prog").chmod(0o755)
    cache = tmp_path / "cache"
    base = cache / "edge-min"
    onefile.pack(launcher, other, "other-prog", "1.0.0-000000000000", tmp_path / "o")
    assert run(tmp_path / "o", cache).returncode == 0
    for age, version in ((300, "1.0.0"), (200, "1.1.0"), (100, "1.2.0")):
        binary = tmp_path / f"edge-min-{version}"
        onefile.pack(launcher, folder, "prog", f"{version}-aaaaaaaaaaaa", binary)
        res = run(binary, cache)
        assert res.returncode == 0 and res.stdout == "ok\n", res.stderr
        marker = base / f"{version}-aaaaaaaaaaaa" / ".complete"
        os.utime(marker, (marker.stat().st_atime - age, marker.stat().st_mtime - age))
    # 1.2.0 running, 1.1.0 kept for a rollback, 1.0.0 removed; the other program untouched.
    assert sorted(p.name for p in base.iterdir()) == [
        "1.0.0-000000000000",
        "1.1.0-aaaaaaaaaaaa",
        "1.2.0-aaaaaaaaaaaa",
    ]


def test_a_cut_frame_with_a_matching_trailer_is_refused(packed: Path, cache: Path) -> None:
    # The trailer agrees with the file, but the zstd frame inside it stops short.
    info = onefile.read_trailer(packed)
    data = packed.read_bytes()
    offset, size = int(info["offset"]), int(info["size"])
    cut = data[offset : offset + size - 40]
    packed.write_bytes(
        data[:offset]
        + cut
        + onefile.TRAILER.pack(
            onefile.MAGIC, onefile.FORMAT, 0, offset, len(cut), TAG.encode(), b"prog"
        )
    )
    res = run(packed, cache)
    assert res.returncode == 1 and "corrupt" in res.stderr, res.stderr
    assert list((cache / "edge-min").iterdir()) == []
