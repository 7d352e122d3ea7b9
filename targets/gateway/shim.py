"""The gateway's Linux shim: what ``edge-min`` needs on a gateway beyond the portable core.

The core's POSIX platform (``edge_min.platform.posix``: isolated workers with rlimits,
cgroups and namespaces; ``edge_min.platform.procfs``: host readings from ``/proc`` and
``/sys``) already is the Linux port, and it starts workers through the binary itself when
compiled (``edge_min.platform.worker.command``). ``install(argv)`` adds the two things only
a deployed binary needs, before ``edge_min.cli.main`` runs:

- **the onefile child dies with its launcher.** Nuitka's ``--onefile`` launcher unpacks
  the program once and runs it as a child. A ``kill -9`` of the launcher (what systemd,
  a watchdog or a test does to "the process") would otherwise orphan a runtime that still
  holds the data directory's lock; ``PR_SET_PDEATHSIG`` makes it share the launcher's fate.
- **systemd notification** for the long-running commands (``run``, ``central serve``):
  ``READY=1`` and ``WATCHDOG=1`` (``targets.gateway.systemd``).
"""

from __future__ import annotations

import os
import signal
import sys

from targets.gateway.systemd import SystemdNotifier, start_notifier

#: Commands that serve until stopped, and so report readiness to systemd.
SERVING = (("run",), ("central", "serve"))
_PR_SET_PDEATHSIG = 1


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


def die_with_launcher(environ: dict[str, str] | None = None) -> bool:
    """In a onefile child, get SIGKILL when the launcher dies; whether that was set up."""
    env = os.environ if environ is None else environ
    parent = env.get("NUITKA_ONEFILE_PARENT", "")
    if not parent.isdigit() or not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != int(parent):
        os._exit(137)  # the launcher died before the death signal was armed
    return True


def install(argv: list[str]) -> SystemdNotifier | None:
    """Apply the shim for the command line ``argv`` (without the program name)."""
    die_with_launcher()
    words = command_words(argv)
    if any(words[: len(serving)] == serving for serving in SERVING):
        return start_notifier()
    return None
