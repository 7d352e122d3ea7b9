"""``edge-min central serve``: the arguments and the entry point the main CLI wires in.

The main CLI adds a ``central serve`` subcommand with ``add_arguments(parser)`` and calls
``run(args)``; ``python -m edge_min.central serve ...`` (``main``) does the same standalone.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from edge_min.central.server import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_WORKERS, serve
from edge_min.errors import EdgeError
from edge_min.hooks import TargetHooks

DEFAULT_DATA_DIR = "./central-data"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``central serve``."""
    parser.add_argument(
        "--db",
        metavar="URL",
        help="sqlite:///PATH (relative) or sqlite:////ABS/PATH, or postgresql://USER@HOST/DB "
        "(default: sqlite in <data dir>/central.db; data dir default ./central-data)",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address (default {DEFAULT_HOST})")
    parser.add_argument("--tls-cert", metavar="PATH", help="central certificate (enables HTTPS)")
    parser.add_argument("--tls-key", metavar="PATH", help="central private key")
    parser.add_argument(
        "--tls-ca", metavar="PATH", help="CA that signs device certificates (mutual TLS)"
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 = any)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        help=f"HTTP worker threads, one database connection each (default {DEFAULT_WORKERS})",
    )
    parser.add_argument(
        "--require-provisioned",
        action="store_true",
        help="refuse devices until POST /api/devices/ID/provision "
        "(default: register a device on first contact)",
    )
    parser.add_argument(
        "--sync-key-file",
        metavar="PATH",
        help="a 32-byte payload key shared by devices without their own provisioned key",
    )
    parser.add_argument(
        "--insecure-http",
        action="store_true",
        help="allow plain HTTP on a non-loopback address (logs a warning)",
    )


def default_db_url(data_dir: str | None) -> str:
    """``sqlite:`` URL of ``<data_dir>/central.db``."""
    path = Path(data_dir or DEFAULT_DATA_DIR).resolve() / "central.db"
    return f"sqlite:///{path}"


def run(args: argparse.Namespace, hooks: Sequence[TargetHooks] = ()) -> int:
    """Run ``central serve`` with parsed arguments; returns the exit code.

    ``hooks`` are a target's (``edge_min.hooks``): told when central serves and stops.
    """
    if args.workers < 1:
        raise EdgeError(f"--workers {args.workers} must be at least 1")
    db_url = args.db or default_db_url(getattr(args, "data_dir", None))
    tls_paths = (args.tls_cert, args.tls_key, args.tls_ca)
    if any(tls_paths) and not all(tls_paths):
        raise EdgeError("HTTPS needs all three of --tls-cert, --tls-key and --tls-ca")
    return serve(
        db_url,
        args.host,
        args.port,
        workers=args.workers,
        require_provisioned=args.require_provisioned,
        sync_key_file=args.sync_key_file,
        allow_insecure=args.insecure_http,
        tls=(args.tls_cert, args.tls_key, args.tls_ca) if all(tls_paths) else None,
        hooks=hooks,
    )


def build_parser() -> argparse.ArgumentParser:
    """The standalone parser: ``serve`` is the one command."""
    parser = argparse.ArgumentParser(
        prog="edge-min central",
        description="The reference central platform: sync endpoint, device registry, alerts.",
        epilog="example: edge-min central serve --db postgresql://edge@db/central --port 8765",
    )
    parser.add_argument("--data-dir", metavar="DIR", help="where the default SQLite db lives")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve_parser = sub.add_parser(
        "serve",
        help="serve the central API until SIGTERM",
        description="Serve the central API until SIGTERM or SIGINT.",
        epilog="example: edge-min central serve --db sqlite:///central.db --port 8765",
    )
    add_arguments(serve_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m edge_min.central serve ...``; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return run(args)
    except EdgeError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(f"edge-min central: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
