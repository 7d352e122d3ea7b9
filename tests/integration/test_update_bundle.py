"""The update commands end to end (real subprocesses), and the same files over real HTTP.

`edge-min update keys init`, `update bundle` (full and delta, of a real package tar),
`update verify` (exit 0 and what it verified; exit 1 with the error's code), a root
rotation a device on the old root follows, and a repository served by a real HTTP server
on 127.0.0.1 that the device verifies with ``verify_from_files``.
"""

from __future__ import annotations

import http.server
import io
import json
import tarfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_min.update.bundle import repository_files
from edge_min.update.trust import Trust
from edge_min.update.verify import verify_from_files
from tests.conftest import free_port, run_cli


def package(path: Path, module_text: str) -> Path:
    """A from-source-like package: a gzipped tar of a few files, one of them a module."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in (
            ("edge-min", b'#!/bin/sh\nexec python3 -m edge_min.cli "$@"\n'),
            ("VERSION", b"0.2.0\n"),
            ("lib/python/edge_min/units.py", module_text.encode()),
            ("lib/python/edge_min/big.py", b"".join(b"x = %d\n" % i for i in range(20000))),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture()
def keys(tmp_path: Path) -> Path:
    done = run_cli("update", "keys", "init", str(tmp_path / "keys"))
    assert done.returncode == 0, done.stderr
    assert "root.json" in done.stdout
    return tmp_path / "keys"


def test_keys_bundle_verify_and_a_refusal(keys: Path, tmp_path: Path) -> None:
    for role in ("root", "targets", "snapshot", "timestamp"):
        assert (keys / f"{role}.key").stat().st_mode & 0o777 == 0o600
    again = run_cli("update", "keys", "init", str(keys))
    assert again.returncode == 2 and "never overwritten" in again.stderr
    pkg = package(tmp_path / "pkg.tar.gz", "A = 1\n")
    out = tmp_path / "b.emub"
    made = run_cli(
        "update", "bundle", str(pkg), "--version", "0.2.0", "--keys", str(keys),
        "--arch", "x86_64", "--expires", "7d", "-o", str(out),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "package 0.2.0 for x86_64" in made.stdout
    ok = run_cli(
        "update", "verify", str(out), "--trust", str(keys / "root.json"), "--arch", "x86_64",
        "--json",
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    shown = json.loads(ok.stdout)
    assert (shown["version"], shown["kind"], shown["arch"]) == ("0.2.0", "package", "x86_64")
    import gzip

    assert shown["length"] == len(gzip.decompress(pkg.read_bytes()))  # the uncompressed tar
    old = run_cli(
        "update", "verify", str(out), "--trust", str(keys / "root.json"), "--arch", "x86_64",
        "--installed-version", "0.3.0",
    )  # fmt: skip
    assert old.returncode == 1 and "[rollback_refused]" in old.stderr
    arm = run_cli(
        "update", "verify", str(out), "--trust", str(keys / "root.json"), "--arch", "aarch64"
    )
    assert arm.returncode == 1 and "[wrong_arch]" in arm.stderr
    data = bytearray(out.read_bytes())
    data[len(data) // 2] ^= 0x10
    (tmp_path / "bad.emub").write_bytes(data)
    bad = run_cli(
        "update",
        "verify",
        str(tmp_path / "bad.emub"),
        "--trust",
        str(keys / "root.json"),
        "--arch",
        "x86_64",
    )
    assert bad.returncode == 1 and "[payload_mismatch]" in bad.stderr


def test_a_delta_and_a_rotation_through_the_commands(keys: Path, tmp_path: Path) -> None:
    old = package(tmp_path / "old.tar.gz", "A = 1\n")
    new = package(tmp_path / "new.tar.gz", "A = 2\ndef added():\n    return A\n")
    first_root = tmp_path / "root-v1.json"
    first_root.write_bytes((keys / "root.json").read_bytes())
    assert run_cli("update", "keys", "rotate-root", str(keys)).returncode == 0
    out = tmp_path / "d.emub"
    made = run_cli(
        "update", "bundle", str(new), "--version", "0.3.0", "--keys", str(keys),
        "--arch", "x86_64", "--delta-from", str(old), "-o", str(out),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "zstd-patch" in made.stdout
    # Without the base the device is told to fetch the full bundle.
    no_base = run_cli("update", "verify", str(out), "--trust", str(first_root), "--arch", "x86_64")
    assert no_base.returncode == 1 and "[delta_base_missing]" in no_base.stderr
    # With the base (the installed payload: the old package's tar), a device still pinned to
    # root v1 follows the rotation and verifies.
    import gzip

    base = tmp_path / "old.tar"
    base.write_bytes(gzip.decompress(old.read_bytes()))
    ok = run_cli(
        "update", "verify", str(out), "--trust", str(first_root), "--arch", "x86_64",
        "--base", str(base),
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "package 0.3.0" in ok.stdout


@pytest.fixture()
def served(keys: Path, tmp_path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    pkg = package(tmp_path / "pkg.tar.gz", "A = 1\n")
    out = tmp_path / "b.emub"
    assert run_cli(
        "update", "bundle", str(pkg), "--version", "0.2.0", "--keys", str(keys),
        "--arch", "x86_64", "-o", str(out),
    ).returncode == 0  # fmt: skip
    files = repository_files(out)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            name = self.path.removeprefix("/updates/r1/")
            data = files.get(name)
            self.send_response(200 if data is not None else 404)
            self.send_header("Content-Length", str(len(data or b"")))
            self.end_headers()
            self.wfile.write(data or b"")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/updates/r1/", files
    finally:
        server.shutdown()
        server.server_close()


def test_the_repository_verifies_over_http(
    served: tuple[str, dict[str, bytes]], keys: Path, tmp_path: Path
) -> None:
    base_url, _files = served

    def fetch(name: str) -> bytes | None:
        try:
            with urllib.request.urlopen(base_url + name, timeout=10) as resp:
                return resp.read()
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return None
            raise

    trust = Trust.pin((keys / "root.json").read_bytes(), tmp_path / "trust")
    v = verify_from_files(
        fetch,
        trust,
        installed_version="0.1.0",
        arch="x86_64",
        now=time.time(),
        workdir=tmp_path / "w",
    )
    assert v.version == "0.2.0" and v.payload.stat().st_size == v.length
    with tarfile.open(v.payload) as tar:  # an uncompressed tar the installer can unpack
        assert "lib/python/edge_min/units.py" in tar.getnames()
    trust.record(v)
    assert Trust.load(tmp_path / "trust").installed_version == "0.2.0"
