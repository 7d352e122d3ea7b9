"""One file from a Nuitka standalone folder: ``targets/gateway/launcher.c`` + a zlib payload.

``build_binary.py`` calls :func:`compile_launcher` and :func:`pack` after Nuitka has built
``main.dist/``. The format (version 1) is described at the top of ``launcher.c``; this module
writes it, and :func:`read_trailer` reads it back for the tests and ``--print``.
"""

from __future__ import annotations

import os
import shlex
import stat
import struct
import subprocess
import sysconfig
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAUNCHER_C = ROOT / "targets" / "gateway" / "launcher.c"
MAGIC = b"EDGEMINP"
FORMAT = 1
TRAILER = struct.Struct("<8sIIQQ40s56s")  # magic, format, reserved, offset, size, tag, entry
assert TRAILER.size == 128
FILE, SYMLINK, DIRECTORY = 1, 2, 3


def static_zlib() -> str:
    """The path of this system's ``libz.a`` (Debian's zlib1g-dev), linked into the launcher."""
    arch = sysconfig.get_config_var("MULTIARCH") or ""
    for folder in (f"/usr/lib/{arch}", "/usr/lib", "/usr/lib64", "/usr/local/lib"):
        candidate = Path(folder) / "libz.a"
        if candidate.is_file():
            return str(candidate)
    raise SystemExit("build: libz.a not found; apt-get install zlib1g-dev")


def compile_launcher(out: Path) -> Path:
    """Compile launcher.c with ``$CC`` (default gcc), zlib linked in statically.

    Only libc stays dynamic: the program it starts needs the same glibc anyway.
    """
    cc = shlex.split(os.environ.get("CC") or "gcc")
    out.parent.mkdir(parents=True, exist_ok=True)
    # -s: stripped at link time, which gcc and zig (the aarch64 build's compiler) both do.
    cmd = [*cc, "-O2", "-s", "-Wall", "-Wextra", "-Werror", "-o", str(out), str(LAUNCHER_C)]
    subprocess.run([*cmd, static_zlib()], check=True)
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


def pack(launcher: Path, folder: Path, entry: str, tag: str, out: Path, level: int = 6) -> int:
    """Write ``out``: the launcher, then ``folder`` as a payload that unpacks into ``<tag>/``.

    ``entry`` is the program's file name inside ``folder``. Returns the payload's size.
    zlib level 6: level 9 took 4x as long (13 s here, minutes under qemu) for 0.6% less.
    """
    if not (folder / entry).is_file():
        raise SystemExit(f"build: {folder / entry} is missing: the standalone build failed")
    if len(tag.encode()) > 40 or len(entry.encode()) > 56:
        raise SystemExit(f"build: tag {tag!r} or entry {entry!r} too long for the trailer")
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(launcher.read_bytes())
        offset = f.tell()
        z = zlib.compressobj(level)
        for kind, mode, name, data in _records(folder):
            encoded = name.encode()
            content = data.read_bytes() if isinstance(data, Path) else data
            head = struct.pack("<BIH", kind, mode, len(encoded)) + encoded
            f.write(z.compress(head + struct.pack("<Q", len(content)) + content))
        f.write(z.compress(b"\0"))
        f.write(z.flush())
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
