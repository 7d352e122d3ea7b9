"""``init``, ``config check``, ``status`` and ``version``: the data directory itself."""

from __future__ import annotations

import argparse
import secrets
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
    """Write the five default config files into DIR (``secure_boot: true`` when a signed
    launcher started this program: it can be verified on every start)."""
    from edge_min.config import default_files
    from edge_min.platform import get_platform

    args = ctx.args
    if args.security:
        return _init_security(ctx)
    target = Path(args.dir or args.data_dir or "edge-data")
    target.mkdir(parents=True, exist_ok=True)
    files = default_files()
    if get_platform().boot_chain().launcher_key is not None:
        files["edge-config.yaml"] = files["edge-config.yaml"].replace(
            "  secure_boot: false\n",
            "  secure_boot: true # the signed launcher of this binary verifies its signature\n",
        )
    clashes = [name for name in files if (target / name).exists()]
    if clashes and not args.force:
        raise UsageError(
            f"{', '.join(clashes)} already exist in {target}; use --force to overwrite them"
        )
    for name, text in files.items():
        (target / name).write_text(text)
        print(target / name)
    return 0


def _init_security(ctx: CommandContext) -> int:
    """Make the certificate files the config's encryption.communication names."""
    from edge_min.security.certs import init_for_config

    args = ctx.args
    if args.dir:
        raise UsageError(
            "init --security writes where the config names the files, not into a folder: "
            "drop the folder, or use `edge-min certs init DIR` for a bundle in one folder"
        )
    config, paths = ctx.context()
    comm = config.security_config.encryption.communication
    device_id = args.device_id or _stored_device_id(paths.db) or f"edge-{secrets.token_hex(8)}"
    written = init_for_config(
        comm, device_id=device_id, central_host=args.central_host, force=args.force
    )
    for name, path in written.items():
        print(f"wrote {path} ({'0600' if name.endswith('_key') else '0644'})")
    print(
        f"device certificate CN {device_id}; a central for it: edge-min central serve "
        f"--tls-cert {written['central_cert']} --tls-key {written['central_key']} "
        f"--tls-ca {written['ca_cert']}"
    )
    return 0


def _stored_device_id(db: Path) -> str | None:
    """The device id a data directory already syncs as, so its new certificate matches."""
    if not db.exists():
        return None
    from edge_min.store import open_store
    from edge_min.sync.commands import NODE_META_KEY

    with open_store(str(db)) as store:
        return store.meta.get(NODE_META_KEY)


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
    from edge_min.security.attestation import stored_status
    from edge_min.store import open_store
    from edge_min.store.files import FileStore

    config, paths = ctx.context()
    if not paths.db.exists():
        raise UsageError(f"no database at {paths.db}; start the runtime with `edge-min run`")
    with open_store(str(paths.db), synchronous=config.storage.synchronous) as store:
        files = FileStore(paths.root, config.runtime.max_storage_usage, db_size=store.size_bytes)
        with ctx.holding() as here:
            running = not here
        # The attestation subsystem records its last result and central's verdict in meta.
        attestation = stored_status(store)
        extra = {"runtime_running": running, "attestation": attestation}
        print_json(status_of(store, paths, files, extra=extra))
    return 0


def _init_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", nargs="?", help="where to write (default: the data directory)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.add_argument(
        "--security",
        action="store_true",
        help="instead, make the CA, device certificate and key where edge-security.yaml's "
        "encryption.communication names them (development certificates)",
    )
    p.add_argument(
        "--device-id",
        help="with --security: the device certificate's CN (default: the id this data "
        "directory already syncs as, else a new edge-<random>)",
    )
    p.add_argument(
        "--central-host",
        default="127.0.0.1",
        help="with --security: a host name or IP for the central certificate",
    )


def _check_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="FILE", help="config files to validate")


COMMANDS = [
    Command(
        ("init",),
        "write the default config files (--security: the certificates they name)",
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
