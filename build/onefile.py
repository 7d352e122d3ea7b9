"""One file from a Nuitka standalone folder: ``targets/gateway/launcher.c`` + a zstd payload.

``build_binary.py`` calls :func:`compile_launcher` and :func:`pack` after Nuitka has built
``main.dist/``. The format (version 1) is described at the top of ``launcher.c``; this module
writes it, and :func:`read_trailer` reads it back for the tests and ``--print``.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import struct
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAUNCHER_C = ROOT / "targets" / "gateway" / "launcher.c"
MAGIC = b"EDGEMINP"
FORMAT = 1
TRAILER = struct.Struct("<8sIIQQ40s56s")  # magic, format, reserved, offset, size, tag, entry
assert TRAILER.size == 128
FILE, SYMLINK, DIRECTORY = 1, 2, 3


def static_zstd() -> str:
    """The path of this system's ``libzstd.a`` (Debian's libzstd-dev), linked into the launcher."""
    arch = sysconfig.get_config_var("MULTIARCH") or ""
    for folder in (f"/usr/lib/{arch}", "/usr/lib", "/usr/lib64", "/usr/local/lib"):
        candidate = Path(folder) / "libzstd.a"
        if candidate.is_file():
            return str(candidate)
    raise SystemExit("build: libzstd.a not found; apt-get install libzstd-dev")


def compile_launcher(out: Path) -> Path:
    """Compile launcher.c with ``$CC`` (default gcc), libzstd linked in statically.

    Only libc stays dynamic: the program it starts needs the same glibc anyway.
    """
    cc = shlex.split(os.environ.get("CC") or "gcc")
    out.parent.mkdir(parents=True, exist_ok=True)
    # -s: stripped at link time, which gcc and zig (the aarch64 build's compiler) both do.
    cmd = [*cc, "-O2", "-s", "-Wall", "-Wextra", "-Werror", "-o", str(out), str(LAUNCHER_C)]
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


#: zstd level 19 with an 8 MB window (the launcher refuses more: a gateway's RAM). Measured
#: on the -onnx folder (195 MB): level 19 50 MB in 80 s, level 10 56 MB in 5 s, zlib 66 MB;
#: unpacking takes about 0.3 s either way. Builds are rare and every byte goes over the air.
LEVEL = 19
WINDOW_LOG = 23


def pack(launcher: Path, folder: Path, entry: str, tag: str, out: Path, level: int = LEVEL) -> int:
    """Write ``out``: the launcher, then ``folder`` as a payload that unpacks into ``<tag>/``.

    ``entry`` is the program's file name inside ``folder``. Returns the payload's size.
    """
    import zstandard  # the build venvs have it (build/requirements.txt)

    if not (folder / entry).is_file():
        raise SystemExit(f"build: {folder / entry} is missing: the standalone build failed")
    if len(tag.encode()) > 40 or len(entry.encode()) > 56:
        raise SystemExit(f"build: tag {tag!r} or entry {entry!r} too long for the trailer")
    params = zstandard.ZstdCompressionParameters.from_level(
        level, window_log=WINDOW_LOG, write_checksum=True, threads=-1
    )
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(launcher.read_bytes())
        offset = f.tell()
        with zstandard.ZstdCompressor(compression_params=params).stream_writer(
            f, closefd=False
        ) as z:
            for kind, mode, name, data in _records(folder):
                encoded = name.encode()
                content = data.read_bytes() if isinstance(data, Path) else data
                z.write(struct.pack("<BIH", kind, mode, len(encoded)) + encoded)
                z.write(struct.pack("<Q", len(content)) + content)
            z.write(b"\0")
        size = f.tell() - offset
        f.write(TRAILER.pack(MAGIC, FORMAT, 0, offset, size, tag.encode(), entry.encode()))
    tmp.chmod(0o755)
    tmp.replace(out)
    return size


def read_trailer(path: Path) -> dict[str, object]:
    """The trailer of a packed file: offset, size, tag, entry (ValueError if it has none)."""
    data = path.read_bytes()[-TRAILER.size :]
    magic, fmt, _, offset, size, tag, entry = TRAILER.unpack(data)
    if magic != MAGIC or fmt != FORMAT:
        raise ValueError(f"{path}: no edge-min payload trailer")
    return {
        "offset": offset,
        "size": size,
        "tag": tag.rstrip(b"\0").decode(),
        "entry": entry.rstrip(b"\0").decode(),
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

    def save(self, path: Path) -> None:
        """Write this job to ``path`` as JSON."""
        fields = {k: str(v) for k, v in self.__dict__.items()}
        path.write_text(json.dumps(fields, indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> PackJob:
        """The job saved at ``path``."""
        raw = json.loads(path.read_text())
        return cls(
            Path(raw["launcher"]), Path(raw["folder"]), raw["entry"], raw["tag"], Path(raw["out"])
        )

    def run(self) -> int:
        """Pack; print and return the payload's size."""
        started = time.monotonic()
        size = pack(self.launcher, self.folder, self.entry, self.tag, self.out)
        took = time.monotonic() - started
        print(f"{self.out.name}: packed {size / 1e6:.1f} MB payload in {took:.0f}s")
        return size


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python build/onefile.py build/out/<...>/pack.json")
    PackJob.load(Path(sys.argv[1])).run()
