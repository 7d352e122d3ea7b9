"""The gateway binary's one-file layout, in one place; and its expanded form for deltas.

The file (``targets/gateway/launcher.c`` reads it, ``build/onefile.py`` writes it with the
constants and the writer here), all integers little-endian::

    launcher | payload | signature block | trailer
    trailer (the last 128 bytes): TRAILER = "EDGEMINP" | u32 format 2 | u32 signature
        block size (96) | u64 payload offset | u64 payload size | tag[40] | entry[56]
    signature block: the signer's public key (32) | Ed25519 signature (64) over the file
        before the block, followed by the trailer
    payload: ONE zstd frame (level 19, window 2^23, content checksum, multithreaded mode)
        of records: u8 kind | u32 mode | u16 name length | name | u64 size | content;
        then the byte 0 (the end record)

A delta between two such files gains almost nothing (two zstd streams share no bytes after
the first change), so update deltas of the binary work on its **expanded** form
(:func:`expand`): the launcher, the decoded record stream and the tail (signature block
and trailer, verbatim) in a framed container::

    EXPANDED_HEAD = "EMOFX1\\n\\0" | u64 launcher length | u64 records length | u64 tail length
    then the launcher, the records, the tail

:class:`Collapser` turns an expanded form back into the file: it recompresses the records
with exactly the pack's parameters and writes the trailer with the offset and size of what
it wrote. That gives back the signed bytes only where zstd compresses the same: the same
libzstd (the delta records its version, :func:`zstd_version`) and the multithreaded mode.
Measured (tests/unit/update/test_onefile.py keeps it true): in multithreaded mode the
output does not depend on the number of workers (1, 2, all CPUs) nor on how the input is
cut into writes; the single-threaded mode (``threads=0``) writes other bytes. So the build
packs with every CPU (``pack_threads()``) and a device recompresses with
``DEVICE_THREADS`` (1: one worker, the least memory).

Everything here streams: 1 MiB at a time, never a whole payload in memory.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

__all__ = [
    "DEVICE_THREADS",
    "DIRECTORY",
    "END",
    "EXPANDED_HEAD",
    "FILE",
    "FORMAT",
    "LEVEL",
    "MAGIC",
    "SIGNATURE_SIZE",
    "SYMLINK",
    "TRAILER",
    "WINDOW_LOG",
    "Collapser",
    "Trailer",
    "collapse",
    "compression_params",
    "expand",
    "is_onefile",
    "pack_threads",
    "payload_writer",
    "read_trailer",
    "record_head",
    "zstd_version",
]

MAGIC = b"EDGEMINP"
FORMAT = 2
#: magic, format, signature block size, payload offset, payload size, tag, entry
TRAILER = struct.Struct("<8sIIQQ40s56s")
#: The signer's public key (32 bytes) and the Ed25519 signature (64).
SIGNATURE_SIZE = 96
#: Record kinds; a record is RECORD (kind, mode, name length), the name, SIZE, the content.
FILE, SYMLINK, DIRECTORY = 1, 2, 3
RECORD = struct.Struct("<BIH")
SIZE = struct.Struct("<Q")
END = b"\0"
#: zstd level 19 with an 8 MB window (the launcher refuses more: a gateway's RAM). Measured
#: on the -onnx folder (195 MB): level 19 50 MB in 80 s, level 10 56 MB in 5 s, zlib 66 MB;
#: unpacking takes about 0.3 s either way. Builds are rare and every byte goes over the air.
LEVEL = 19
WINDOW_LOG = 23
#: The workers a device recompresses with: the output is the same for any number >= 1.
DEVICE_THREADS = 1

EXPANDED_MAGIC = b"EMOFX1\n\0"
EXPANDED_HEAD = struct.Struct("<8sQQQ")
#: The most bytes after the payload (signature block and trailer: 224 in format 2).
MAX_TAIL = 64 * 1024
CHUNK = 1 << 20


class Sink(Protocol):
    """Where bytes go: anything with ``write(bytes)``."""

    def write(self, data: bytes, /) -> object:
        """Take the next bytes."""
        ...


def _zstd() -> Any:
    try:
        import zstandard
    except ImportError:
        from edge_min.errors import MissingDependency

        raise MissingDependency("zstandard", "zstd", "a gateway binary's payload") from None
    return zstandard


def zstd_version() -> str:
    """The zstd that packs here: ``zstandard 0.25.0, libzstd 1.5.7``."""
    zstandard = _zstd()
    lib = ".".join(str(n) for n in zstandard.ZSTD_VERSION)
    return f"zstandard {zstandard.__version__}, libzstd {lib}"


def pack_threads() -> int:
    """Every CPU, and at least one worker: zero would be the single-threaded mode, whose
    output differs (``threads=-1`` is zero where the CPU count is unknown)."""
    return max(1, os.cpu_count() or 1)


def compression_params(threads: int, level: int = LEVEL) -> Any:
    """The payload's zstd parameters, with ``threads`` (>= 1) workers."""
    if threads < 1:
        raise ValueError(f"threads={threads}: the payload is packed in multithreaded mode (>= 1)")
    return _zstd().ZstdCompressionParameters.from_level(
        level, window_log=WINDOW_LOG, write_checksum=True, threads=threads
    )


