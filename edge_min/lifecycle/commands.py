"""``edge-min enroll`` and ``edge-min decommission``: arguments and entry points.

Both change what the data directory is, so both refuse while an ``edge-min run`` holds it
(stop it first). ``enroll`` then records the enrolled id as the device's id in its store
(``meta['device.id']``, what sync and attestation name themselves with).
"""

from __future__ import annotations

import argparse
import json

from edge_min.errors import UsageError
from edge_min.subsystem import CommandContext

EDGE_FILE = "edge-config.yaml"  # made in the data directory when the device has none


def enroll_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``edge-min enroll``."""
    p.add_argument("--central", required=True, metavar="URL", help="central's base URL")
    p.add_argument("--token", metavar="T", help="the one-time claim token")
    p.add_argument(
        "--factory-cert", metavar="PATH", help="a factory certificate instead of a token"
    )
    p.add_argument("--factory-key", metavar="PATH", help="the factory certificate's key")
    p.add_argument("--device-id", metavar="ID", help="this device's id (else the token's)")
    p.add_argument(
        "--ca-sha256",
        metavar="HEX",
        help="sha256 pin of central's CA (printed by `central enroll-token --ca`)",
    )
    p.add_argument("--ca", metavar="PATH", help="central's CA certificate file instead of a pin")
    p.add_argument("--force", action="store_true", help="enroll again, replacing cert and key")
    p.add_argument(
        "--allow-insecure-http",
        action="store_true",
        help="allow plain http:// to a central that is not on loopback (logs a warning)",
    )
    p.add_argument("--json", action="store_true", help="print the enrollment record as JSON")


def decommission_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``edge-min decommission``."""
    p.add_argument("--yes", action="store_true", help="really erase this device (required)")
    p.add_argument(
        "--offline", action="store_true", help="do not tell central (it is told otherwise)"
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def _stopped(ctx: CommandContext, what: str) -> None:
    raise UsageError(
        f"an edge-min run (pid {ctx.holder()}) holds this data directory; stop it before you {what}"
    )


def enroll_command(ctx: CommandContext) -> int:
    """Enroll with central, then record the enrolled id in the device store."""
    from edge_min.lifecycle.config_fragment import apply_fragment
    from edge_min.lifecycle.enroll import enroll
    from edge_min.security.atrest import open_device_store
    from edge_min.security.tamper import BASELINE_KEY
    from edge_min.sync.commands import NODE_META_KEY

    args = ctx.args
    config, paths = ctx.context()
    with ctx.holding() as here:
        if not here:
            _stopped(ctx, "enroll")
        record = enroll(
            config,
            paths,
            central_url=args.central,
            token=args.token,
            device_id=args.device_id,
            factory_cert=args.factory_cert,
            factory_key=args.factory_key,
            ca_file=args.ca,
            ca_sha256=args.ca_sha256,
            force=args.force,
            allow_insecure=args.allow_insecure_http,
        )
        with open_device_store(config, paths) as store:
            store.meta.set(NODE_META_KEY, record["device_id"])
            measured = store.meta.get(BASELINE_KEY) is not None
        written = apply_fragment(config, record.get("config") or {}, paths.root / EDGE_FILE)
    # A legitimate change: re-measured, not reported as tampering (a device that never ran
    # has no baseline yet: its first start takes it with the merged file).
    if written is not None and measured:
        from edge_min.subsystem import remeasured

        ctx.reload_config()
        with ctx.opened() as runtime:
            remeasured(runtime, "filesystem_integrity", f"enrollment with {args.central}")
    if written is not None:
        record["config_written"] = str(written)
    if args.json:
        print(json.dumps(record, sort_keys=True))
    else:
        print(
            f"enrolled as {record['device_id']} with {record['central_url']} (certificate "
            f"serial {record['serial']}, valid until {record['not_after']}); "
            "`edge-min run` now syncs over mutual TLS"
        )
        if written is not None:
            print(f"central's config for this device merged into {written}")
    return 0


def decommission_command(ctx: CommandContext) -> int:
    """Crypto-erase the device and tell central."""
    from edge_min.lifecycle.decommission import decommission

    args = ctx.args
    config, paths = ctx.context()
    if not args.yes:
        raise UsageError(
            f"decommission erases this device for good: its master key, then everything in "
            f"{paths.root}, then its TLS key; run it again with --yes to do it"
        )
    with ctx.holding() as here:
        if not here:
            _stopped(ctx, "decommission")
        report = decommission(config, paths, tell_central=not args.offline)
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        print(
            f"master key erased: {report['master_key_erased']}; removed "
            f"{len(report['removed'])} entries from {paths.root}; central: {report['central']}"
        )
    return 0
