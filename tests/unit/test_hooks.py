"""Target hooks: fanned out in order, a failing hook never stops the runtime, errors told."""

from __future__ import annotations

import pytest

from edge_min.hooks import Hooks, NoHooks, ServingAddress


class Recorder(NoHooks):
    def __init__(self) -> None:
        self.told: list[str] = []

    def serving(self, address: ServingAddress | None) -> None:
        self.told.append(f"serving {address.url if address else None}")

    def fatal(self, error: BaseException) -> None:
        self.told.append(f"fatal {error}")


class Broken(NoHooks):
    def serving(self, address: ServingAddress | None) -> None:
        raise RuntimeError("a target's bug")


def test_every_hook_is_told_even_after_one_fails() -> None:
    first, last = Recorder(), Recorder()
    hooks = Hooks([first, Broken(), last])
    hooks.serving(ServingAddress("::1", 8443, tls=True))
    assert first.told == last.told == ["serving https://[::1]:8443"]


def test_an_error_escaping_the_loop_is_told_as_fatal_and_raised() -> None:
    rec = Recorder()
    hooks = Hooks([rec])
    with pytest.raises(OSError, match="disk full"), hooks.fatal_on_error():
        raise OSError("disk full")
    assert rec.told == ["fatal disk full"]
    with pytest.raises(KeyboardInterrupt), hooks.fatal_on_error():
        raise KeyboardInterrupt  # a person stopping it is not a failure
    assert rec.told == ["fatal disk full"]
