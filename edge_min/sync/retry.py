"""Retrying failed sync attempts: exponential backoff with jitter, as sync-config's ``retry`` says.

Attempt ``n`` (1-based) that failed is followed by a wait of
``min(max_delay, initial_delay * backoff_factor ** (n - 1))`` scaled by a random factor in
``[1 - jitter, 1]`` ("equal jitter": never longer than the cap, never shorter than half of it
with the default jitter of 0.5, so a fleet that lost the link together does not come back in
lock step yet each device still backs off). After ``max_attempts`` failed attempts in a row
the entity gives up for now and waits for its next regular schedule; the count starts over.

``RetryTracker`` is the one form, non-blocking: ``failed(key, now)`` says when ``key`` may
try again, ``succeeded(key)`` resets it; nothing sleeps. The SyncManager schedules with it, and
``edge-min sync`` sleeps between its own attempts for as long as it says.

The RNG is injected (``random.Random(seed)``), so every delay is reproducible in tests.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from edge_min.config.sync import RetryPolicy
from edge_min.errors import ConfigError, EdgeError

DEFAULT_JITTER = 0.5
# Codes a retry cannot cure (the docs' "Failures"): wrong protocol version, wrong or missing
# key, a refused device, a malformed batch. The entity waits for its schedule instead.
PERMANENT_CODES = frozenset(
    {
        "sync_version",
        "sync_key",
        "sync_decrypt",
        "device_not_provisioned",
        "device_decommissioned",
        "node_mismatch",
        "bad_batch",
        "batch_id_reused",
        "config_error",
    }
)


def base_delay(policy: RetryPolicy, attempt: int) -> float:
    """The un-jittered wait after failed attempt ``attempt`` (1-based), capped at max_delay."""
    raw = policy.initial_delay * policy.backoff_factor ** max(0, attempt - 1)
    return float(min(policy.max_delay, raw))


def backoff_delay(
    policy: RetryPolicy, attempt: int, rng: random.Random, jitter: float = DEFAULT_JITTER
) -> float:
    """The jittered wait after failed attempt ``attempt``: in [(1 - jitter) * base, base]."""
    if not 0.0 <= jitter <= 1.0:
        raise ConfigError(
            f"jitter must be within 0..1, got {jitter!r}", path="jitter", value=jitter
        )
    base = base_delay(policy, attempt)
    return base * (1.0 - jitter * rng.random())


def is_retryable(exc: BaseException) -> bool:
    """Whether trying again later may succeed (a cut link, a busy central) or not (a bad key)."""
    if isinstance(exc, EdgeError):
        # A code central sent that this side has no class for travels as remote_code.
        if exc.code in PERMANENT_CODES or exc.details.get("remote_code") in PERMANENT_CODES:
            return False
        return bool(getattr(exc, "retryable", True))
    return isinstance(exc, OSError)


@dataclass
class RetryState:
    """One key's run of failures."""

    attempts: int = 0
    next_at: float | None = None
    gave_up: bool = False


class RetryTracker:
    """Per-key backoff without sleeping: when may ``key`` try again after a failure."""

    def __init__(
        self,
        policy: RetryPolicy,
        rng: random.Random | None = None,
        jitter: float = DEFAULT_JITTER,
    ) -> None:
        self.policy = policy
        self.rng = rng or random.Random()
        self.jitter = jitter
        self._states: dict[str, RetryState] = {}

    def state(self, key: str) -> RetryState:
        """The key's current failure run (a fresh one if it has none)."""
        return self._states.setdefault(key, RetryState())

    def failed(self, key: str, now: float, *, retryable: bool = True) -> float | None:
        """Record a failed attempt at ``now``; the time of the next retry, or None to give up.

        None means the attempts are used up (or the failure is not retryable): the caller
        waits for the key's next regular schedule, and the count starts over.
        """
        st = self.state(key)
        st.attempts += 1
        if not retryable or st.attempts >= self.policy.max_attempts:
            st.attempts = 0
            st.next_at = None
            st.gave_up = True
            return None
        st.gave_up = False
        st.next_at = now + backoff_delay(self.policy, st.attempts, self.rng, self.jitter)
        return st.next_at

    def succeeded(self, key: str) -> None:
        """Forget the key's failures."""
        self._states.pop(key, None)

    def attempts(self, key: str) -> int:
        """Failed attempts in the key's current run."""
        st = self._states.get(key)
        return st.attempts if st else 0

    def reset(self) -> None:
        """Forget every key's failures (a restart)."""
        self._states.clear()
