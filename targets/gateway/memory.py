"""Give back the compiled program's start-up pages once ``edge-min run`` serves.

A Nuitka build is one large executable (about 15 MB of code and 8 MB of constants here).
Starting it touches most of that once: every module's constants are found by walking one
blob from its start, and the kernel maps pages around every fault (fault-around), so ~20 MB
of the file end up resident although the idle runtime runs a small part of it. Those pages
are clean and file-backed: ``madvise(MADV_PAGEOUT)`` (Linux 5.4+) drops them from the
process and reclaims them, and the few the runtime still uses fault back in from the page
cache or disk. Measured here: idle RSS 48 MB -> 34 MB (``make bench-binary``). The cost is
a one-time re-read of code that is used again later (a sync after days offline, say).

Only the binary does this (from the source tree the program is the shared ``python``);
``EDGE_MIN_TRIM=0`` turns it off.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time

from edge_min.hooks import NoHooks, ServingAddress

MADV_PAGEOUT = 21
_READ_ONLY = ("r--p", "r-xp")


def program_mappings(maps: str, program: str) -> list[tuple[int, int]]:
    """(start, length) of the read-only private mappings of file ``program`` in a maps text."""
    found = []
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[1] in _READ_ONLY and fields[5] == program:
            start, end = (int(x, 16) for x in fields[0].split("-"))
            found.append((start, end - start))
    return found


def trim(program: str | None = None) -> int:
    """Page out this process's read-only mappings of ``program`` (default: itself).

    Returns the bytes advised; 0 where the kernel or platform can't (nothing fails).
    """
    path = program or os.path.realpath("/proc/self/exe")
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            ranges = program_mappings(fh.read(), path)
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return 0
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    advised = 0
    for start, length in ranges:
        if libc.madvise(start, length, MADV_PAGEOUT) == 0:
            advised += length
    return advised


class TrimWhenServing(NoHooks):
    """A target hook: ``settle`` seconds after the runtime serves, ``trim()`` in a thread.

    ``settle`` lets the first rounds of the monitor, sync and API touch what they need.
    """

    def __init__(self, settle: float = 5.0) -> None:
        self.settle = settle
        self.thread: threading.Thread | None = None

    def serving(self, address: ServingAddress | None) -> None:
        """Start the trim thread (once)."""
        if self.thread is not None or os.environ.get("EDGE_MIN_TRIM", "1") == "0":
            return

        def run() -> None:
            time.sleep(self.settle)
            trim()

        self.thread = threading.Thread(target=run, name="trim-start-up-pages", daemon=True)
        self.thread.start()
