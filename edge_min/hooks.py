"""Target hooks: what a target learns from the runtime, told by the runtime itself.

A target (the gateway's systemd unit, the browser worker, the firmware init) registers
``TargetHooks`` when it starts a serving runtime (``edge_min.serving``); the runtime calls:

- ``serving(address)`` once its API answers on ``address`` (host, port, TLS or not; None
  where there is no local API, as in a browser);
- ``alive()`` on every turn of its loop (a target rate-limits what it does with it:
  systemd's ``WATCHDOG=1``);
- ``stopping()`` when it begins to stop (a signal, or its host asked);
- ``fatal(error)`` when it cannot go on (the error, before the process exits non-zero).

No target scrapes /proc or probes its own API to learn what the runtime already knows.
``Hooks`` fans every call out to several, and one failing hook never stops the runtime.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("edge_min.hooks")


@dataclass(frozen=True)
class ServingAddress:
    """Where the local API answers."""

    host: str
    port: int
    tls: bool

    @property
    def url(self) -> str:
        """``http(s)://host:port``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"


class TargetHooks(Protocol):
    """What a target may be told; implement the ones that matter to it."""

    def serving(self, address: ServingAddress | None) -> None:
        """The runtime serves (its API at ``address``, if it has one)."""
        ...

    def alive(self) -> None:
        """The loop took another turn."""
        ...

    def stopping(self) -> None:
        """The runtime is stopping."""
        ...

    def fatal(self, error: BaseException) -> None:
        """The runtime cannot go on."""
        ...


class NoHooks:
    """Hooks that do nothing: a base for targets that need only some of them."""

    def serving(self, address: ServingAddress | None) -> None:
        """Nothing."""

    def alive(self) -> None:
        """Nothing."""

    def stopping(self) -> None:
        """Nothing."""

    def fatal(self, error: BaseException) -> None:
        """Nothing."""


class Hooks:
    """Several targets' hooks called in order; an exception in one is logged, not raised."""

    def __init__(self, hooks: Iterable[TargetHooks] = ()) -> None:
        self.hooks = list(hooks)

    def _each(self, what: str, *args: object) -> None:
        for hook in self.hooks:
            try:
                getattr(hook, what)(*args)
            except Exception:  # a target's bug must not stop the runtime
                log.exception("target hook %s.%s failed", type(hook).__name__, what)

    def serving(self, address: ServingAddress | None) -> None:
        """Tell every hook the runtime serves."""
        self._each("serving", address)

    def alive(self) -> None:
        """Tell every hook the loop turned."""
        self._each("alive")

    def stopping(self) -> None:
        """Tell every hook the runtime stops."""
        self._each("stopping")

    def fatal(self, error: BaseException) -> None:
        """Tell every hook the runtime cannot go on."""
        self._each("fatal", error)

    @contextmanager
    def fatal_on_error(self) -> Iterator[None]:
        """Around a serving loop: an error escaping it is told as ``fatal``, then raised."""
        try:
            yield
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            self.fatal(exc)
            raise
