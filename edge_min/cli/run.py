"""``run``: the serving runtime (``edge_min.serving``) on this host, with the target's hooks."""

from __future__ import annotations

import argparse

from edge_min.subsystem import Command, CommandContext


def cmd_run(ctx: CommandContext) -> int:
    """Start the runtime and the local API; stop cleanly on SIGTERM or SIGINT."""
    from edge_min.serving import serve

    config, paths = ctx.context()
    args = ctx.args
    return serve(
        config,
        paths,
        host=args.host,
        port=args.port,
        hooks=ctx.hooks,
        local_central=args.local_central,
        allow_insecure_http=args.allow_insecure_http,
        # This process ends right after: a second SIGTERM (make and systemd signal the whole
        # group) must not kill it mid-cleanup.
        restore_signals=False,
    )


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="API address (default: api.host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="API port (default: api.port, 8000)")
    p.add_argument(
        "--local-central",
        action="store_true",
        help="when sync.central_url is a plain-http address on this machine (the default "
        "http://127.0.0.1:8765 is one) and nothing answers there, also serve a local central "
        "there (data in <data dir>/central, this device's sync key), so a first sync works "
        "with nothing else set up; a central_url on another host is left alone",
    )
    p.add_argument(
        "--allow-insecure-http",
        action="store_true",
        help="allow a plain http:// sync.central_url on another host (logs a warning); "
        "without it only loopback may be plain http, as for `edge-min sync`",
    )


COMMANDS = [
    Command(
        ("run",),
        "start the runtime and the local API",
        "edge-min --data-dir /data run --port 8000",
        cmd_run,
        _arguments,
        serves=True,
    )
]
