"""The gateway's Linux shim: what ``edge-min`` needs on a gateway beyond the portable core.

The core's POSIX platform (``edge_min.platform.posix``: isolated workers with rlimits,
cgroups and namespaces; ``edge_min.platform.procfs``: host readings from ``/proc`` and
``/sys``) already is the Linux port, and it starts workers through the binary itself when
compiled (``edge_min.platform.worker.command``). The one-file launcher
(``targets/gateway/launcher.c``) ``execv``s the unpacked program, so the process systemd
started *is* the runtime: no parent to forward signals or to outlive. ``install(argv)`` adds
what only a deployed binary needs, before ``edge_min.cli.main`` runs, for the long-running
commands (``run``, ``central serve``):

- **systemd notification**: ``READY=1`` and ``WATCHDOG=1`` (``targets.gateway.systemd``);
- **start-up pages given back**: once the API answers, the compiled program's read-only
  pages are paged out (``targets.gateway.memory``), since start-up touched far more of
  them than the idle runtime uses.
"""

from __future__ import annotations

from targets.gateway.memory import trim_when_serving
from targets.gateway.systemd import SystemdNotifier, serving_address, start_notifier

#: Commands that serve until stopped, and so report readiness to systemd.
SERVING = (("run",), ("central", "serve"))


def command_words(argv: list[str]) -> tuple[str, ...]:
    """The subcommand words of an edge-min command line (global options skipped)."""
    words: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg.startswith("-"):
            # --config/--data-dir take a value unless written as --opt=value
            skip = arg in ("--config", "--data-dir", "-c", "-d")
        else:
            words.append(arg)
            if len(words) == 2:
                break
    return tuple(words)


def install(argv: list[str]) -> SystemdNotifier | None:
    """Apply the shim for the command line ``argv`` (without the program name)."""
    words = command_words(argv)
    if not any(words[: len(serving)] == serving for serving in SERVING):
        return None
    if "__compiled__" in globals():
        trim_when_serving(lambda: serving_address() is not None)
    return start_notifier()
