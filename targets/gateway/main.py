"""The entry point of the gateway binary: ``edge-min`` for Linux gateways, compiled by Nuitka.

``build/build_binary.py`` compiles this file into ``dist/edge-min-linux-<arch>``. At run time:

- ``<binary> __worker__ '<config JSON>'`` is the isolated agent worker
  (``edge_min.platform.worker.main``): a compiled build has no ``python`` and no
  ``worker.py`` on disk, so ``edge_min.platform.worker.command()`` starts the binary itself.
  Nothing else is imported on that path, so a worker starts as fast as the binary allows.
- ``<binary> __modules__`` imports every module the build must contain and prints one
  ``<name>: ok|missing: <reason>`` line each (exit 1 if one is missing): the smoke test
  that catches a module present in the source tree but left out of the binary.
- anything else is ``edge-min``'s own command line (``edge_min.cli.main``), with the
  gateway's target hooks (``targets.gateway.shim``): systemd readiness, watchdog and
  stopping notification when ``NOTIFY_SOCKET`` / ``WATCHDOG_USEC`` are set, and the
  start-up pages of the program given back once ``run`` serves, and the firmware image's
  ``firmware boot|status`` commands (``targets.firmware``: the image's slots hold this
  binary).

It also runs from the source tree: ``python targets/gateway/main.py version``.
"""

from __future__ import annotations

import os
import sys

# The source tree's root, so ``python targets/gateway/main.py`` finds edge_min and targets.
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if "__compiled__" not in globals() and _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

WORKER_ARG = "__worker__"
MODULES_ARG = "__modules__"


def main(argv: list[str] | None = None) -> int:
    """Dispatch on the first argument: the worker, the module check, or the edge-min CLI."""
    args = list(sys.argv if argv is None else argv)
    if len(args) > 1 and args[1] == WORKER_ARG:
        from edge_min.platform import worker

        return worker.main([args[0], *args[2:]])
    if len(args) > 1 and args[1] == MODULES_ARG:
        from targets.gateway.modules import check_modules

        return check_modules(args[2:])
    from edge_min.cli import main as cli_main
    from targets.firmware.commands import COMMANDS as FIRMWARE  # the image's slots run this
    from targets.gateway.shim import target_hooks

    hooks = target_hooks(compiled="__compiled__" in globals())
    return cli_main(args[1:], hooks=hooks, extra=FIRMWARE)


if __name__ == "__main__":
    sys.exit(main())
