"""One file from a Nuitka standalone folder: ``targets/gateway/launcher.c`` + a zstd payload.

``build_binary.py`` calls :func:`compile_launcher` and :func:`pack` after Nuitka has built
``main.dist/``. The format (version 2: signed) is described at the top of ``launcher.c``
and defined once, for the build and the runtime, in ``edge_min/update/onefile.py`` (the
trailer, the record framing, the zstd parameters and writer: update deltas rebuild the
packed file on the device with them); this module writes it (:func:`seal` signs it with a
``signing.SigningKey``), and :func:`read_trailer` reads it back for the tests and
``--print``.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as build/onefile.py pack.json: edge_min from the tree
    sys.path.insert(1, str(ROOT))

import signing  # type: ignore[import-not-found,unused-ignore]  # noqa: E402  # build/, on sys.path
from signing import SigningKey  # type: ignore[import-not-found,unused-ignore]  # noqa: E402

from edge_min.update.onefile import (  # noqa: E402
    DIRECTORY,
    END,
    FILE,
    FORMAT,
    LEVEL,
    MAGIC,
    SIGNATURE_SIZE,
    SYMLINK,
    TRAILER,
    WINDOW_LOG,
    pack_threads,
    payload_writer,
    record_head,
)

__all__ = [
    "DIRECTORY",
    "FILE",
    "FORMAT",
    "LEVEL",
    "MAGIC",
    "SIGNATURE_SIZE",
    "SYMLINK",
    "TRAILER",
    "WINDOW_LOG",
    "PackJob",
    "compile_launcher",
    "pack",
    "read_trailer",
    "seal",
]

LAUNCHER_C = ROOT / "targets" / "gateway" / "launcher.c"
VERIFY_C = ROOT / "targets" / "gateway" / "ed25519_verify.c"
#: Where the launcher's refusal tells the user to get the file again (make binary
#: EDGE_MIN_DOWNLOAD_FROM=https://...): a release build names its download page.
DOWNLOAD_FROM = "where it was published"


def static_zstd() -> str:
    """The path of this system's ``libzstd.a`` (Debian's libzstd-dev), linked into the launcher."""
    arch = sysconfig.get_config_var("MULTIARCH") or ""
    for folder in (f"/usr/lib/{arch}", "/usr/lib", "/usr/lib64", "/usr/local/lib"):
        candidate = Path(folder) / "libzstd.a"
        if candidate.is_file():
            return str(candidate)
    raise SystemExit("build: libzstd.a not found; apt-get install libzstd-dev")


def compile_launcher(out: Path, key: SigningKey, download_from: str | None = None) -> Path:
    """Compile launcher.c with ``$CC`` (default gcc), libzstd linked in statically, accepting
    payloads signed by ``key`` only (its public key goes into ``launcher_key.h`` beside ``out``).

    Only libc stays dynamic: the program it starts needs the same glibc anyway.
    """
    cc = shlex.split(os.environ.get("CC") or "gcc")
    out.parent.mkdir(parents=True, exist_ok=True)
    where = download_from or os.environ.get("EDGE_MIN_DOWNLOAD_FROM") or DOWNLOAD_FROM
    header = signing.write_header(out.parent / "launcher_key.h", key, where)
    # -s: stripped at link time, which gcc and zig (the aarch64 build's compiler) both do.
    # -O2: the launcher hashes the whole payload on every start (ed25519_verify.c).
    cmd = [*cc, "-O2", "-s", "-Wall", "-Wextra", "-Werror", "-I", str(header.parent)]
    cmd += ["-o", str(out), str(LAUNCHER_C), str(VERIFY_C)]
    subprocess.run([*cmd, static_zstd()], check=True)
    return out


def _records(folder: Path):  # type: ignore[no-untyped-def]
    """(kind, mode, name, data-or-path) for every entry under ``folder``, parents first."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        base = Path(dirpath)
        for name in sorted(dirnames) + sorted(filenames):
            path = base / name
            rel = path.relative_to(folder).as_posix()
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                yield SYMLINK, 0o777, rel, os.readlink(path).encode()
            elif stat.S_ISDIR(st.st_mode):
                yield DIRECTORY, stat.S_IMODE(st.st_mode), rel, b""
            elif stat.S_ISREG(st.st_mode):
                yield FILE, stat.S_IMODE(st.st_mode), rel, path
            # sockets, fifos and devices never belong in a build folder: skipped


