"""Build the gateway binary with Nuitka: every option, and why, in one place.

Run by ``make binary`` with the build venv's Python (``build/binary.mk`` makes that venv
from ``build/requirements.txt``)::

    .cache/nuitka-venv/bin/python build/build_binary.py            # dist/edge-min-linux-x86_64
    .cache/nuitka-venv/bin/python build/build_binary.py --variant onnx   # ...-onnx
    .cache/nuitka-venv/bin/python build/build_binary.py --print     # the command, not run

The build runs offline: Nuitka gets no permission to download anything (stdin is
``/dev/null`` and ``--assume-yes-for-downloads`` is never given); the C compiler, patchelf
and ccache come from the system (``apt-get install gcc patchelf ccache``). The module lists
come from ``targets/gateway/modules.py``, the same lists the binary's ``__modules__`` check
and ``tests/targets/test_binary.py`` import again.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "build"))

import onefile  # type: ignore[import-not-found,unused-ignore]  # noqa: E402
import signing  # type: ignore[import-not-found,unused-ignore]  # noqa: E402

from targets.gateway.modules import AGENT_STDLIB, EXCLUDED, THIRD_PARTY  # noqa: E402

ENTRY = ROOT / "targets" / "gateway" / "main.py"
OUT = ROOT / "build" / "out"
DIST = ROOT / "dist"
ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}
#: What each variant leaves out of the binary (``MissingDependency`` at run time instead).
VARIANTS = {
    "base": EXCLUDED,
    # numpy + onnxruntime inside: about 30MB more, for gateways that run ONNX agents.
    "onnx": tuple(m for m in EXCLUDED if m not in ("numpy", "onnxruntime")),
}


#: Parts of numpy and onnxruntime the onnx executor never imports (it needs
#: ``onnxruntime.InferenceSession`` and numpy's arrays): model tooling, the quantizer (which
#: would pull in the ``onnx`` package), Fortran and test helpers. Left out, they would only
#: add C compile time and size.
ONNX_UNUSED = (
    "onnxruntime.quantization",
    "onnxruntime.transformers",
    "onnxruntime.tools",
    "onnxruntime.datasets",
    "onnxruntime.backend",
    "numpy.f2py",
    "numpy.distutils",
    "numpy.testing",
    "numpy.typing",
    "numpy._pyinstaller",
    "numpy.conftest",
)


def version() -> str:
    """edge_min's version, read from the source without importing the package."""
    for line in (ROOT / "edge_min" / "__init__.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("\"'")
    raise SystemExit("edge_min/__init__.py has no __version__")