def payload_writer(out: Sink, *, threads: int, level: int = LEVEL) -> Any:
    """A zstd stream writer into ``out`` (left open) that writes the payload's one frame.

    No size is given: the frame carries none, and a size would also change the parameters.
    """
    zstandard = _zstd()
    compressor = zstandard.ZstdCompressor(compression_params=compression_params(threads, level))
    return compressor.stream_writer(out, closefd=False)


def record_head(kind: int, mode: int, name: str, size: int) -> bytes:
    """The bytes of a record before its content."""
    encoded = name.encode()
    return RECORD.pack(kind, mode, len(encoded)) + encoded + SIZE.pack(size)


@dataclass(frozen=True)
class Trailer:
    """A packed file's trailer."""

    signature_size: int
    offset: int
    size: int
    tag: str
    entry: str

    def pack(self, *, offset: int | None = None, size: int | None = None) -> bytes:
        """These 128 bytes, with ``offset`` and ``size`` when given."""
        return TRAILER.pack(
            MAGIC,
            FORMAT,
            self.signature_size,
            self.offset if offset is None else offset,
            self.size if size is None else size,
            self.tag.encode(),
            self.entry.encode(),
        )

    @classmethod
    def parse(cls, raw: bytes) -> Trailer | None:
        """The trailer in ``raw`` (128 bytes), or None if it is not one."""
        if len(raw) != TRAILER.size:
            return None
        magic, fmt, signature_size, offset, size, tag, entry = TRAILER.unpack(raw)
        if magic != MAGIC or fmt != FORMAT:
            return None
        try:
            return cls(
                signature_size,
                offset,
                size,
                tag.rstrip(b"\0").decode(),
                entry.rstrip(b"\0").decode(),
            )
        except UnicodeDecodeError:
            return None


def read_trailer(path: Path) -> Trailer | None:
    """The trailer of the file at ``path`` if it is a packed one whose parts fit in it."""
    try:
        with open(path, "rb") as f:
            length = os.fstat(f.fileno()).st_size
            if length < TRAILER.size:
                return None
            f.seek(length - TRAILER.size)
            trailer = Trailer.parse(f.read(TRAILER.size))
    except OSError:
        return None
    if trailer is None or trailer.size == 0:
        return None
    tail = length - trailer.offset - trailer.size
    if tail < TRAILER.size or tail > MAX_TAIL:
        return None
    return trailer


def is_onefile(path: Path) -> bool:
    """True for a gateway binary packed by build/onefile.py."""
    return read_trailer(path) is not None


class _Window:
    """A reader of [start, start + length) of an open file."""

    def __init__(self, f: BinaryIO, start: int, length: int) -> None:
        self._f, self._left = f, length
        f.seek(start)

    def read(self, n: int = -1) -> bytes:
        n = self._left if n < 0 else min(n, self._left)
        data = self._f.read(n)
        self._left -= len(data)
        return data


