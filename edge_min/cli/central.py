"""``central serve``, ``central token`` and ``central enroll-token``: the reference central
platform, beside the device commands."""

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


def cmd_central_token(ctx: CommandContext) -> int:
    """Print an operator token for central's API and fleet page."""
    from edge_min.central.cli import run_token

    return run_token(ctx.args)


def _token_arguments(p: argparse.ArgumentParser) -> None:
    from edge_min.central.cli import add_token_arguments

    add_token_arguments(p)


def cmd_central_enroll_token(ctx: CommandContext) -> int:
    """Make a one-time claim token in central's database."""
    from edge_min.central.cli import run_enroll_token

    return run_enroll_token(ctx.args)


def _enroll_token_arguments(p: argparse.ArgumentParser) -> None:
    from edge_min.central.cli import enroll_token_arguments

    enroll_token_arguments(p)


COMMANDS = [
    Command(
        ("central", "serve"),
        "serve the reference central platform (sync, devices, alerts, metrics)",
        "edge-min central serve --db sqlite:///central.db --port 8765",
        cmd_central_serve,
        _arguments,
        serves=True,
    ),
    Command(
        ("central", "token"),
        "print an operator token that `central serve --operator-key-file` accepts",
        "edge-min central token --operator-key-file central-data/operator.key --role monitor",
        cmd_central_token,
        _token_arguments,
    ),
    Command(
        ("central", "enroll-token"),
        "make a one-time claim token a device enrolls with (edge-min enroll)",
        "edge-min central enroll-token --device-id gw-17 --ttl 1h --tag lab",
        cmd_central_enroll_token,
        _enroll_token_arguments,
    ),
]
