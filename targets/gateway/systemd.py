"""systemd readiness and watchdog for ``edge-min run`` under ``Type=notify``.

systemd passes ``NOTIFY_SOCKET`` (an ``AF_UNIX`` datagram socket; a leading ``@`` means the
abstract namespace) and, with ``WatchdogSec=``, ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``, the
process meant to ping). The protocol is ``KEY=VALUE`` lines in one datagram (``sd_notify(3)``).

Readiness and liveness are judged from outside the runtime's own loop, the way a client
sees it: ``READY=1`` is sent once this process listens on a TCP port and ``GET /health``
there gets an HTTP answer (any status: 401 with ``health_open: false`` or 503 while a check
fails still proves the API serves). ``WATCHDOG=1`` is sent every ``WATCHDOG_USEC / 2`` only
while ``/health`` keeps answering within that half period; a hung runtime stops the pings
and systemd restarts it. The listening port is read from ``/proc/self/fd`` and
``/proc/net/tcp{,6}``, so ``--port 0`` and the config file need no parsing here.
"""

from __future__ import annotations

import http.client
import os
import socket
import threading
import time
from collections.abc import Mapping

_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's st column


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


def _socket_inodes(pid: str) -> set[str]:
    inodes: set[str] = set()
    fd_dir = f"/proc/{pid}/fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return inodes
    for name in names:
        try:
            target = os.readlink(os.path.join(fd_dir, name))
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _decode_address(hex_addr: str) -> tuple[str, int]:
    ip_hex, port_hex = hex_addr.split(":")
    raw = bytes.fromhex(ip_hex)
    # /proc prints the address as host-order 32-bit words.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    family = socket.AF_INET if len(words) == 4 else socket.AF_INET6
    return socket.inet_ntop(family, words), int(port_hex, 16)


def listening_addresses(pid: str = "self", proc_root: str = "/proc") -> list[tuple[str, int]]:
    """The (host, port) of every TCP socket in LISTEN state that process ``pid`` holds."""
    inodes = _socket_inodes(pid)
    found = []
    for table in ("tcp", "tcp6"):
        try:
            with open(f"{proc_root}/{pid}/net/{table}") as fh:
                lines = fh.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == _LISTEN and fields[9] in inodes:
                found.append(_decode_address(fields[1]))
    return found


def _probe_host(host: str) -> str:
    # A wildcard bind is reached through loopback of the same family.
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


def health_answers(host: str, port: int, timeout: float) -> bool:
    """Whether ``GET /health`` on host:port gets any HTTP answer within ``timeout``."""
    conn = http.client.HTTPConnection(_probe_host(host), port, timeout=timeout)
    try:
        conn.request("GET", "/health")
        conn.getresponse().read()
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()
    return True


def serving_address() -> tuple[str, int] | None:
    """The first TCP port this process listens on whose ``GET /health`` answers, if any."""
    for host, port in listening_addresses():
        if health_answers(host, port, timeout=1.0):
            return host, port
    return None


class SystemdNotifier:
    """A daemon thread: READY=1 once the API answers, then WATCHDOG=1 while it keeps answering."""

    def __init__(
        self,
        socket_path: str,
        watchdog: float | None,
        *,
        startup_timeout: float = 300.0,
        poll: float = 0.1,
    ) -> None:
        self.socket_path = socket_path
        self.watchdog = watchdog
        self.startup_timeout = startup_timeout
        self.poll = poll
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="systemd-notify", daemon=True)

    def start(self) -> SystemdNotifier:
        """Start the thread; returns self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop pinging (the thread ends at its next wake-up)."""
        self._stop.set()

    def _address(self) -> tuple[str, int] | None:
        deadline = time.monotonic() + self.startup_timeout
        while not self._stop.is_set() and time.monotonic() < deadline:
            address = serving_address()
            if address is not None:
                return address
            self._stop.wait(self.poll)
        return None

    def _run(self) -> None:
        address = self._address()
        if address is None:
            return
        host, port = address
        notify(f"READY=1\nSTATUS=API on {host}:{port}", self.socket_path)
        self.ready.set()
        if self.watchdog is None:
            return
        while not self._stop.wait(self.watchdog):
            if health_answers(host, port, timeout=self.watchdog):
                notify("WATCHDOG=1", self.socket_path)


def start_notifier(environ: Mapping[str, str] | None = None) -> SystemdNotifier | None:
    """A started ``SystemdNotifier`` when systemd asked for notifications, else None."""
    env = os.environ if environ is None else environ
    path = env.get("NOTIFY_SOCKET", "")
    if not path:
        return None
    return SystemdNotifier(path, watchdog_interval(env, pid=None)).start()