def seal(body: bytes, offset: int, tag: str, entry: str, key: SigningKey) -> bytes:
    """The signature block and trailer that end a file whose first bytes are ``body`` (the
    launcher, then the payload from ``offset``): signed by ``key`` over ``body`` and the trailer.
    """
    trailer = TRAILER.pack(
        MAGIC, FORMAT, SIGNATURE_SIZE, offset, len(body) - offset, tag.encode(), entry.encode()
    )
    return key.public + key.sign(body + trailer) + trailer


def pack(
    launcher: Path,
    folder: Path,
    entry: str,
    tag: str,
    out: Path,
    key: SigningKey,
    level: int = LEVEL,
) -> int:
    """Write ``out``: the launcher, then ``folder`` as a payload that unpacks into ``<tag>/``,
    signed by ``key`` (which must be the one compiled into ``launcher``).

    ``entry`` is the program's file name inside ``folder``. Returns the payload's size.
    """
    if not (folder / entry).is_file():
        raise SystemExit(f"build: {folder / entry} is missing: the standalone build failed")
    if len(tag.encode()) > 40 or len(entry.encode()) > 56:
        raise SystemExit(f"build: tag {tag!r} or entry {entry!r} too long for the trailer")
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(launcher.read_bytes())
        offset = f.tell()
        # Every CPU: the bytes are the same for any number of workers (a device recompresses
        # them with one, edge_min/update/onefile.py), in multithreaded mode.
        with payload_writer(f, threads=pack_threads(), level=level) as z:
            for kind, mode, name, data in _records(folder):
                content = data.read_bytes() if isinstance(data, Path) else data
                z.write(record_head(kind, mode, name, len(content)))
                z.write(content)
            z.write(END)
        size = f.tell() - offset
    with tmp.open("r+b") as f:
        body = f.read()
        f.write(seal(body, offset, tag, entry, key))
    tmp.chmod(0o755)
    tmp.replace(out)
    return size


def read_trailer(path: Path) -> dict[str, object]:
    """The trailer of a packed file: offset, size, tag, entry, and the signer's key id
    (ValueError if it has none)."""
    data = path.read_bytes()
    magic, fmt, signature_size, offset, size, tag, entry = TRAILER.unpack(data[-TRAILER.size :])
    if magic != MAGIC or fmt != FORMAT:
        raise ValueError(f"{path}: no edge-min payload trailer")
    block = data[offset + size : offset + size + signature_size]
    return {
        "offset": offset,
        "size": size,
        "tag": tag.rstrip(b"\0").decode(),
        "entry": entry.rstrip(b"\0").decode(),
        "signed_by": signing.key_id(block[:32]) if len(block) == SIGNATURE_SIZE else None,
    }


@dataclass(frozen=True)
class PackJob:
    """One ``pack()`` call, savable as JSON: the aarch64 build compiles in its emulated root
    and packs on the host, where zstd level 19 runs natively (minutes faster)."""

    launcher: Path
    folder: Path
    entry: str
    tag: str
    out: Path
    key_id: str = ""  # the key compiled into the launcher: packing must sign with it

    def save(self, path: Path) -> None:
        """Write this job to ``path`` as JSON."""
        fields = {k: str(v) for k, v in self.__dict__.items()}
        path.write_text(json.dumps(fields, indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> PackJob:
        """The job saved at ``path``."""
        raw = json.loads(path.read_text())
        return cls(
            Path(raw["launcher"]),
            Path(raw["folder"]),
            raw["entry"],
            raw["tag"],
            Path(raw["out"]),
            raw.get("key_id", ""),
        )

    def run(self, key: SigningKey | None = None) -> int:
        """Pack, signed by ``key`` (default: the one the environment names, as the launcher
        was compiled with); print and return the payload's size."""
        key = key or signing.resolve()
        if self.key_id and key.key_id != self.key_id:
            raise SystemExit(
                f"build: the launcher was compiled for key {self.key_id} but packing would sign "
                f"with {key.key_id} ({key.source}): set the same EDGE_MIN_SIGNING_KEY for both"
            )
        started = time.monotonic()
        size = pack(self.launcher, self.folder, self.entry, self.tag, self.out, key)
        took = time.monotonic() - started
        print(
            f"{self.out.name}: packed {size / 1e6:.1f} MB payload in {took:.0f}s, "
            f"signed by {key.key_id} ({key.kind} key)"
        )
        return size


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python build/onefile.py build/out/<...>/pack.json")
    PackJob.load(Path(sys.argv[1])).run()
