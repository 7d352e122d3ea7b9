"""Payload encodings in a bundle: full (xz, standard library) or a delta (zstd patch-from).

A **delta** is the new payload compressed by zstd with the old payload as its raw-content
dictionary (what ``zstd --patch-from`` does): matches against the old bytes cost a few
bytes each, so a one-module change costs little more than the changed bytes. Both sides
are the payloads as installed: the package's *uncompressed* tar (a one-module change is
about 0.8% of the full bundle), or the gateway binary as shipped, whose Nuitka onefile
contents are themselves one zstd stream: a delta of those bytes is about half the full
bundle. So between two gateway binaries the delta is **onefile** (:func:`make_onefile_delta`):
the same patch-from over their *expanded* forms (``edge_min.update.onefile``: the launcher,
the decoded records, the signature and trailer), behind a header naming the zstd that made
it; the device expands its installed binary, decodes the delta against that, and
recompresses the records as the build packed them, which gives back the signed file where
its zstd is the same (docs/updates.md "Deltas"). Why zstd over bsdiff4
and detools, measured: docs/updates.md "Deltas" and ``make bench-update``. zstandard is the
one library the gateway binary already ships (the sync wire uses it), so deltas add no
dependency there; a from-source install without it (``pip install 'edge-min[zstd]'``)
cannot apply a delta, and :func:`apply_delta` says so with ``DeltaBaseMissing``, which
makes the caller fetch the full bundle.

A **full** payload is xz (``lzma``, in the standard library), which every device can read.

Applying reads the base into memory (through mmap, closed once zstd has its copy) and
writes the output as it is decoded; the decoder is told the output's signed length, so it
never writes more than that.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import math
import mmap
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Protocol

from edge_min.update.errors import BadBundle, DeltaBaseMissing, PayloadMismatch

__all__ = [
    "DELTA",
    "DELTAS",
    "FULL",
    "ONEFILE",
    "apply_delta",
    "apply_onefile_delta",
    "decode_full",
    "encode_full",
    "make_delta",
    "make_onefile_delta",
    "sha256_file",
]

FULL = "xz"
DELTA = "zstd-patch"
ONEFILE = "zstd-onefile"
DELTAS = (DELTA, ONEFILE)
#: A onefile delta: this, the header's length (u32, big-endian), the header (JSON: format,
#: zstd, expanded_length), then the zstd patch-from of the new binary's expanded form.
ONEFILE_MAGIC = b"EMOFD1\n\0"
_HLEN = struct.Struct(">I")
CHUNK = 1 << 20
#: The largest zstd window (log2) a delta may ask for: 2 GiB, more than any payload here.
MAX_WINDOW_LOG = 31


class Sink(Protocol):
    """Where decoded bytes go: anything with ``write(bytes)``."""

    def write(self, data: bytes, /) -> object:
        """Take the next bytes."""
        ...


def sha256_file(path: Path) -> tuple[str, int]:
    """SHA-256 (hex) and length of the file at ``path``, read in 1 MiB chunks."""
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


def _zstd() -> object:
    try:
        import zstandard
    except ImportError:
        from edge_min.errors import MissingDependency

        raise MissingDependency("zstandard", "zstd", "making or applying a delta") from None
    return zstandard


def window_log(*sizes: int) -> int:
    """The zstd window (log2) that reaches back over the whole base: its size, rounded up."""
    return max(20, min(MAX_WINDOW_LOG, math.ceil(math.log2(max(*sizes, 2)))))


def make_delta(old: Path, new: Path, out: Path, *, level: int = 19) -> int:
    """Write the delta from payload ``old`` to payload ``new`` into ``out``; its size.

    Level 19 with the hash and chain tables sized to the base (as ``zstd --patch-from``
    sizes them): the default tables of a level index too little of a large dictionary and
    the delta comes out nearly as large as the full payload.
    """
    zstandard = _zstd()
    base = old.read_bytes()
    data = new.read_bytes()
    wlog = window_log(len(base), len(data))
    params = zstandard.ZstdCompressionParameters.from_level(  # type: ignore[attr-defined]
        level,
        source_size=len(data),
        window_log=wlog,
        hash_log=min(wlog - 1, 30),
        chain_log=min(wlog, 30),
        write_checksum=True,
        write_content_size=True,
    )
    dictionary = zstandard.ZstdCompressionDict(  # type: ignore[attr-defined]
        base,
        dict_type=zstandard.DICT_TYPE_RAWCONTENT,  # type: ignore[attr-defined]
    )
    compressed = zstandard.ZstdCompressor(  # type: ignore[attr-defined]
        dict_data=dictionary, compression_params=params
    ).compress(data)
    out.write_bytes(compressed)
    return len(compressed)


def _limited(write: Callable[[bytes], object], limit: int, name: str) -> Callable[[bytes], None]:
    written = 0

    def guarded(chunk: bytes) -> None:
        nonlocal written
        written += len(chunk)
        if written > limit:
            raise PayloadMismatch(
                f"{name}: decodes to more than the signed {limit:,} bytes: the bundle does "
                "not match its metadata; get a fresh copy"
            )
        write(chunk)

    return guarded


def apply_delta(base: Path, delta: BinaryIO, out: Sink, *, max_output: int, name: str) -> None:
    """Decode ``delta`` against the payload ``base`` into ``out`` (at most ``max_output``)."""
    try:
        zstandard = _zstd()
    except Exception as err:
        raise DeltaBaseMissing(
            f"{name}: {err.args[0] if err.args else err}; without it this device cannot "
            "apply a delta: use the full bundle (`edge-min update bundle` without "
            "--delta-from)"
        ) from None
    with open(base, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        data: bytes | mmap.mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
    try:
        # The dictionary is a copy (zstandard copies its bytes): the mapping is closed at
        # once, so the base is in memory once, not twice, while the delta decodes.
        dictionary = zstandard.ZstdCompressionDict(  # type: ignore[attr-defined]
            data,
            dict_type=zstandard.DICT_TYPE_RAWCONTENT,  # type: ignore[attr-defined]
        )
    finally:
        if isinstance(data, mmap.mmap):
            data.close()
    decoder = zstandard.ZstdDecompressor(  # type: ignore[attr-defined]
        dict_data=dictionary, max_window_size=1 << MAX_WINDOW_LOG
    )
    write = _limited(out.write, max_output, name)
    try:
        reader = decoder.stream_reader(delta, read_across_frames=False)
        while chunk := reader.read(CHUNK):
            write(chunk)
    except zstandard.ZstdError as err:  # type: ignore[attr-defined]
        raise PayloadMismatch(
            f"{name}: the delta does not decode against the installed payload ({err}): "
            "use the full bundle"
        ) from None


def make_onefile_delta(old: Path, new: Path, out: Path, workdir: Path) -> int:
    """Write the onefile delta from gateway binary ``old`` to ``new`` into ``out``; its size.

    First checks that the new binary's expanded form recompresses to it, byte for byte,
    with this zstd: what a device with the same zstd does. ValueError otherwise, naming
    this zstd: the binary was packed by another one (or level), and a delta made here would
    only ever fall back to the full bundle on every device.
    """
    from edge_min.update import onefile

    version = onefile.zstd_version()
    old_x, new_x = workdir / "old.expanded", workdir / "new.expanded"
    onefile.expand(old, old_x)
    expanded = onefile.expand(new, new_x)
    sink = _HashSink()
    collapser = onefile.Collapser(sink, threads=onefile.pack_threads())
    with open(new_x, "rb") as f:
        while chunk := f.read(CHUNK):
            collapser.write(chunk)
    collapser.close()
    want, length = sha256_file(new)
    if (sink.h.hexdigest(), sink.count) != (want, length):
        raise ValueError(
            f"{new}: its payload does not recompress to the same bytes with {version} "
            f"({sink.count:,} bytes, not {length:,}): it was packed by another zstd or level. "
            "Make the bundle where zstandard is the one build/requirements.txt pins (the "
            "binary itself runs `edge-min update bundle`), or make a full bundle"
        )
    body = workdir / "delta.zst"
    make_delta(old_x, new_x, body)
    header = json.dumps(
        {"expanded_length": expanded, "format": 1, "zstd": version},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    with open(out, "wb") as o, open(body, "rb") as b:
        o.write(ONEFILE_MAGIC + _HLEN.pack(len(header)) + header)
        while chunk := b.read(CHUNK):
            o.write(chunk)
        size = o.tell()
    for path in (old_x, new_x, body):
        path.unlink()
    return size


class _HashSink:
    def __init__(self) -> None:
        self.h, self.count = hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.h.update(data)
        self.count += len(data)
        return len(data)


def _onefile_header(delta: BinaryIO, name: str) -> dict[str, object]:
    head = delta.read(len(ONEFILE_MAGIC) + _HLEN.size)
    if len(head) < len(ONEFILE_MAGIC) + _HLEN.size or head[: len(ONEFILE_MAGIC)] != ONEFILE_MAGIC:
        raise BadBundle(f"{name}: not a onefile delta (no EMOFD1 magic)")
    (size,) = _HLEN.unpack(head[len(ONEFILE_MAGIC) :])
    try:
        doc = json.loads(delta.read(min(size, 4096)).decode("utf-8"))
        ok = (
            isinstance(doc, dict)
            and doc.get("format") == 1
            and isinstance(doc.get("zstd"), str)
            and isinstance(doc.get("expanded_length"), int)
        )
    except (ValueError, UnicodeDecodeError):
        ok = False
    if size > 4096 or not ok:
        raise BadBundle(f"{name}: the onefile delta's header is not a format-1 header")
    return dict(doc)


def apply_onefile_delta(
    base: Path, delta: BinaryIO, out: Sink, *, max_output: int, name: str, workdir: Path
) -> None:
    """Rebuild the gateway binary from the installed one ``base`` and the onefile ``delta``
    into ``out`` (at most ``max_output`` bytes).

    ``DeltaBaseMissing`` before any work when this device cannot rebuild the signed bytes:
    no zstandard, another zstd than the delta names, a base that is not a gateway binary.
    The caller checks the result's SHA-256 (a mismatch is ``DeltaBaseMissing`` too).
    """
    header = _onefile_header(delta, name)
    try:
        from edge_min.update import onefile

        mine = onefile.zstd_version()
    except Exception as err:
        raise DeltaBaseMissing(
            f"{name}: {err.args[0] if err.args else err}; without it this device cannot "
            "apply a delta: use the full bundle (`edge-min update bundle` without "
            "--delta-from)"
        ) from None
    if header["zstd"] != mine:
        raise DeltaBaseMissing(
            f"{name}: made with {header['zstd']}, this device has {mine}: the binary it "
            "would rebuild need not be the signed one; fetch the full bundle (`edge-min "
            "update bundle` without --delta-from)"
        )
    if not onefile.is_onefile(base):
        raise DeltaBaseMissing(
            f"{name}: the installed program {base} is not a gateway binary; fetch the full "
            "bundle (`edge-min update bundle` without --delta-from)"
        )
    # Two passes through the work folder rather than one pipe: the decoder (the base as its
    # dictionary, and its window) is gone before the compressor (level 19's tables) starts,
    # so the peak is the larger of the two, not their sum (docs/updates.md "Deltas").
    base_x = workdir / (Path(name).name + ".base-expanded")
    new_x = workdir / (Path(name).name + ".expanded")
    try:
        try:
            onefile.expand(base, base_x)
        except ValueError as err:
            raise DeltaBaseMissing(f"{name}: {err}; fetch the full bundle") from None
        with open(new_x, "wb") as f:
            limit = int(str(header["expanded_length"]))
            apply_delta(base_x, delta, f, max_output=limit, name=name)
        base_x.unlink()
        collapser = onefile.Collapser(_Limited(out, max_output, name))
        try:
            with open(new_x, "rb") as f:
                while chunk := f.read(CHUNK):
                    collapser.write(chunk)
            collapser.close()
        except ValueError as err:
            raise PayloadMismatch(
                f"{name}: the delta does not decode to a gateway binary ({err}): use the "
                "full bundle"
            ) from None
    finally:
        base_x.unlink(missing_ok=True)
        new_x.unlink(missing_ok=True)


class _Limited:
    def __init__(self, out: Sink, limit: int, name: str) -> None:
        self._write = _limited(out.write, limit, name)

    def write(self, data: bytes) -> int:
        self._write(data)
        return len(data)


def encode_full(src: Path, out: Path) -> int:
    """Write ``src`` xz-compressed into ``out``; the compressed size."""
    comp = lzma.LZMACompressor(format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=6)
    with open(src, "rb") as fin, open(out, "wb") as fout:
        while chunk := fin.read(CHUNK):
            fout.write(comp.compress(chunk))
        fout.write(comp.flush())
    return out.stat().st_size


def decode_full(inp: BinaryIO, out: Sink, *, max_output: int, name: str) -> None:
    """Decode the xz stream ``inp`` into ``out``, at most ``max_output`` bytes."""
    decomp = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    write = _limited(out.write, max_output, name)
    try:
        while not decomp.eof:
            chunk = inp.read(CHUNK) if decomp.needs_input else b""
            if decomp.needs_input and not chunk:
                raise PayloadMismatch(f"{name}: the xz stream ends early: get a fresh copy")
            write(decomp.decompress(chunk, max_length=CHUNK))
    except lzma.LZMAError as err:
        raise PayloadMismatch(f"{name}: not a valid xz stream ({err}): get a fresh copy") from None
