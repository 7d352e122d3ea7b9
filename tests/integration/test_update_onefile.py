"""A delta between two gateway-style binaries through the commands, installed and started.

The binaries are the real thing but small: ``build/onefile.py`` compiles the launcher
(``targets/gateway/launcher.c``, gcc) with a test key and packs a shell-script program
folder behind it; the new version has one file changed. ``edge-min update bundle
--delta-from`` makes a ``zstd-onefile`` delta, ``edge-min update install`` rebuilds the
new binary from the active slot's one, and the rebuilt slot program is started: the
launcher checks its signature over every byte before it unpacks and runs it. A device whose
installed binary is another one is told to fetch the full bundle, which then installs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli

sys.path.insert(0, str(ROOT / "build"))
import onefile  # type: ignore[import-not-found]
import signing  # type: ignore[import-not-found]

pytest.importorskip("zstandard")
pytestmark = pytest.mark.skipif(
    shutil.which("gcc") is None or not Path("/usr/include/zstd.h").exists(),
    reason="needs gcc and libzstd-dev (make test installs them: scripts/system-deps.sh)",
)

PROGRAM = '#!/bin/sh\necho "version $(cat "$(dirname "$0")/lib/version.txt")"\n'


def build(tmp: Path, launcher: Path, key: signing.SigningKey, version: str) -> Path:
    """The binary of ``version``: the launcher and a folder whose one module says it."""
    folder = tmp / f"folder-{version}"
    (folder / "lib").mkdir(parents=True)
    (folder / "prog").write_text(PROGRAM)
    (folder / "prog").chmod(0o755)
    (folder / "lib" / "version.txt").write_text(version + "\n")
    # Bulk that does not change between versions, as most of the real folder does not.
    (folder / "lib" / "stdlib.py").write_text("".join(f"x{i} = {i * i}\n" for i in range(40000)))
    out = tmp / f"edge-min-{version}"
    onefile.pack(launcher, folder, "prog", f"{version}-0123456789ab", out, key)
    return out


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    done = run_cli(*args, timeout=300)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done


def start(binary: Path, cache: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "XDG_CACHE_HOME": str(cache), **env}
    environ.pop("EDGE_MIN_UNPACK_DIR", None)
    return subprocess.run([str(binary)], env=environ, capture_output=True, text=True, timeout=60)


def test_a_binary_delta_installs_and_the_rebuilt_binary_starts(tmp_path: Path) -> None:
    key = signing.development_key(tmp_path / "key.pem")
    launcher = onefile.compile_launcher(tmp_path / "launcher" / "launcher", key, "test")
    old = build(tmp_path, launcher, key, "1.0.0")
    new = build(tmp_path, launcher, key, "1.1.0")
    keys = tmp_path / "keys"
    cli("update", "keys", "init", str(keys))
    common = ("--keys", str(keys), "--arch", "x86_64")
    delta, full = tmp_path / "delta.emub", tmp_path / "full.emub"
    made = cli("update", "bundle", str(new), "--version", "1.1.0", *common,
               "--delta-from", str(old), "-o", str(delta))  # fmt: skip
    assert "zstd-onefile" in made.stdout, made.stdout
    cli("update", "bundle", str(new), "--version", "1.1.0", *common, "-o", str(full))
    assert delta.stat().st_size < 0.1 * full.stat().st_size

    # A device that runs the old binary (its first install, committed at once).
    root, data = tmp_path / "opt", tmp_path / "data"
    device = ("--data-dir", str(data))
    cli(*device, "update", "trust", str(keys / "root.json"))
    cli("update", "install-payload", str(old), "--version", "1.0.0", "--kind", "binary",
        "--commit", "--root", str(root))  # fmt: skip
    installed = cli(*device, "update", "install", str(delta), "--root", str(root))
    assert "installed 1.1.0 in slot b" in installed.stdout, installed.stdout
    rebuilt = root / "slots" / "b" / "edge-min"
    assert rebuilt.read_bytes() == new.read_bytes()
    assert not (root / "staging").exists()
    ran = start(rebuilt, tmp_path / "cache")
    assert ran.returncode == 0 and ran.stdout == "version 1.1.0\n", ran
    checked = start(rebuilt, tmp_path / "cache", EDGE_MIN_VERIFY_ONLY="1")
    assert checked.returncode == 0 and key.key_id in checked.stdout + checked.stderr, checked


def test_a_device_with_another_binary_takes_the_full_bundle(tmp_path: Path) -> None:
    key = signing.development_key(tmp_path / "key.pem")
    launcher = onefile.compile_launcher(tmp_path / "launcher" / "launcher", key, "test")
    old, other = build(tmp_path, launcher, key, "1.0.0"), build(tmp_path, launcher, key, "1.0.1")
    new = build(tmp_path, launcher, key, "1.1.0")
    keys = tmp_path / "keys"
    cli("update", "keys", "init", str(keys))
    common = ("--keys", str(keys), "--arch", "x86_64")
    delta, full = tmp_path / "delta.emub", tmp_path / "full.emub"
    cli("update", "bundle", str(new), "--version", "1.1.0", *common,
        "--delta-from", str(old), "-o", str(delta))  # fmt: skip
    cli("update", "bundle", str(new), "--version", "1.1.0", *common, "-o", str(full))
    root, data = tmp_path / "opt", tmp_path / "data"
    device = ("--data-dir", str(data))
    cli(*device, "update", "trust", str(keys / "root.json"))
    cli("update", "install-payload", str(other), "--version", "1.0.1", "--kind", "binary",
        "--commit", "--root", str(root))  # fmt: skip
    state = (root / "update-state.json").read_bytes()
    refused = run_cli(*device, "update", "install", str(delta), "--root", str(root))
    assert refused.returncode == 2 and "fetch the full bundle" in refused.stderr, refused
    assert (root / "update-state.json").read_bytes() == state  # no slot was touched
    cli(*device, "update", "install", str(full), "--root", str(root))
    assert (root / "slots" / "b" / "edge-min").read_bytes() == new.read_bytes()
    ran = start(root / "slots" / "b" / "edge-min", tmp_path / "cache")
    assert ran.stdout == "version 1.1.0\n", ran
