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


def version() -> str:
    """edge_min's version, read from the source without importing the package."""
    for line in (ROOT / "edge_min" / "__init__.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("\"'")
    raise SystemExit("edge_min/__init__.py has no __version__")


def source_digest(options: list[str]) -> str:
    """12 hex digits over the sources, the options and the toolchain: the unpack dir's tag."""
    digest = hashlib.sha256()
    for folder in ("edge_min", "targets/gateway"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    for config in sorted((ROOT / "build").glob("*.yml")):
        digest.update(config.read_bytes())
    digest.update("\0".join(options).encode())
    freeze = subprocess.run(
        [sys.executable, "-m", "pip", "freeze"], capture_output=True, text=True, check=False
    )
    digest.update(freeze.stdout.encode() + sys.version.encode())
    return digest.hexdigest()[:12]


def nuitka_options(variant: str, name: str, tag: str) -> list[str]:
    """The Nuitka command-line options for ``variant``; ``tag`` names the unpack directory."""
    opts = [
        # One file to drop on a gateway: a launcher with the standalone program inside.
        "--onefile",
        # Unpack once into a fixed directory named by version and build digest, and keep it:
        # later starts reuse it instead of unpacking ~40MB again (the digest keeps two
        # builds of one version apart). {CACHE_DIR} is $XDG_CACHE_HOME or ~/.cache; the
        # systemd unit points XDG_CACHE_HOME at CacheDirectory=.
        f"--onefile-tempdir-spec={{CACHE_DIR}}/edge-min/{version()}-{tag}",
        "--onefile-cache-mode=cached",
        # The launcher forwards SIGTERM/SIGINT; give the runtime time to finish its round and
        # close the store before the launcher kills it hard (systemd waits 90s by default).
        "--onefile-child-grace-time=20000",
        # Every edge_min module: subpackages are imported lazily (cli, executors, sync),
        # and Python agents' workers import edge_min.platform.worker by name.
        "--include-package=edge_min",
        # store/schema.sql and defaults/*.yaml, read through importlib.resources.
        "--include-package-data=edge_min",
        # The shim and module check live beside the entry point.
        "--include-package=targets.gateway",
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
        # No site module: no user site-packages, no .pth files, a faster start.
        "--python-flag=no_site",
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


def main(argv: list[str] | None = None) -> int:
    """Build the binary of ``--variant`` into ``dist/``; print its size and build time."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="base")
    parser.add_argument("--print", action="store_true", help="print the command only")
    args = parser.parse_args(argv)
    arch = ARCH.get(platform.machine().lower(), platform.machine().lower())
    name = f"edge-min-linux-{arch}" + ("" if args.variant == "base" else f"-{args.variant}")
    base_opts = nuitka_options(args.variant, name, "TAG")
    tag = source_digest(base_opts)
    cmd = [sys.executable, "-m", "nuitka", *nuitka_options(args.variant, name, tag), str(ENTRY)]
    if args.print:
        print(" ".join(cmd))
        return 0
    for tool in ("patchelf", "gcc"):
        if shutil.which(tool) is None:
            raise SystemExit(f"build_binary: {tool} not found; apt-get install {tool}")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    (OUT / args.variant).mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    # stdin from /dev/null: Nuitka's download prompts get "no" and the build stays offline.
    with open(os.devnull) as devnull:
        subprocess.run(cmd, cwd=ROOT, env=env, stdin=devnull, check=True)
    built = OUT / args.variant / name
    DIST.mkdir(exist_ok=True)
    target = DIST / name
    shutil.copy2(built, target)
    size = target.stat().st_size
    print(f"{target.relative_to(ROOT)}: {size / 1e6:.1f} MB in {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
