"""A fault-injecting TCP proxy on 127.0.0.1 for sync tests: cuts, delays and stalls.

Every accepted connection is forwarded to the target by two pump threads (one per
direction). Per connection a seeded RNG draws a plan: with probability ``cut_rate`` a cut at a
random byte offset of a random direction (the bytes before it are forwarded, then both sockets
are closed, so the peer sees the stream end exactly there); with probability ``stall_rate`` a
stall at a random offset (forwarding stops for ``stall`` seconds, longer than the client's
timeout); and a small random delay before each forwarded chunk with probability
``delay_rate``. ``enabled = False`` forwards faithfully (the last, clean round of a test).
Counters: connections, cuts, stalls, delays, bytes each way.
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time
from dataclasses import dataclass, field


@dataclass
class ProxyStats:
    """What the proxy did."""

    connections: int = 0
    cuts: int = 0
    stalls: int = 0
    delays: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    cut_offsets: list[int] = field(default_factory=list)


@dataclass
class _Plan:
    cut_dir: str | None = None
    cut_at: int = 0
    stall_dir: str | None = None
    stall_at: int = 0


class FaultProxy:
    """Forward 127.0.0.1:<port> to ``target``, injecting faults as configured."""

    def __init__(
        self,
        target: tuple[str, int],
        *,
        seed: int = 0,
        cut_rate: float = 0.0,
        mean_cut_offset: int = 8192,
        stall_rate: float = 0.0,
        stall: float = 1.0,
        delay_rate: float = 0.0,
        max_delay: float = 0.005,
    ) -> None:
        self.target = target
        self.rng = random.Random(seed)
        self.cut_rate = cut_rate
        self.mean_cut_offset = mean_cut_offset
        self.stall_rate = stall_rate
        self.stall = stall
        self.delay_rate = delay_rate
        self.max_delay = max_delay
        self.enabled = True
        self.stats = ProxyStats()
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port = self._listener.getsockname()[1]
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._open: set[socket.socket] = set()

    @property
    def url(self) -> str:
        """The proxy's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        """Accept connections in a background thread."""
        t = threading.Thread(target=self._accept_loop, name="fault-proxy", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self) -> None:
        """Stop accepting and close every open connection."""
        self._stopping.set()
        self._listener.close()
        with self._lock:
            for s in list(self._open):
                _close(s)
            self._open.clear()

    def _plan(self) -> _Plan:
        with self._lock:
            self.stats.connections += 1
            plan = _Plan()
            if not self.enabled:
                return plan
            rng = self.rng
            if rng.random() < self.cut_rate:
                plan.cut_dir = rng.choice(("up", "down"))
                plan.cut_at = rng.randint(0, 2 * self.mean_cut_offset)
            if rng.random() < self.stall_rate:
                plan.stall_dir = rng.choice(("up", "down"))
                plan.stall_at = rng.randint(0, 2 * self.mean_cut_offset)
            return plan

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            upstream.settimeout(None)
            plan = self._plan()
            with self._lock:
                self._open.update((client, upstream))
            pair = (client, upstream)
            for direction, src, dst in (("up", client, upstream), ("down", upstream, client)):
                t = threading.Thread(
                    target=self._pump, args=(direction, src, dst, plan, pair), daemon=True
                )
                t.start()

    def _pump(
        self,
        direction: str,
        src: socket.socket,
        dst: socket.socket,
        plan: _Plan,
        pair: tuple[socket.socket, socket.socket],
    ) -> None:
        sent = 0
        stalled = False
        try:
            while True:
                data = src.recv(16384)
                if not data:
                    # A clean end on one side: pass the half-close on.
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                    return
                if self.delay_rate and self.rng.random() < self.delay_rate:
                    with self._lock:
                        self.stats.delays += 1
                    time.sleep(self.rng.uniform(0, self.max_delay))
                if plan.stall_dir == direction and not stalled and sent + len(data) > plan.stall_at:
                    stalled = True
                    head = plan.stall_at - sent
                    dst.sendall(data[:head])
                    self._count(direction, head)
                    sent += head
                    data = data[head:]
                    with self._lock:
                        self.stats.stalls += 1
                    time.sleep(self.stall)
                if plan.cut_dir == direction and sent + len(data) > plan.cut_at:
                    head = plan.cut_at - sent
                    if head > 0:
                        dst.sendall(data[:head])
                        self._count(direction, head)
                    with self._lock:
                        self.stats.cuts += 1
                        self.stats.cut_offsets.append(plan.cut_at)
                    self._kill(pair)
                    return
                dst.sendall(data)
                sent += len(data)
                self._count(direction, len(data))
        except OSError:
            self._kill(pair)

    def _count(self, direction: str, n: int) -> None:
        with self._lock:
            if direction == "up":
                self.stats.bytes_up += n
            else:
                self.stats.bytes_down += n

    def _kill(self, pair: tuple[socket.socket, socket.socket]) -> None:
        with self._lock:
            for s in pair:
                self._open.discard(s)
        for s in pair:
            _close(s)


def _close(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    s.close()
