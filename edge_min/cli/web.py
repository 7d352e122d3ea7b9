"""``web serve``: the browser bundle of ``make web`` (``dist/web/``) on a local HTTP port.

Any static file server will do (``python -m http.server -d dist/web``); this one checks the
bundle first and serves what a page of it needs right:

- before it listens, every file ``bundle.json`` names (the page, the loader, the worker,
  Pyodide's files, the wheels, the models, the examples) must be there, and each wheel and
  model must have the sha256 the bundle says: a bundle cut short by a failed copy or
  changed by hand is refused with the file and the fix (``make web``), instead of a page
  that fails later in the worker with a digest error;
- the types a module worker and WebAssembly need whatever the host's ``mime.types`` says
  (``.mjs`` and ``.js`` as ``text/javascript``, ``.wasm`` as ``application/wasm``, which
  ``WebAssembly.instantiateStreaming`` insists on);
- ``Cache-Control: no-cache``: the browser revalidates, so after a new ``make web`` a tab
  never mixes an old worker with new wheels;
- only GET and HEAD, only under the bundle, no directory listings.

It serves until SIGTERM or SIGINT (waited for with ``sigwait``: no handler runs inside the
serving threads) and exits 0. Stdlib only.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from edge_min.errors import UsageError
from edge_min.security.manifest import sha256_file
from edge_min.subsystem import Command, CommandContext

DEFAULT_DIR = "dist/web"
DEFAULT_PORT = 8080
#: The files every bundle has besides what bundle.json lists.
PAGE_FILES = ("index.html", "edge-min.js", "worker.js", "page.js", "page.css", "examples.js")
PYODIDE_FILES = ("pyodide.mjs", "pyodide.asm.mjs", "pyodide.asm.wasm", "python_stdlib.zip")
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".wasm": "application/wasm",
    ".whl": "application/zip",
    ".zip": "application/zip",
    ".onnx": "application/octet-stream",
    ".yaml": "text/yaml; charset=utf-8",
    ".py": "text/x-python; charset=utf-8",
    ".png": "image/png",
}
REBUILD = "build it again with `make web` (or `python wasm/build_web.py --out DIR`)"


def check_bundle(root: Path) -> dict[str, Any]:
    """``root``'s bundle.json once every file it names is there with its digest; else a
    ``UsageError`` naming the first file that is missing or differs, and the fix."""
    manifest = root / "bundle.json"
    if not manifest.is_file():
        raise UsageError(
            f"--dir {str(root)!r} holds no browser bundle (no bundle.json there); {REBUILD}, "
            f"or pass the folder it was built into"
        )
    try:
        bundle = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{manifest}: not a bundle manifest ({exc}); {REBUILD}") from exc
    if not isinstance(bundle, dict) or not isinstance(bundle.get("wheels"), list):
        raise UsageError(f"{manifest}: has no 'wheels' list; {REBUILD}")
    named = [*PAGE_FILES, *(f"pyodide/{name}" for name in PYODIDE_FILES)]
    examples = bundle.get("examples") or {}
    for agent in examples.get("agents", []):
        named += [f"examples/{agent['yaml']}", *(f"examples/{f}" for f in agent.get("files", []))]
    named += [f"examples/{name}" for name in examples.get("workflows", [])]
    for name in named:
        if not (root / name).is_file():
            raise UsageError(f"the bundle in {root} has no {name}; {REBUILD}")
    for folder, key in (("wheels", "wheels"), ("models", "models")):
        for entry in bundle.get(key) or []:
            path = root / folder / str(entry.get("file"))
            if not path.is_file():
                raise UsageError(
                    f"the bundle in {root} has no {folder}/{entry.get('file')}; {REBUILD}"
                )
            found = sha256_file(path)
            if found != entry.get("sha256"):
                raise UsageError(
                    f"{folder}/{path.name} in {root} has sha256 {found}, bundle.json says "
                    f"{entry.get('sha256')}: the bundle was changed after it was built; {REBUILD}"
                )
    return bundle


class BundleHandler(http.server.SimpleHTTPRequestHandler):
    """Static files of one bundle: fixed types, no-cache, no listings, GET and HEAD only."""

    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, **TYPES}
    server_version = "edge-min-web"

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Content-Type-Options", "nosniff")
        super().end_headers()

    def list_directory(self, path: Any) -> None:
        self.send_error(404, "no directory listings")
        return None

    def do_POST(self) -> None:
        self.send_error(405, "this server only serves the bundle (GET, HEAD)")

    do_PUT = do_DELETE = do_PATCH = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        import logging

        logging.getLogger("edge_min.web").debug("%s " + format, self.address_string(), *args)


def serve(root: Path, host: str, port: int) -> int:
    """Check the bundle, serve it until SIGTERM or SIGINT; 0."""
    import logging

    bundle = check_bundle(root)
    # Blocked before any thread starts, so every thread inherits the mask and only sigwait
    # below receives them.
    signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        handler = functools.partial(BundleHandler, directory=str(root))
        try:
            server = http.server.ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise UsageError(
                f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another --port "
                f"(0 picks a free one) or --host"
            ) from exc
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, name="web-serve", daemon=True)
        thread.start()
        bound_host, bound_port = server.server_address[:2]
        url = f"http://{bound_host!s}:{bound_port}/"
        print(f"serving the browser bundle {root} (edge_min {bundle.get('edge_min')}) at {url}")
        sys.stdout.flush()
        logging.getLogger("edge_min.web").info("serving %s at %s", root, url)
        signal.sigwait(signals)
        server.shutdown()
        server.server_close()
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)
    return 0


def cmd_web_serve(ctx: CommandContext) -> int:
    """Serve the browser bundle."""
    args = ctx.args
    return serve(Path(args.dir).resolve(), args.host, args.port)


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dir",
        default=DEFAULT_DIR,
        metavar="DIR",
        help=f"the bundle `make web` built (default: {DEFAULT_DIR})",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port to listen on (default: {DEFAULT_PORT}; 0 picks a free one and prints it)",
    )


COMMANDS = [
    Command(
        ("web", "serve"),
        "serve the browser bundle of `make web` (the runtime in a tab) on a local port",
        "edge-min web serve --dir dist/web --port 8080",
        cmd_web_serve,
        _arguments,
        serves=True,
    ),
]
