"""The gateway's Linux shim: what ``edge-min`` needs on a gateway beyond the portable core.

The core's POSIX platform (``edge_min.platform.posix``: isolated workers with rlimits,
cgroups and namespaces; ``edge_min.platform.procfs``: host readings from ``/proc`` and
``/sys``) already is the Linux port, and it starts workers through the binary itself when
compiled (``edge_min.platform.worker.command``). The one-file launcher
(``targets/gateway/launcher.c``) ``execv``s the unpacked program, so the process systemd
started *is* the runtime: no parent to forward signals or to outlive. ``target_hooks()`` is
what the gateway adds, as target hooks the serving commands (``run``, ``central serve``)
call; the command line is parsed once, by the CLI:

- **systemd notification**: ``READY=1``, ``WATCHDOG=1``, ``STOPPING=1`` when
  ``NOTIFY_SOCKET`` is set (``targets.gateway.systemd``);
- **start-up pages given back**: once the runtime serves, the compiled program's read-only
  pages are paged out (``targets.gateway.memory``), since start-up touched far more of
  them than the idle runtime uses.
"""

from __future__ import annotations

from collections.abc import Mapping

from edge_min.hooks import TargetHooks
from targets.gateway.memory import TrimWhenServing
from targets.gateway.systemd import systemd_hooks


def target_hooks(environ: Mapping[str, str] | None = None, *, compiled: bool) -> list[TargetHooks]:
    """The gateway's hooks for this process: systemd's when asked for, the trim when compiled."""
    hooks: list[TargetHooks] = []
    notifier = systemd_hooks(environ)
    if notifier is not None:
        hooks.append(notifier)
    if compiled:
        hooks.append(TrimWhenServing())
    return hooks