def source_digest(options: list[str]) -> str:
    """12 hex digits over the sources, the options and the toolchain: the unpack dir's tag."""
    digest = hashlib.sha256()
    for folder in ("edge_min", "targets/gateway", "targets/firmware"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    for config in [*sorted((ROOT / "build").glob("*.yml")), ROOT / "build" / "onefile.py"]:
        digest.update(config.read_bytes())
    digest.update("\0".join(options).encode())
    freeze = subprocess.run(
        [sys.executable, "-m", "pip", "freeze"], capture_output=True, text=True, check=False
    )
    digest.update(freeze.stdout.encode() + sys.version.encode())
    return digest.hexdigest()[:12]


def nuitka_options(variant: str, name: str) -> list[str]:
    """The Nuitka command-line options for ``variant``, whose program is called ``name``."""
    opts = [
        # A folder with the program and everything it loads; build/onefile.py then packs it
        # behind our launcher (targets/gateway/launcher.c) into the one file. Not Nuitka's
        # --onefile: its launcher, even with a cached unpack directory, decompresses the
        # whole payload and CRC32s every unpacked file on every start (0.2 s of a 0.4 s
        # start here) and stays resident as the runtime's parent (~20 MB RSS). Ours execs
        # the cached program after one stat().
        "--standalone",
        # Every edge_min module: subpackages are imported lazily (cli, executors, sync),
        # and Python agents' workers import edge_min.platform.worker by name.
        "--include-package=edge_min",
        # store/schema.sql and defaults/*.yaml, read through importlib.resources.
        "--include-package-data=edge_min",
        # The shim and module check live beside the entry point.
        "--include-package=targets.gateway",
        # The firmware image's commands (firmware boot|status): its slots hold this binary.
        "--include-package=targets.firmware",
        # Loaded by name at run time (pycryptodome curves, the optional wire codecs) and
        # the stdlib that Python agents may import in the worker: see modules.py.
        *(f"--include-module={m}" for m in (*THIRD_PARTY, *AGENT_STDLIB)),
        # pycryptodome's native libraries, loaded by file name: see the file's comment.
        "--user-package-configuration-file="
        + str(ROOT / "build" / "pycryptodome.nuitka-package.config.yml"),
        # Left out on purpose: the executor or command then raises MissingDependency.
        *(f"--nofollow-import-to={m}" for m in VARIANTS[variant]),
        # Test and build tooling never belongs in the binary.
        "--nofollow-import-to=pytest,hypothesis,_pytest,setuptools,pip,nuitka,*.tests",
        # zstandard's cffi backend (12 MB unpacked) is only a fallback for the C one.
        "--nofollow-import-to=zstandard.backend_cffi,zstandard._cffi",
        *(f"--nofollow-import-to={m}" for m in ONNX_UNUSED if variant == "onnx"),
        # No site module: no user site-packages, no .pth files, a faster start.
        "--python-flag=no_site",
        # Docstrings stay out of the constants: nothing reads them (the CLI's help has its
        # own strings), and every start walks the whole constants blob (RSS).
        "--python-flag=no_docstrings",
        # LTO on 2 cores roughly doubles the C link time for a few percent of size.
        "--lto=no",
        "--output-dir=" + str(OUT / variant),
        f"--output-filename={name}",
        # Which modules went in and why: for the module check and for size questions.
        "--report=" + str(OUT / variant / "compilation-report.xml"),
        "--quiet",
        "--no-progressbar",
    ]
    return opts


def write_program_manifest(binary: Path) -> Path:
    """Sign ``<binary>.manifest.json`` (boot_integrity) with $EDGE_MIN_BUILD_KEY's key.

    Without that variable the development key under .cache/ is used (made on first use); a
    release build points it at the real build key and provisions its public half on devices
    as /etc/edge-min/build-keys.pub (docs/security.md).
    """
    from edge_min import __version__
    from edge_min.clock import iso
    from edge_min.security.manifest import Program, load_build_key, write_manifest

    key = Path(os.environ.get("EDGE_MIN_BUILD_KEY") or ROOT / ".cache" / "build-key.ed25519")
    path = write_manifest(
        Program("binary", binary),
        load_build_key(key),
        version=__version__,
        created_at=iso(time.time()),
    )
    print(f"{path.relative_to(ROOT)}: signed with {key}")
    return path


def main(argv: list[str] | None = None) -> int:
    """Build the binary of ``--variant`` into ``dist/``; print its size and build time."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="base")
    parser.add_argument("--print", action="store_true", help="print the command only")
    parser.add_argument(
        "--no-pack",
        action="store_true",
        help="build the folder and the launcher, write pack.json, leave the packing to "
        "`python build/build_binary.py --pack pack.json` (the aarch64 build packs on the host)",
    )
    parser.add_argument(
        "--pack",
        metavar="PACK_JSON",
        type=Path,
        help="pack a folder built with --no-pack (pack.json) and sign its program manifest",
    )
    args = parser.parse_args(argv)
    if args.pack:
        job = onefile.PackJob.load(args.pack)
        job.run()
        write_program_manifest(job.out)
        return 0
    arch = ARCH.get(platform.machine().lower(), platform.machine().lower())
    name = f"edge-min-linux-{arch}" + ("" if args.variant == "base" else f"-{args.variant}")
    opts = nuitka_options(args.variant, name)
    tag = source_digest(opts)
    cmd = [sys.executable, "-m", "nuitka", *opts, str(ENTRY)]
    if args.print:
        print(" ".join(cmd))
        return 0
    for tool in ("patchelf", "gcc"):
        if shutil.which(tool) is None:
            raise SystemExit(f"build_binary: {tool} not found; apt-get install {tool}")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    (OUT / args.variant).mkdir(parents=True, exist_ok=True)
    # A clean folder to pack: nothing left from an earlier build may slip into the payload.
    shutil.rmtree(OUT / args.variant / "main.dist", ignore_errors=True)
    started = time.monotonic()
    # stdin from /dev/null: Nuitka's download prompts get "no" and the build stays offline.
    with open(os.devnull) as devnull:
        subprocess.run(cmd, cwd=ROOT, env=env, stdin=devnull, check=True)
    folder = OUT / args.variant / "main.dist"
    # The key the launcher accepts (build/signing.py: EDGE_MIN_SIGNING_KEY, or the
    # development key); the pack below signs with the same one.
    key = signing.resolve()
    launcher = onefile.compile_launcher(OUT / args.variant / "launcher", key)
    DIST.mkdir(exist_ok=True)
    target = DIST / name
    job = onefile.PackJob(launcher, folder, name, f"{version()}-{tag}", target, key.key_id)
    if args.no_pack:
        job.save(OUT / args.variant / "pack.json")
        print(
            f"built {folder}; pack it with: "
            f"python build/build_binary.py --pack {OUT / args.variant}/pack.json"
        )
        return 0
    job.run(key)
    write_program_manifest(target)
    size = target.stat().st_size
    print(f"{target.relative_to(ROOT)}: {size / 1e6:.1f} MB in {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
