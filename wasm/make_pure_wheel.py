"""Repackage a PyYAML sdist as a pure-Python wheel (py3-none-any) that Pyodide can unpack.

PyPI ships PyYAML only as compiled wheels and an sdist. The sdist's ``lib/yaml`` package is
plain Python and runs without libyaml (``yaml.__with_libyaml__`` is then False), so a wheel
holding just that package is all a WebAssembly build needs. Stdlib only; no build backend.

Usage: python make_pure_wheel.py SDIST.tar.gz OUT_DIR  -> prints the wheel path
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import sys
import tarfile
import zipfile
from pathlib import Path

# Fixed timestamp so the same sdist always gives byte-identical wheels.
_ZIP_DATE = (2020, 1, 1, 0, 0, 0)
_SDIST_NAME = re.compile(r"^(?:pyyaml|PyYAML)-(?P<version>[0-9][0-9A-Za-z.]*)\.tar\.gz$")


def _record_hash(data: bytes) -> str:
    """Return the RECORD-style hash: sha256, urlsafe base64 without padding."""
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def read_yaml_sources(sdist: Path) -> dict[str, bytes]:
    """Return {"yaml/x.py": bytes} for every module of the sdist's pure ``lib/yaml`` package."""
    sources: dict[str, bytes] = {}
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar.getmembers():
            parts = member.name.split("/")
            # <root>/lib/yaml/<module>.py; sub-packages do not exist in PyYAML 6.
            if len(parts) == 4 and parts[1:3] == ["lib", "yaml"] and parts[3].endswith(".py"):
                handle = tar.extractfile(member)
                if handle is None:
                    continue
                sources["yaml/" + parts[3]] = handle.read()
    if "yaml/__init__.py" not in sources:
        raise SystemExit(f"{sdist}: no lib/yaml/__init__.py inside; is this a PyYAML sdist?")
    return sources


def write_wheel(
    out_dir: Path,
    dist: str,
    version: str,
    files: dict[str, bytes],
    *,
    summary: str,
    license_name: str,
    top_level: list[str],
) -> Path:
    """Write ``<dist>-<version>-py3-none-any.whl`` holding ``files`` (archive name -> bytes).

    ``dist`` is the project's name as METADATA gives it; file names use its normal form.

    Adds the dist-info (METADATA, WHEEL, top_level.txt, RECORD); byte-identical for the same
    input. The wheel is written under a temporary name and renamed, so an interrupted run
    never leaves half a wheel behind.
    """
    stem = re.sub(r"[-_.]+", "_", dist).lower()
    dist_info = f"{stem}-{version}.dist-info"
    files = dict(sorted(files.items()))
    files[f"{dist_info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n"
        f"Summary: {summary}\nLicense: {license_name}\n"
    ).encode()
    files[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: edge_min wasm/make_pure_wheel.py\n"
        b"Root-Is-Purelib: true\nTag: py3-none-any\n"
    )
    files[f"{dist_info}/top_level.txt"] = "".join(f"{name}\n" for name in top_level).encode()
    record_lines = [f"{name},{_record_hash(data)},{len(data)}" for name, data in files.items()]
    record_lines.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record_lines) + "\n").encode()

    out_dir.mkdir(parents=True, exist_ok=True)
    wheel_path = out_dir / f"{stem}-{version}-py3-none-any.whl"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as wheel:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            wheel.writestr(info, data)
    partial = wheel_path.with_suffix(".partial")
    partial.write_bytes(buffer.getvalue())
    partial.replace(wheel_path)
    return wheel_path


def build_wheel(sdist: Path, out_dir: Path) -> Path:
    """Write pyyaml-<version>-py3-none-any.whl into out_dir and return its path."""
    match = _SDIST_NAME.match(sdist.name)
    if match is None:
        raise SystemExit(f"{sdist.name}: expected a file named pyyaml-<version>.tar.gz")
    return write_wheel(
        out_dir,
        "PyYAML",
        match.group("version"),
        read_yaml_sources(sdist),
        summary="YAML parser and emitter for Python (pure-Python build, no libyaml)",
        license_name="MIT",
        top_level=["yaml"],
    )


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: make_pure_wheel.py SDIST OUT_DIR."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    print(build_wheel(Path(args[0]), Path(args[1])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
