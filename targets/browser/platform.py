"""The browser's platform: the in-process one, told by the page what a tab cannot ask its OS.

A dedicated Web Worker has no processes, no signals, no sockets and no view of its host, so
this is ``edge_min.platform.inprocess.InProcessPlatform`` (python agents in the worker's own
interpreter, command agents refused when they are added, no host metrics) with three facts
the worker is told instead of finding out:

- ``online``: whether the link is up, from ``navigator.onLine`` and the page's own sync
  transport (a tab cannot open a TCP connection to probe central, so ``can_reach`` answers
  from it);
- the hardware facts of the tamper fingerprint: a tab sees no machine-id or DMI data, and
  nothing it can read (user agent, core count) is stable across browser updates, so the
  fingerprint is the constant ``{"platform": "browser"}``: ``hardware_integrity`` holds
  here by construction, it never locks a tab down after an update of the browser;
- the boot chain: unverifiable from a tab (``security.secure_boot: true`` refuses to start);
- its storage: the backend, whether ``navigator.storage.persist()`` was granted (without it
  the browser may evict the origin's data) and the origin's quota and usage, which only the
  page can ask; the device's report to central carries them (``storage_facts``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edge_min.platform.inprocess import InProcessPlatform

if TYPE_CHECKING:
    from edge_min.platform.boot import BootChain


class BrowserPlatform(InProcessPlatform):
    """The in-process platform of a Pyodide Web Worker, with the page's view of the link."""

    name = "browser"
    runs_commands = False

    def __init__(self, *, online: bool = False) -> None:
        #: Whether central is reachable, as the page last said (``navigator.onLine``).
        self.online = online
        #: ``{"backend", "persisted", "quota", "usage"}`` as the page last said, or None.
        self.storage: dict[str, Any] | None = None

    def storage_facts(self) -> dict[str, Any] | None:
        """The tab's storage as the page last said (``edgeMin``'s ``storage`` call)."""
        return None if self.storage is None else dict(self.storage)

    def hardware_facts(self) -> dict[str, str]:
        """The constant fingerprint of a tab (see the module doc)."""
        return {"platform": "browser"}

    def can_reach(self, host: str, port: int, timeout: float) -> bool:
        """No sockets in a worker: what the page last said about the link."""
        return self.online

    def boot_chain(self) -> BootChain:
        """Unverifiable: a page cannot see how its host booted."""
        from edge_min.platform.boot import BootChain

        return BootChain(
            missing=("no boot chain to verify in a browser tab (the browser platform)",)
        )
