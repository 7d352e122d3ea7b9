"""``edge-min update keys init|rotate-root``, ``update bundle``, ``update verify``.

None of them opens a runtime: keys and bundles are made on a build machine, and ``verify``
reads only the bundle and a trusted root (``--trust``, else the data directory's
``update/trust/``). ``BUNDLE_COMMANDS`` is the list the update subsystem registers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from edge_min.errors import UsageError
from edge_min.subsystem import Command, CommandContext

__all__ = ["BUNDLE_COMMANDS"]


def _keys_arguments(p: argparse.ArgumentParser) -> None:
    actions = p.add_subparsers(dest="keys_action", metavar="ACTION", required=True)
    init = actions.add_parser(
        "init",
        help="make the four roles' keys and root v1",
        epilog="example: edge-min update keys init ./update-keys",
    )
    init.add_argument("dir", help="an empty folder for the keys (kept offline) and root.json")
    init.add_argument("--root-keys", type=int, default=1, help="how many root keys (default 1)")
    init.add_argument(
        "--root-threshold", type=int, default=1, help="how many must sign a root (default 1)"
    )
    init.add_argument("--root-expires", default="365d", help="the root's lifetime (default 365d)")
    rotate = actions.add_parser(
        "rotate-root",
        help="new root keys; root N+1 signed by the old and the new ones",
        epilog="example: edge-min update keys rotate-root ./update-keys",
    )
    rotate.add_argument("dir", help="the keys folder of `update keys init`")
    rotate.add_argument(
        "--all", action="store_true", help="new keys for targets, snapshot, timestamp too"
    )
    rotate.add_argument("--root-expires", default="365d", help="the new root's lifetime (365d)")


def keys(ctx: CommandContext) -> int:
    """``update keys init DIR`` or ``update keys rotate-root DIR``."""
    return keys_init(ctx) if ctx.args.keys_action == "init" else keys_rotate_root(ctx)


def keys_init(ctx: CommandContext) -> int:
    """Make the four roles' keys and the signed root.json; print where they are."""
    from edge_min.units import parse_duration
    from edge_min.update.keys import init_keys

    a = ctx.args
    made = init_keys(
        Path(a.dir),
        now=time.time(),
        root_keys=a.root_keys,
        root_threshold=a.root_threshold,
        lifetime=parse_duration(a.root_expires),
    )
    print(f"wrote {made.path}/{{root,targets,snapshot,timestamp}}.key (0600: keep them offline)")
    print(f"wrote {made.path / 'root.json'} (root v1): pin it on devices:")
    print(f"  edge-min update verify BUNDLE --trust {made.path / 'root.json'}")
    return 0


def keys_rotate_root(ctx: CommandContext) -> int:
    """Sign root N+1 with the old and new root keys; bundles made from now on carry it."""
    from edge_min.units import parse_duration
    from edge_min.update.keys import rotate_root

    a = ctx.args
    made = rotate_root(
        Path(a.dir), now=time.time(), all_roles=a.all, lifetime=parse_duration(a.root_expires)
    )
    root = made.root
    print(
        f"wrote {made.path / 'roots' / f'{root.version}.root.json'} (root v{root.version}, "
        f"signed by the old and the new root keys); old keys in {made.path / 'retired'}"
    )
    return 0


def _bundle_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("payload", help="the gateway binary, or the package (.tar.gz or .tar)")
    p.add_argument("--version", required=True, help="the payload's version, e.g. 0.2.0")
    p.add_argument("--keys", required=True, help="the keys folder of `update keys init`")
    p.add_argument(
        "--arch",
        default=platform.machine(),
        help=f"the target's architecture (x86_64, aarch64; default {platform.machine()})",
    )
    p.add_argument(
        "--delta-from", help="the payload devices have installed: the bundle is a delta from it"
    )
    p.add_argument("--expires", default="30d", help="how long the bundle is valid (default 30d)")
    p.add_argument("-o", "--output", required=True, help="the bundle file to write")


