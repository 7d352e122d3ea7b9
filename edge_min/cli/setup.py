"""``init``, ``config check``, ``status`` and ``version``: the data directory itself."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_min import __version__
from edge_min.errors import UsageError
from edge_min.subsystem import Command, CommandContext
from edge_min.workflows.commands import print_json

PROG = "edge-min"


def cmd_version(ctx: CommandContext) -> int:
    """Print the version."""
    print(f"{PROG} {__version__}")
    return 0


def cmd_init(ctx: CommandContext) -> int:
    """Write the five default config files into DIR."""
    from edge_min.config import default_files

    args = ctx.args
    target = Path(args.dir or args.data_dir or "edge-data")
    target.mkdir(parents=True, exist_ok=True)
    files = default_files()
    clashes = [name for name in files if (target / name).exists()]
    if clashes and not args.force:
        raise UsageError(
            f"{', '.join(clashes)} already exist in {target}; use --force to overwrite them"
        )
    for name, text in files.items():
        (target / name).write_text(text)
        print(target / name)
    return 0


def cmd_config_check(ctx: CommandContext) -> int:
    """Validate config files; print OK or the errors for each."""
    from edge_min.config import check_file

    failed = False
    for name in ctx.args.files:
        problems = check_file(name)
        if problems:
            failed = True
            for line in problems:
                print(line)
        else:
            print(f"{name}: OK")
    return 1 if failed else 0


def cmd_status(ctx: CommandContext) -> int:
    """Print the data directory's status as JSON."""
    from edge_min.runtime import status_of
    from edge_min.store import open_store
    from edge_min.store.files import FileStore

    config, paths = ctx.context()
    if not paths.db.exists():
        raise UsageError(f"no database at {paths.db}; start the runtime with `edge-min run`")
    with open_store(str(paths.db), synchronous=config.storage.synchronous) as store:
        files = FileStore(paths.root, config.runtime.max_storage_usage, db_size=store.size_bytes)
        with ctx.holding() as here:
            running = not here
        print_json(status_of(store, paths, files, extra={"runtime_running": running}))
    return 0


def _init_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", nargs="?", help="where to write (default: the data directory)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")


def _check_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="FILE", help="config files to validate")


COMMANDS = [
    Command(
        ("init",),
        "write the default config files",
        "edge-min init ./edge-data",
        cmd_init,
        _init_arguments,
    ),
    Command(
        ("config", "check"),
        "validate config files",
        "edge-min config check edge-config.yaml sync-config.yaml",
        cmd_config_check,
        _check_arguments,
    ),
    Command(("status",), "show the data directory's status", "edge-min status", cmd_status),
    Command(("version",), "print the version", "edge-min version", cmd_version),
]
