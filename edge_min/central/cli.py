"""``edge-min central serve``, ``central token`` and ``central enroll-token``: arguments and
entry points.

``enroll_token_arguments`` / ``run_enroll_token``: make a one-time claim token in central's
database (the operator on central's host; ``POST /api/enroll/tokens`` does the same over the
API) and print it with the ``edge-min enroll`` line to paste on the device.

The main CLI adds a ``central serve`` subcommand with ``add_arguments(parser)`` and calls
``run(args)``, and ``central token`` with ``add_token_arguments`` and ``run_token``;
``python -m edge_min.central serve|token ...`` (``main``) does the same standalone.
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
        "--enroll-ca-key",
        metavar="PATH",
        help="the private key of --tls-ca: turns enrollment on (devices claim a token and "
        "get a certificate signed by that CA; docs/updates.md)",
    )
    parser.add_argument(
        "--factory-ca",
        metavar="PATH",
        help="a CA whose factory certificates may enroll a device without a claim token "
        "(its CN is the device id)",
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
        "--allow-untrusted-sync",
        action="store_true",
        help="accept sync pushes from devices whose attestation failed or is overdue "
        "(default: refuse them with 403 device_untrusted)",
    )
    parser.add_argument(
        "--attestation-max-age",
        metavar="DURATION",
        help="how long a passing attestation counts, e.g. 2d or 36h, unless a device's policy "
        "says max_age (default 2 days: twice attestation.interval's default)",
    )
    parser.add_argument(
        "--operator-key-file",
        metavar="PATH",
        help="require operator tokens signed with this key (made, mode 0600, if absent) on "
        "every route but the devices' own; issue them with `edge-min central token` "
        "(default: no operator tokens, every route open)",
    )
    parser.add_argument(
        "--allowed-origin",
        metavar="ORIGIN",
        action="append",
        default=[],
        help="a web page origin (https://app.example.com) allowed to call central from a "
        "browser, e.g. the browser target's page; repeat for more (default: none, and "
        "requests from other pages are refused with 403 origin_not_allowed)",
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
    max_age = None
    if getattr(args, "attestation_max_age", None):
        from edge_min.units import parse_duration

        try:
            max_age = parse_duration(args.attestation_max_age)
        except ValueError as exc:
            raise EdgeError(f"--attestation-max-age: {exc}") from exc
        if max_age <= 0:
            raise EdgeError(f"--attestation-max-age {args.attestation_max_age} must be positive")
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
        refuse_untrusted=not getattr(args, "allow_untrusted_sync", False),
        attestation_max_age=max_age,
        operator_key_file=getattr(args, "operator_key_file", None),
        enroll_ca_key=getattr(args, "enroll_ca_key", None),
        factory_ca=getattr(args, "factory_ca", None),
        allowed_origins=getattr(args, "allowed_origin", None) or (),
    )


def add_token_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``central token``."""
    parser.add_argument(
        "--operator-key-file",
        metavar="PATH",
        required=True,
        help="the key `central serve --operator-key-file` checks tokens with (made if absent)",
    )
    parser.add_argument(
        "--role",
        default="monitor",
        help="admin (everything), operator (read, execute) or monitor (read; default)",
    )
    parser.add_argument("--ttl", default="8h", help="how long the token works (default 8h)")
    parser.add_argument("--subject", help="who the token is for (recorded in it)")


def run_token(args: argparse.Namespace) -> int:
    """Print an operator token for ``--role``; returns the exit code."""
    import time

    from edge_min.central.operators import issue_operator_token, load_operator_key
    from edge_min.units import parse_duration

    try:
        ttl = parse_duration(args.ttl)
    except ValueError as exc:
        raise EdgeError(f"--ttl {args.ttl!r}: {exc}") from exc
    key = load_operator_key(args.operator_key_file)
    token = issue_operator_token(
        key, args.role, now=time.time(), ttl_seconds=ttl, subject=args.subject
    )
    print(token)
    return 0


def enroll_token_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``central enroll-token``."""
    parser.add_argument("--db", metavar="URL", help="central's database (as for central serve)")
    parser.add_argument("--device-id", metavar="ID", help="bind the token to this device id")
    parser.add_argument("--ttl", default="1h", help="how long the token works (default 1h)")
    parser.add_argument(
        "--tag", action="append", default=[], metavar="T", help="a tag for the device (repeat)"
    )
    parser.add_argument(
        "--ca", metavar="PATH", help="central's CA certificate (--tls-ca): print its sha256 pin"
    )
    parser.add_argument(
        "--central", metavar="URL", help="central's URL, for the printed `edge-min enroll` line"
    )
    parser.add_argument("--json", action="store_true", help="print the token as JSON")


def run_enroll_token(args: argparse.Namespace) -> int:
    """Make a claim token and print it (with the enroll command a device runs)."""
    import json

    from edge_min.central.enrollment import make_token, parse_ttl
    from edge_min.central.store import open_central_store
    from edge_min.clock import iso

    try:
        ttl = parse_ttl(args.ttl, "--ttl")
    except ValueError as exc:
        raise EdgeError(str(exc)) from exc
    pin = None
    if args.ca:
        from edge_min.central.ca import ca_fingerprint

        try:
            pin = ca_fingerprint(Path(args.ca).read_bytes())
        except (OSError, ValueError) as exc:
            raise EdgeError(f"--ca {args.ca}: not a readable PEM certificate ({exc})") from exc
    store = open_central_store(args.db or default_db_url(getattr(args, "data_dir", None)))
    try:
        token, expires = make_token(store, ttl=ttl, device_id=args.device_id, tags=args.tag)
    except ValueError as exc:
        raise EdgeError(str(exc).replace("device_id", "--device-id", 1)) from exc
    finally:
        store.close()
    doc = {
        "token": token,
        "expires_at": iso(expires),
        "device_id": args.device_id,
        "tags": sorted(set(args.tag)),
        "ca_sha256": pin,
    }
    if args.json:
        print(json.dumps(doc, sort_keys=True))
        return 0
    print(f"token: {token}\nexpires: {doc['expires_at']} (works once)")
    line = f"edge-min enroll --central {args.central or 'https://CENTRAL:8765'} --token {token}"
    if pin:
        line += f" --ca-sha256 {pin}"
    if args.device_id is None:
        line += " --device-id ID"
    print(f"on the device:\n  {line}")
    return 0


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
    token_parser = sub.add_parser(
        "token",
        help="print an operator token for the API and the fleet page",
        description="Print a bearer token that `serve --operator-key-file` accepts.",
        epilog="example: edge-min central token --operator-key-file central-data/operator.key "
        "--role monitor --ttl 8h",
    )
    add_token_arguments(token_parser)
    enroll_parser = sub.add_parser(
        "enroll-token",
        help="make a one-time claim token for a device",
        description="Make a one-time claim token for a device to enroll with.",
        epilog="example: edge-min central enroll-token --device-id gw-17 --ttl 1h --tag lab",
    )
    enroll_token_arguments(enroll_parser)
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
        if args.command == "token":
            return run_token(args)
        if args.command == "enroll-token":
            return run_enroll_token(args)
        return run(args)
    except EdgeError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(f"edge-min central: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
