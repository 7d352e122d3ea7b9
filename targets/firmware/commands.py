"""``edge-min firmware boot|status``: the firmware target's own commands.

The gateway binary carries them (``targets/gateway/main.py`` passes ``COMMANDS`` to the
CLI), since the image's slots hold that same binary; on a gateway ``firmware boot`` refuses,
naming ``edge-min run`` instead.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edge_min.subsystem import Command, CommandContext


def _layout(args: argparse.Namespace) -> object:
    from targets.firmware.boot import Layout

    default = Layout()
    return Layout(
        esp=Path(args.esp or default.esp),
        data=Path(args.data or default.data),
        program=Path(args.program or default.program),
    )


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--esp", metavar="DIR", help="the ESP's mount point (default /efi)")
    p.add_argument("--data", metavar="DIR", help="the data partition's (default /data)")
    p.add_argument("--program", metavar="PATH", help="the runtime (default /usr/bin/edge-min)")


def _status_arguments(p: argparse.ArgumentParser) -> None:
    _arguments(p)
    p.add_argument("--json", action="store_true", help="print it as JSON")


def cmd_boot(ctx: CommandContext) -> int:
    """Boot this slot: provision, reconcile with the boot loader, run the runtime."""
    from targets.firmware.boot import FirmwareBoot, Layout

    layout = _layout(ctx.args)
    assert isinstance(layout, Layout)
    return FirmwareBoot(layout).run()


def cmd_status(ctx: CommandContext) -> int:
    """Print the booted slot, the loader entries, the update state and provisioning."""
    from targets.firmware.boot import Layout, status

    layout = _layout(ctx.args)
    assert isinstance(layout, Layout)
    view = status(layout)
    if ctx.args.json:
        print(json.dumps(view, indent=1, sort_keys=True, default=str))
        return 0
    print(f"booted slot {view['booted']} (entry {view['entry']}, try {view['try']})")
    entries = view["entries"]
    if isinstance(entries, dict):
        for _slot, e in sorted(entries.items()):
            left = "blessed" if e["left"] is None else f"{e['left']} tries left"
            print(f"  entry {e['file']}: version {e['version']}, {left}")
    else:
        print(f"  entries: {entries}")
    st = view["update"]
    print(f"active slot {st['active']}, on trial: {(st['trying'] or {}).get('slot')}")
    prov = view["provision"] or {}
    print(f"provisioning: {prov.get('state', 'none')}")
    return 0


COMMANDS = [
    Command(
        ("firmware", "boot"),
        "the firmware image's main service: provision, reconcile slots, run the runtime",
        "edge-min firmware boot --esp /efi --data /data",
        cmd_boot,
        _arguments,
        serves=True,
    ),
    Command(
        ("firmware", "status"),
        "the booted slot, the boot loader's entries, the update state and provisioning",
        "edge-min firmware status --json",
        cmd_status,
        _status_arguments,
    ),
]
