"""``central serve``: the reference central platform, beside the device commands."""

from __future__ import annotations

import argparse

from edge_min.subsystem import Command, CommandContext


def cmd_central_serve(ctx: CommandContext) -> int:
    """Serve the reference central platform until SIGTERM."""
    from edge_min.central.cli import run

    return run(ctx.args, hooks=ctx.hooks)


def _arguments(p: argparse.ArgumentParser) -> None:
    from edge_min.central.cli import add_arguments

    add_arguments(p)


COMMANDS = [
    Command(
        ("central", "serve"),
        "serve the reference central platform (sync, devices, alerts, metrics)",
        "edge-min central serve --db sqlite:///central.db --port 8765",
        cmd_central_serve,
        _arguments,
    )
]
