"""The ``edge-min`` command line: ``main(argv=None, hooks=()) -> int``, one command table.

``COMMANDS`` is the one table: the CLI's own groups (``edge_min.cli.setup``: init, config,
status, version; ``edge_min.cli.run``: run; ``edge_min.cli.central``: central serve;
``edge_min.cli.web``: web serve) and every subsystem's ``commands()``. Each command's help
ends with an example (a test checks). User errors become one line on stderr (``edge-min:
error: ...``) and exit code 2, here at the edge and nowhere else; ``config check``,
``health`` and ``workflow run --wait`` exit 1 for a failed check or a failed run. A target
passes its hooks (``main(argv, hooks=[...])``); the serving commands hand them to the
runtime. A target's own commands come as ``extra`` (the firmware image's ``firmware boot``,
which the gateway binary carries).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Sequence

from edge_min.errors import EdgeError
from edge_min.hooks import TargetHooks
from edge_min.subsystem import Command

PROG = "edge-min"

__all__ = ["COMMANDS", "PROG", "build_parser", "commands", "main"]


def commands(extra: Sequence[Command] = ()) -> list[Command]:
    """Every command: the CLI's own, each subsystem's in ``SUBSYSTEMS`` order, a target's."""
    from edge_min.cli import central, run, setup, web
    from edge_min.subsystems import SUBSYSTEMS

    table = [*setup.COMMANDS, *run.COMMANDS]
    for kind in SUBSYSTEMS:
        table.extend(kind.commands())
    table.extend(central.COMMANDS)
    table.extend(web.COMMANDS)
    table.extend(extra)
    paths = [c.path for c in table]
    duplicated = sorted({" ".join(p) for p in paths if paths.count(p) > 1})
    if duplicated:
        raise RuntimeError(f"commands declared twice: {', '.join(duplicated)}")
    return table


def build_parser(table: Sequence[Command] | None = None) -> argparse.ArgumentParser:
    """The full parser; every command's help ends with an example."""
    table = commands() if table is None else table
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="edge_min: durable, offline-first edge runtime for agent workflows.",
        epilog="example: edge-min --data-dir ./edge-data run",
    )
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="edge-config.yaml (default: $EDGE_MIN_CONFIG, else "
        "<data dir>/edge-config.yaml if present, else built-in defaults)",
    )
    parser.add_argument(
        "--data-dir", metavar="DIR", help="storage root (default: storage.root, else ./edge-data)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    top = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    groups: dict[str, argparse.ArgumentParser] = {}
    subs: dict[str, argparse._SubParsersAction[argparse.ArgumentParser]] = {}
    bare = {c.path[0]: c for c in table if len(c.path) == 1}
    for command in table:
        if len(command.path) == 1 and not any(
            len(c.path) == 2 and c.path[0] == command.path[0] for c in table
        ):
            p = top.add_parser(
                command.path[0],
                help=command.summary,
                description=command.summary + ".",
                epilog=f"example: {command.example}",
            )
            _finish(p, command)
            continue
        if len(command.path) == 1:
            continue  # a group's own command: set on the group below
        group_name, name = command.path
        if group_name not in groups:
            own = bare.get(group_name)
            group = top.add_parser(
                group_name,
                help=own.summary if own else f"{group_name} commands",
                epilog=f"example: {own.example if own else command.example}",
            )
            groups[group_name] = group
            # `edge-min sync [--now]` runs the group's own command; subcommands are extras.
            subs[group_name] = group.add_subparsers(
                dest="subcommand", metavar="SUBCOMMAND", required=own is None
            )
            if own is not None:
                _finish(group, own)
        p = subs[group_name].add_parser(
            name,
            help=command.summary,
            description=command.summary + ".",
            epilog=f"example: {command.example}",
        )
        _finish(p, command)
    return parser


def _finish(p: argparse.ArgumentParser, command: Command) -> None:
    if command.arguments is not None:
        command.arguments(p)
    p.set_defaults(command_fn=command.run, command_serves=command.serves)


def main(
    argv: Sequence[str] | None = None,
    hooks: Sequence[TargetHooks] = (),
    extra: Sequence[Command] = (),
) -> int:
    """Run one command (``extra``: a target's own commands too); returns the exit code."""
    from edge_min.cli.context import CliContext

    args = build_parser(commands(extra)).parse_args(argv)
    # A service logs what it does; any other command prints its own output and, unless -v,
    # only the warnings of the runtime it opens (not its "link to central is down").
    quiet = logging.INFO if getattr(args, "command_serves", False) else logging.WARNING
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else quiet,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.command_fn(CliContext(args, hooks)))
    except EdgeError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(f"{PROG}: error: {line}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"{PROG}: error: no such file: {exc.filename}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `edge-min status | head`: the reader left; nothing to say
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - so the exit flush is quiet
        return 141


def __getattr__(name: str) -> object:
    # COMMANDS is built on first use, so importing the package stays cheap.
    if name == "COMMANDS":
        return commands()
    raise AttributeError(name)