def bundle(ctx: CommandContext) -> int:
    """Write a signed bundle and print what it holds."""
    from edge_min.errors import UsageError
    from edge_min.units import parse_duration
    from edge_min.update.bundle import make_bundle
    from edge_min.update.keys import KeysDir

    a = ctx.args
    expires = parse_duration(a.expires)
    if expires <= 0:
        raise UsageError(f"--expires {a.expires}: must be a positive duration such as 30d")
    try:
        made = make_bundle(
            Path(a.payload),
            version=a.version,
            keys=KeysDir.load(Path(a.keys)),
            arch=a.arch,
            now=time.time(),
            expires_in=expires,
            out=Path(a.output),
            delta_from=Path(a.delta_from) if a.delta_from else None,
        )
    except ValueError as err:
        raise UsageError(str(err)) from None
    share = made["bundle_length"] / max(made["length"], 1)
    print(
        f"wrote {a.output}: {made['target']} {made['kind']} {made['version']} for "
        f"{made['arch']}, {made['encoding']} ({made['bundle_length']:,} bytes, "
        f"{share:.1%} of the {made['length']:,}-byte payload), expires {made['expires']}"
    )
    return 0


def _verify_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="the bundle file")
    p.add_argument(
        "--trust",
        help="the root.json to trust (default: the data directory's update/trust/root.json)",
    )
    p.add_argument("--installed-version", help="refuse a version older than this one")
    p.add_argument(
        "--arch", default=platform.machine(), help="the device's architecture (default: this)"
    )
    p.add_argument("--base", help="the installed payload, for a delta bundle")
    p.add_argument(
        "--extract",
        metavar="PATH",
        help="write the verified payload here (only once every check passed)",
    )
    p.add_argument(
        "--record",
        action="store_true",
        help="record the bundle as installed in the data directory's trust (after the "
        "install succeeded: older versions and metadata are refused from then on)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def verify(ctx: CommandContext) -> int:
    """Verify a bundle (nothing is installed or recorded); print what was verified."""
    import sys

    from edge_min.update.bundle import verify_bundle
    from edge_min.update.errors import UpdateError
    from edge_min.update.trust import Trust, trust_dir

    a = ctx.args
    try:
        if a.trust:
            trust = Trust.pin(Path(a.trust).read_bytes())
        else:
            trust = Trust.load(trust_dir(ctx.context()[1].root))
        with tempfile.TemporaryDirectory(prefix="edge-min-verify-") as work:
            v = verify_bundle(
                Path(a.bundle),
                trust,
                installed_version=a.installed_version,
                arch=a.arch,
                now=time.time(),
                workdir=Path(work),
                base_payload=Path(a.base) if a.base else None,
            )
            if a.record:
                if a.trust:
                    raise UsageError("--record keeps the data directory's trust: drop --trust")
                trust.record(v)
            if a.extract:  # verified: copied out whole, then renamed into place
                out = Path(a.extract)
                tmp = out.with_name(f".{out.name}.partial")
                shutil.copyfile(v.payload, tmp)
                os.replace(tmp, out)
    except UpdateError as err:
        print(f"edge-min: refused [{err.code}]: {err.message}", file=sys.stderr)
        return 1
    from edge_min.update.metadata import format_expires

    if a.json:
        print(
            json.dumps(
                {
                    "version": v.version,
                    "kind": v.kind,
                    "arch": v.arch,
                    "sha256": v.sha256,
                    "length": v.length,
                    "expires": format_expires(v.expires),
                    "metadata_versions": dict(v.meta_versions),
                    "target": v.target,
                }
            )
        )
        return 0
    print(
        f"verified {a.bundle}: {v.target} ({v.kind} {v.version} for {v.arch}), "
        f"{v.length:,} bytes, sha256 {v.sha256}\n"
        f"  signatures: root, timestamp, snapshot, targets meet their thresholds; metadata "
        f"versions {dict(v.meta_versions)}; valid until {format_expires(v.expires)}"
    )
    return 0


BUNDLE_COMMANDS: list[Command] = [
    Command(
        ("update", "keys"),
        "make (init DIR) or rotate (rotate-root DIR) the update signing keys",
        "edge-min update keys init ./update-keys",
        keys,
        _keys_arguments,
    ),
    Command(
        ("update", "bundle"),
        "make a signed update bundle from a binary or package (full or delta)",
        "edge-min update bundle dist/edge-min-linux-x86_64 --version 0.2.0 "
        "--keys ./update-keys -o edge-min-0.2.0.emub",
        bundle,
        _bundle_arguments,
    ),
    Command(
        ("update", "verify"),
        "verify a bundle's signatures, versions, expiry, architecture and payload",
        "edge-min update verify edge-min-0.2.0.emub --trust ./update-keys/root.json",
        verify,
        _verify_arguments,
    ),
]