def expand(src: Path, out: Path) -> int:
    """Write the expanded form of the packed file ``src`` into ``out``; its length.

    ValueError if ``src`` is not a packed file or its payload does not decode.
    """
    trailer = read_trailer(src)
    if trailer is None:
        raise ValueError(f"{src}: not a gateway binary (no edge-min payload trailer)")
    zstandard = _zstd()
    decoder = zstandard.ZstdDecompressor(max_window_size=1 << WINDOW_LOG)
    records = 0
    with open(src, "rb") as f, open(out, "wb") as o:
        length = os.fstat(f.fileno()).st_size
        o.write(bytes(EXPANDED_HEAD.size))
        o.write(_Window(f, 0, trailer.offset).read())
        try:
            reader = decoder.stream_reader(_Window(f, trailer.offset, trailer.size))
            while chunk := reader.read(CHUNK):
                records += len(chunk)
                o.write(chunk)
        except zstandard.ZstdError as err:
            raise ValueError(f"{src}: its payload does not decode ({err})") from None
        end = trailer.offset + trailer.size
        tail = _Window(f, end, length - end).read()
        o.write(tail)
        o.seek(0)
        o.write(EXPANDED_HEAD.pack(EXPANDED_MAGIC, trailer.offset, records, len(tail)))
        return EXPANDED_HEAD.size + trailer.offset + records + len(tail)


class _Counting:
    def __init__(self, out: Sink) -> None:
        self.out, self.count = out, 0

    def write(self, data: bytes) -> int:
        self.out.write(data)
        self.count += len(data)
        return len(data)


class Collapser:
    """Takes an expanded form in order (``write``) and writes the packed file into ``out``;
    ``close()`` ends it. ValueError on anything that is not an expanded form."""

    def __init__(self, out: Sink, *, threads: int = DEVICE_THREADS, level: int = LEVEL) -> None:
        self._out = _Counting(out)
        self._threads, self._level = threads, level
        self._head = b""
        self._sizes: list[int] = []  # what is left of: launcher, records, tail
        self._section = -1
        self._z: Any = None
        self._tail = bytearray()
        self._offset = 0
        self.payload_size = 0

    def write(self, data: bytes) -> int:
        """Take the next bytes of the expanded form."""
        view = memoryview(data)
        if self._section < 0:
            need = EXPANDED_HEAD.size - len(self._head)
            self._head += bytes(view[:need])
            view = view[need:]
            if len(self._head) < EXPANDED_HEAD.size:
                return len(data)
            magic, launcher, records, tail = EXPANDED_HEAD.unpack(self._head)
            if magic != EXPANDED_MAGIC or not TRAILER.size <= tail <= MAX_TAIL:
                raise ValueError("not the expanded form of a gateway binary")
            self._sizes = [launcher, records, tail]
            self._section = 0
        while view and self._section < 3:
            n = min(len(view), self._sizes[self._section])
            part, view = view[:n], view[n:]
            if self._section == 0:
                self._out.write(bytes(part))
            elif self._section == 1:
                self._records().write(part)
            else:
                self._tail += part
            self._sizes[self._section] -= n
            while self._section < 3 and self._sizes[self._section] == 0:
                self._section += 1
        if view:
            raise ValueError("the expanded form goes on after its tail")
        return len(data)

    def _records(self) -> Any:
        if self._z is None:
            self._offset = self._out.count
            self._z = payload_writer(self._out, threads=self._threads, level=self._level)
        return self._z

    def close(self) -> None:
        """Finish the payload and write the signature block and the trailer."""
        if self._section < 3:
            raise ValueError("the expanded form ends early")
        z = self._records()  # an empty record stream still makes its (empty) frame
        z.close()
        offset = self._offset
        self.payload_size = self._out.count - offset
        trailer = Trailer.parse(bytes(self._tail[-TRAILER.size :]))
        if trailer is None:
            raise ValueError("the expanded form's tail does not end with a trailer")
        fixed = trailer.pack(offset=offset, size=self.payload_size)
        self._out.write(bytes(self._tail[: -TRAILER.size]) + fixed)


def collapse(expanded: Path, out: Path, *, threads: int = DEVICE_THREADS) -> int:
    """Write the packed file of the expanded form at ``expanded`` into ``out``; its length."""
    with open(expanded, "rb") as f, open(out, "wb") as o:
        collapser = Collapser(o, threads=threads)
        while chunk := f.read(CHUNK):
            collapser.write(chunk)
        collapser.close()
        return o.tell()
