"""systemd readiness and watchdog for ``edge-min run`` under ``Type=notify``: target hooks.

systemd passes ``NOTIFY_SOCKET`` (an ``AF_UNIX`` datagram socket; a leading ``@`` means the
abstract namespace) and, with ``WatchdogSec=``, ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``, the
process meant to ping). The protocol is ``KEY=VALUE`` lines in one datagram (``sd_notify(3)``).

``SystemdHooks`` are the runtime's target hooks (``edge_min.hooks``), so readiness is what
the runtime itself says, over plain HTTP or TLS alike: ``READY=1`` (with the API's address in
``STATUS=``) when it serves, ``WATCHDOG=1`` at most every ``WATCHDOG_USEC / 2`` from the
loop's own turns (a hung loop stops the pings and systemd restarts it), ``STOPPING=1`` when
it stops, and the error in ``STATUS=`` when it cannot go on.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping

from edge_min.hooks import NoHooks, ServingAddress


def notify(message: str, socket_path: str | None = None) -> bool:
    """Send ``message`` (``"READY=1"``, ...) to ``NOTIFY_SOCKET``; False when there is none."""
    path = socket_path if socket_path is not None else os.environ.get("NOTIFY_SOCKET", "")
    if not path or path[0] not in "/@":
        return False
    address = "\0" + path[1:] if path[0] == "@" else path
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto(message.encode("utf-8"), address)
        except OSError:
            return False
    return True


def watchdog_interval(environ: Mapping[str, str], pid: int | None = None) -> float | None:
    """Seconds between watchdog pings (half of ``WATCHDOG_USEC``), or None if not asked."""
    usec = environ.get("WATCHDOG_USEC", "")
    owner = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    me = os.getpid() if pid is None else pid
    if owner.isdigit() and int(owner) != me:
        return None
    return int(usec) / 2_000_000


class SystemdHooks(NoHooks):
    """``READY=1``, ``WATCHDOG=1``, ``STOPPING=1`` and ``STATUS=`` from the runtime's hooks."""

    def __init__(
        self,
        socket_path: str,
        watchdog: float | None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.socket_path = socket_path
        self.watchdog = watchdog
        self.monotonic = monotonic
        self._last_ping: float | None = None
        self.sent: list[str] = []  # what was sent, for the log and tests

    def _send(self, message: str) -> None:
        if notify(message, self.socket_path):
            self.sent.append(message.split("\n", 1)[0])

    def serving(self, address: ServingAddress | None) -> None:
        """``READY=1``, with where the API answers."""
        where = f"API on {address.url}" if address is not None else "serving"
        self._send(f"READY=1\nSTATUS={where}")
        self._last_ping = self.monotonic()

    def alive(self) -> None:
        """``WATCHDOG=1`` once per half watchdog period, from the loop itself."""
        if self.watchdog is None or self._last_ping is None:
            return
        now = self.monotonic()
        if now - self._last_ping >= self.watchdog:
            self._send("WATCHDOG=1")
            self._last_ping = now

    def stopping(self) -> None:
        """``STOPPING=1``."""
        self._send("STOPPING=1\nSTATUS=stopping")

    def fatal(self, error: BaseException) -> None:
        """The error in ``STATUS=``, so ``systemctl status`` shows why it stopped."""
        text = " ".join(str(error).split())[:200]
        self._send(f"STATUS=failed: {text}")


def systemd_hooks(environ: Mapping[str, str] | None = None) -> SystemdHooks | None:
    """The hooks when systemd asked for notifications (``NOTIFY_SOCKET``), else None."""
    env = os.environ if environ is None else environ
    path = env.get("NOTIFY_SOCKET", "")
    if not path:
        return None
    return SystemdHooks(path, watchdog_interval(env, pid=None))
