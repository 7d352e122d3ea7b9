"""The one-file launcher (``targets/gateway/launcher.c``) on a small payload, in every run.

The gateway binary is this launcher with the Nuitka standalone folder packed behind it
(``build/onefile.py``). Here the folder is a shell script and a few files, so the unpack
rules are tested in seconds, without a Nuitka build: unpack once, atomically, then exec;
the started process is the program; races, leftovers of killed starts, corruption,
truncation, unsafe names and unwritable caches each end in a clear error or a clean state.
Secure boot: the launcher runs nothing from a file whose signature fails (a byte flipped
anywhere, another key, a cut or missing signature), and tells the program it verified it.
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
import signing  # type: ignore[import-not-found]

zstandard = pytest.importorskip("zstandard")
pytestmark = pytest.mark.skipif(
    shutil.which("gcc") is None or not Path("/usr/include/zstd.h").exists(),
    reason="needs gcc and libzstd-dev (make test installs them: scripts/system-deps.sh)",
)

TAG = "9.9.9-0123456789ab"
PROGRAM = """\
#!/bin/sh
here=$(dirname "$0")
echo "pid=$$ onefile=$EDGE_MIN_ONEFILE args=$*"
cat "$here/data/greeting.txt" "$here/link.txt"
[ -z "$SHOW_BOOT" ] || echo "boot=$EDGE_MIN_BOOT_VERIFIED kind=$EDGE_MIN_BOOT_KEY_KIND"
exit "${EXIT_WITH:-0}"
"""
DOWNLOAD = "https://example.com/edge-min/releases"


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> signing.SigningKey:
    """The key the test launcher accepts (a development key of this test run)."""
    return signing.development_key(tmp_path_factory.mktemp("keys") / "test-key.pem")


@pytest.fixture(scope="module")
def launcher(tmp_path_factory: pytest.TempPathFactory, key: signing.SigningKey) -> Path:
    out = tmp_path_factory.mktemp("launcher") / "launcher"
    return onefile.compile_launcher(out, key, DOWNLOAD)


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "folder"
    (folder / "data").mkdir(parents=True)
    (folder / "prog").write_text(PROGRAM)
    (folder / "prog").chmod(0o755)
    (folder / "data" / "greeting.txt").write_text("hello\n")
    (folder / "link.txt").symlink_to("data/greeting.txt")
    return folder


@pytest.fixture
def packed(launcher: Path, tmp_path: Path, key: signing.SigningKey) -> Path:
    out = tmp_path / "edge-min-test"
    onefile.pack(launcher, _folder(tmp_path), "prog", TAG, out, key)
    return out


def _assemble(launcher: Path, payload: bytes, key: signing.SigningKey, out: Path) -> Path:
    """A file of the launcher and a hand-made payload, signed by ``key``."""
    body = launcher.read_bytes() + payload
    out.write_bytes(body + onefile.seal(body, len(body) - len(payload), TAG, "prog", key))
    out.chmod(0o755)
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


def test_corrupt_payload_is_refused_and_leaves_nothing(
    packed: Path, cache: Path, key: signing.SigningKey
) -> None:
    # Corrupt before signing (a broken build, signed): the zstd frame's checksum still refuses.
    info = onefile.read_trailer(packed)
    offset, size = int(info["offset"]), int(info["size"])
    payload = bytearray(packed.read_bytes()[offset : offset + size])
    payload[-3] ^= 0xFF  # inside the frame's checksum
    body = packed.read_bytes()[:offset] + bytes(payload)
    packed.write_bytes(body + onefile.seal(body, offset, TAG, "prog", key))
    res = run(packed, cache)
    assert res.returncode == 1
    assert "corrupt" in res.stderr and "download it again" in res.stderr, res.stderr
    assert list((cache / "edge-min").iterdir()) == []


def test_truncated_file_is_refused(packed: Path, cache: Path) -> None:
    data = packed.read_bytes()
    packed.write_bytes(data[:-500] + data[-128:])  # payload cut, trailer kept
    res = run(packed, cache)
    assert res.returncode == 1 and "truncated or damaged" in res.stderr, res.stderr
    assert "signature check failed" in res.stderr and DOWNLOAD in res.stderr


def test_launcher_without_payload_says_so(launcher: Path, cache: Path) -> None:
    res = run(launcher, cache)
    assert res.returncode == 1 and "has no payload" in res.stderr, res.stderr


def test_unsafe_names_in_a_payload_are_refused(
    launcher: Path, tmp_path: Path, key: signing.SigningKey
) -> None:
    # A crafted payload naming ../escape: nothing may be written outside the directory.
    record = struct.pack("<BIH", 1, 0o644, 9) + b"../escape" + struct.pack("<Q", 2) + b"hi"
    payload = zstandard.ZstdCompressor(write_checksum=True).compress(record + b"\0")
    # Signed with the right key (a build of a hostile folder): the names are checked anyway.
    evil = _assemble(launcher, payload, key, tmp_path / "evil")
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


def test_trailer_round_trip(packed: Path, key: signing.SigningKey) -> None:
    info = onefile.read_trailer(packed)
    assert info["tag"] == TAG and info["entry"] == "prog"
    assert info["signed_by"] == key.key_id
    assert int(info["offset"]) + int(info["size"]) + 96 + 128 == packed.stat().st_size
    with pytest.raises(ValueError, match="no edge-min payload"):
        onefile.read_trailer(ROOT / "README.md")


def test_an_update_keeps_one_older_version_for_rollback(
    launcher: Path, tmp_path: Path, key: signing.SigningKey
) -> None:
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
    onefile.pack(launcher, other, "other-prog", "1.0.0-000000000000", tmp_path / "o", key)
    assert run(tmp_path / "o", cache).returncode == 0
    for age, version in ((300, "1.0.0"), (200, "1.1.0"), (100, "1.2.0")):
        binary = tmp_path / f"edge-min-{version}"
        onefile.pack(launcher, folder, "prog", f"{version}-aaaaaaaaaaaa", binary, key)
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


def test_a_cut_frame_with_a_matching_trailer_is_refused(
    packed: Path, cache: Path, key: signing.SigningKey
) -> None:
    # The trailer agrees with the file and the signature is good (a broken build, signed),
    # but the zstd frame inside it stops short.
    info = onefile.read_trailer(packed)
    data = packed.read_bytes()
    offset, size = int(info["offset"]), int(info["size"])
    body = data[: offset + size - 40]
    packed.write_bytes(body + onefile.seal(body, offset, TAG, "prog", key))
    res = run(packed, cache)
    assert res.returncode == 1 and "corrupt" in res.stderr, res.stderr
    assert list((cache / "edge-min").iterdir()) == []


# -- secure boot: the signature ------------------------------------------------------------


def _refused(res: subprocess.CompletedProcess[str], cache: Path, why: str) -> None:
    assert res.returncode == 1, res.stdout + res.stderr
    assert "signature check failed" in res.stderr and why in res.stderr, res.stderr
    assert f"download it again from {DOWNLOAD}" in res.stderr, res.stderr
    assert res.stdout == ""  # nothing ran
    assert not (cache / "edge-min").exists() or list((cache / "edge-min").iterdir()) == []


def test_a_good_signature_starts_and_tells_the_program(
    packed: Path, cache: Path, key: signing.SigningKey
) -> None:
    res = run(packed, cache, SHOW_BOOT="1", EDGE_MIN_BOOT_VERIFIED="forged")
    assert res.returncode == 0, res.stderr
    # The launcher's own claim replaces whatever the caller put in the environment.
    assert res.stdout.splitlines()[-1] == f"boot={key.key_id} kind=development"


@pytest.mark.parametrize(
    "where",
    ["launcher", "payload-start", "payload-middle", "payload-end", "signature", "trailer-tag"],
)
def test_a_byte_flipped_anywhere_does_not_start(packed: Path, cache: Path, where: str) -> None:
    info = onefile.read_trailer(packed)
    offset, size = int(info["offset"]), int(info["size"])
    data = bytearray(packed.read_bytes())
    at = {
        "launcher": offset // 2,
        "payload-start": offset,
        "payload-middle": offset + size // 2,
        "payload-end": offset + size - 1,
        "signature": offset + size + 32 + 10,  # inside R
        "trailer-tag": len(data) - 128 + 33,
    }[where]
    data[at] ^= 0x01
    packed.write_bytes(bytes(data))
    _refused(run(packed, cache), cache, "does not match its signature")


def test_a_tampered_file_is_refused_even_once_unpacked(packed: Path, cache: Path) -> None:
    # Every start verifies, not only the first: a cached directory does not vouch for a file.
    assert run(packed, cache).returncode == 0
    data = bytearray(packed.read_bytes())
    data[int(onefile.read_trailer(packed)["offset"]) + 100] ^= 0x80
    packed.write_bytes(bytes(data))
    res = run(packed, cache)
    assert res.returncode == 1 and "does not match its signature" in res.stderr, res.stderr
    assert res.stdout == ""


def test_a_payload_signed_by_another_key_does_not_start(
    launcher: Path, tmp_path: Path, key: signing.SigningKey
) -> None:
    other = signing.development_key(tmp_path / "other.pem")
    binary = tmp_path / "other-signed"
    onefile.pack(launcher, _folder(tmp_path), "prog", TAG, binary, other)
    res = run(binary, tmp_path / "cache")
    _refused(res, tmp_path / "cache", f"signed by another key ({other.key_id}")
    assert f"this launcher accepts {key.key_id}" in res.stderr
    # Another key's signature next to the trusted public key: the signature itself fails.
    data = bytearray(binary.read_bytes())
    block = len(data) - 128 - 96
    data[block : block + 32] = key.public
    binary.write_bytes(bytes(data))
    _refused(run(binary, tmp_path / "cache"), tmp_path / "cache", "does not match its signature")


@pytest.mark.parametrize("kept", [0, 95, 64, 1])
def test_a_cut_or_missing_signature_does_not_start(packed: Path, cache: Path, kept: int) -> None:
    info = onefile.read_trailer(packed)
    data = packed.read_bytes()
    end = int(info["offset"]) + int(info["size"])
    trailer = bytearray(data[-128:])
    trailer[12:16] = kept.to_bytes(4, "little")  # the trailer agrees with the cut block
    packed.write_bytes(data[:end] + data[end : end + kept] + bytes(trailer))
    why = "is not signed" if kept == 0 else f"a signature of {kept} bytes, not 96"
    _refused(run(packed, cache), cache, why)


def test_a_signature_cut_off_behind_an_intact_trailer_does_not_start(
    packed: Path, cache: Path
) -> None:
    data = packed.read_bytes()
    packed.write_bytes(data[: -128 - 30] + data[-128:])
    _refused(run(packed, cache), cache, "truncated or damaged")


def test_an_unsigned_format_1_file_does_not_start(launcher: Path, tmp_path: Path) -> None:
    payload = zstandard.ZstdCompressor(write_checksum=True).compress(b"\0")
    body = launcher.read_bytes()
    old = tmp_path / "old"
    old.write_bytes(
        body
        + payload
        + onefile.TRAILER.pack(onefile.MAGIC, 1, 0, len(body), len(payload), TAG.encode(), b"p")
    )
    old.chmod(0o755)
    _refused(run(old, tmp_path / "cache"), tmp_path / "cache", "is not signed (payload format 1")


def test_verify_only_checks_and_runs_nothing(
    packed: Path, cache: Path, key: signing.SigningKey
) -> None:
    res = run(packed, cache, EDGE_MIN_VERIFY_ONLY="1")
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"{packed}: signature good, signed by {key.key_id} (development key)\n"
    assert not cache.exists()


# -- the build's keys (build/signing.py) -----------------------------------------------------


def test_the_development_key_is_made_once_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "dev.pem"
    first = signing.development_key(path)
    assert path.stat().st_mode & 0o777 == 0o600 and first.kind == "development"
    assert signing.development_key(path).public == first.public
    # Both libraries agree on the key id and on the signature.
    from cryptography.hazmat.primitives.asymmetric import ed25519

    ed25519.Ed25519PublicKey.from_public_bytes(first.public).verify(first.sign(b"m"), b"m")


def test_a_given_key_file_is_a_release_key(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    private = ed25519.Ed25519PrivateKey.generate()
    pem = tmp_path / "release.pem"
    pem.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key = signing.resolve({"EDGE_MIN_SIGNING_KEY": str(pem)})
    assert key.kind == "release" and key.public == private.public_key().public_bytes_raw()
    assert key.key_id == "ed25519:" + __import__("hashlib").sha512(key.public).hexdigest()[:16]


def test_an_external_signing_command_signs_and_is_checked(
    launcher: Path, tmp_path: Path, key: signing.SigningKey
) -> None:
    # An HSM stand-in: a command reading the message on stdin, writing the raw signature.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    private = ed25519.Ed25519PrivateKey.generate()
    raw = private.private_bytes_raw().hex()
    public_pem = tmp_path / "hsm.pub.pem"
    public_pem.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    script = tmp_path / "hsm_sign.py"
    script.write_text(
        "import sys\n"
        "from cryptography.hazmat.primitives.asymmetric import ed25519\n"
        f"k = ed25519.Ed25519PrivateKey.from_private_bytes(bytes.fromhex('{raw}'))\n"
        "sys.stdout.buffer.write(k.sign(sys.stdin.buffer.read()))\n"
    )
    env = {
        "EDGE_MIN_SIGNING_PUBKEY": str(public_pem),
        "EDGE_MIN_SIGN_COMMAND": f"{sys.executable} {script}",
    }
    hsm = signing.resolve(env)
    assert hsm.kind == "release" and hsm.public == private.public_key().public_bytes_raw()
    hsm_launcher = onefile.compile_launcher(tmp_path / "hsm" / "launcher", hsm, DOWNLOAD)
    binary = tmp_path / "hsm-signed"
    onefile.pack(hsm_launcher, _folder(tmp_path), "prog", TAG, binary, hsm)
    res = run(binary, tmp_path / "cache", SHOW_BOOT="1")
    assert res.returncode == 0 and f"boot={hsm.key_id} kind=release" in res.stdout, res.stderr
    # A command that signs with another key is caught at build time, not on the gateway.
    wrong = signing.SigningKey(
        key.public, "release", "EDGE_MIN_SIGN_COMMAND", command=env["EDGE_MIN_SIGN_COMMAND"]
    )
    with pytest.raises(SystemExit, match="does not verify with the public key"):
        wrong.sign(b"message")


def test_packing_with_another_key_than_the_launcher_is_refused(
    launcher: Path, tmp_path: Path, key: signing.SigningKey
) -> None:
    job = onefile.PackJob(launcher, _folder(tmp_path), "prog", TAG, tmp_path / "o", key.key_id)
    job.save(tmp_path / "pack.json")
    loaded = onefile.PackJob.load(tmp_path / "pack.json")
    assert loaded == job
    with pytest.raises(SystemExit, match="compiled for key"):
        loaded.run(signing.development_key(tmp_path / "other.pem"))
    assert loaded.run(key) > 0 and run(tmp_path / "o", tmp_path / "cache").returncode == 0
