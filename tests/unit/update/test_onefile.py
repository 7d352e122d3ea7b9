"""The gateway binary's layout (``edge_min.update.onefile``): expand, collapse, determinism.

Real files packed by ``build/onefile.py``'s ``pack()`` (the build's own code) from a tiny
folder, behind a stand-in launcher (any bytes: nothing here runs it; the integration test
``tests/integration/test_update_onefile.py`` uses the compiled launcher and starts it).
"""

from __future__ import annotations

import io
import os
import random
import struct
import sys
from pathlib import Path

import pytest

from edge_min.update import onefile
from tests.conftest import ROOT

zstandard = pytest.importorskip("zstandard")
sys.path.insert(0, str(ROOT / "build"))
import onefile as build_onefile  # type: ignore[import-not-found]  # noqa: E402
import signing  # type: ignore[import-not-found]  # noqa: E402

TAG = "1.0.0-0123456789ab"


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> signing.SigningKey:
    return signing.development_key(tmp_path_factory.mktemp("keys") / "k.pem")


def folder(path: Path, module: str) -> Path:
    """A small program folder: a script, a module (``module`` is its text), data, a link."""
    rnd = random.Random(7)
    (path / "lib").mkdir(parents=True)
    (path / "prog").write_text("#!/bin/sh\necho hello\n")
    (path / "prog").chmod(0o755)
    (path / "lib" / "module.py").write_text(module)
    (path / "lib" / "data.bin").write_bytes(b"".join(rnd.randbytes(64) * 8 for _ in range(2000)))
    (path / "link").symlink_to("lib/module.py")
    return path


def packed(tmp: Path, key: signing.SigningKey, module: str = "A = 1\n", **kw: object) -> Path:
    launcher = tmp / "launcher"
    launcher.write_bytes(b"\x7fELF" + b"launcher code " * 2000)
    out = tmp / "edge-min"
    build_onefile.pack(launcher, folder(tmp / "folder", module), "prog", TAG, out, key, **kw)
    return out


def test_the_build_packs_with_the_one_definition() -> None:
    # build/onefile.py takes the layout from here: one definition, not two that agree.
    for name in ("MAGIC", "FORMAT", "TRAILER", "SIGNATURE_SIZE", "LEVEL", "WINDOW_LOG", "FILE"):
        assert getattr(build_onefile, name) is getattr(onefile, name), name


def test_expand_then_collapse_gives_back_the_file(tmp_path: Path, key: signing.SigningKey) -> None:
    binary = packed(tmp_path, key)
    trailer = onefile.read_trailer(binary)
    assert trailer is not None and (trailer.tag, trailer.entry) == (TAG, "prog")
    expanded = tmp_path / "x"
    length = onefile.expand(binary, expanded)
    data = expanded.read_bytes()
    assert len(data) == length
    magic, launcher, records, tail = onefile.EXPANDED_HEAD.unpack_from(data)
    assert magic == onefile.EXPANDED_MAGIC and launcher == trailer.offset
    assert tail == onefile.SIGNATURE_SIZE + onefile.TRAILER.size
    body = data[onefile.EXPANDED_HEAD.size :]
    raw = binary.read_bytes()
    assert body[:launcher] == raw[:launcher] and body[-tail:] == raw[-tail:]
    stream = body[launcher : launcher + records]  # the records, decoded
    assert stream.endswith(onefile.END) and b"lib/module.py" in stream and b"A = 1\n" in stream
    for threads in (1, 2):
        back = tmp_path / f"back{threads}"
        assert onefile.collapse(expanded, back, threads=threads) == len(raw)
        assert back.read_bytes() == raw


def test_the_collapse_writes_the_trailer_for_what_it_wrote(
    tmp_path: Path, key: signing.SigningKey
) -> None:
    binary = packed(tmp_path, key)
    expanded = tmp_path / "x"
    onefile.expand(binary, expanded)
    data = bytearray(expanded.read_bytes())
    # offset and size in the expanded form's trailer zeroed: the collapse writes its own.
    struct.pack_into("<QQ", data, len(data) - onefile.TRAILER.size + 16, 0, 0)
    out = io.BytesIO()
    collapser = onefile.Collapser(out)
    for i in range(0, len(data), 999):  # cut anywhere, even inside the header
        collapser.write(bytes(data[i : i + 999]))
    collapser.close()
    assert out.getvalue() == binary.read_bytes()


def test_what_is_not_an_expanded_form_is_refused(tmp_path: Path, key: signing.SigningKey) -> None:
    expanded = tmp_path / "x"
    onefile.expand(packed(tmp_path, key), expanded)
    data = expanded.read_bytes()
    with pytest.raises(ValueError, match="not the expanded form"):
        onefile.Collapser(io.BytesIO()).write(b"EMOFX2\n\0" + data[8:])
    short = onefile.Collapser(io.BytesIO())
    short.write(data[:-10])
    with pytest.raises(ValueError, match="ends early"):
        short.close()
    with pytest.raises(ValueError, match="goes on after its tail"):
        onefile.Collapser(io.BytesIO()).write(data + b"x")


def test_only_packed_files_are_onefile(tmp_path: Path, key: signing.SigningKey) -> None:
    assert onefile.is_onefile(packed(tmp_path, key))
    for other in (Path("/bin/true"), ROOT / "README.md"):
        assert not onefile.is_onefile(other)
        with pytest.raises(ValueError, match="not a gateway binary"):
            onefile.expand(other, tmp_path / "x")
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert not onefile.is_onefile(empty)


def test_multithreaded_mode_is_required(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="multithreaded"):
        onefile.compression_params(0)
    assert onefile.pack_threads() >= 1


def _mt_input(size: int) -> bytes:
    """``size`` bytes of long repeats with changes: what level 19 gets through quickly."""
    rnd = random.Random(1)
    pool = [rnd.randbytes(65536) for _ in range(64)]
    out = bytearray()
    while len(out) < size:
        chunk = bytearray(rnd.choice(pool))
        chunk[rnd.randrange(len(chunk))] ^= 1
        out += chunk
    return bytes(out[:size])


@pytest.mark.slow
def test_the_payload_bytes_depend_on_neither_workers_nor_writes() -> None:
    """What a device's rebuild relies on: any number of workers (the build packs with all
    CPUs, a device with one) and any cutting of the input into writes give the same bytes.

    40 MB: more than one job of zstd's multithreaded mode (2^(window_log + 2) = 32 MB),
    so the jobs, their overlaps and the order they finish in are all exercised.
    """
    data = _mt_input(40 << 20)

    def packed_with(threads: int, step: int) -> bytes:
        out = io.BytesIO()
        with onefile.payload_writer(out, threads=threads) as z:
            for i in range(0, len(data), step):
                z.write(data[i : i + step])
        return out.getvalue()

    reference = packed_with(1, 1 << 20)
    assert zstandard.ZstdDecompressor().decompress(reference, max_output_size=len(data)) == data
    for threads, step in ((2, 1 << 20), (os.cpu_count() or 1, 65_537), (3, 3 << 20)):
        assert packed_with(threads, step) == reference, (threads, step)
    # threads=-1 (what the build passed before pack_threads): every CPU, the same bytes.
    params = zstandard.ZstdCompressionParameters.from_level(
        onefile.LEVEL, window_log=onefile.WINDOW_LOG, write_checksum=True, threads=-1
    )
    out = io.BytesIO()
    with zstandard.ZstdCompressor(compression_params=params).stream_writer(out, closefd=False) as z:
        z.write(data)
    assert out.getvalue() == reference
