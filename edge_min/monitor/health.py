"""Health checks: configured commands with a hard timeout, and built-in checks by name.

A check's ``command`` is a shell line run through ``edge_min.platform.commands.run_command``;
it passes when it exits 0 within ``timeout`` (at the timeout its process group is killed and
the check counts as failed). ``builtin:database``, ``builtin:sync`` and ``builtin:scheduler``
run in-process instead, so a device without ``systemctl``, ``sqlite3`` or ``curl`` can still
check itself; and when a configured command's program is missing (exit 127), a check named
like the spec's (``service_status``, ``database_check``, ``sync_check``) or like a built-in
falls back to the built-in that checks the same thing, and says so in its result.
"""

from __future__ import annotations

import logging
import shlex
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from edge_min.clock import Clock, iso
from edge_min.config.monitoring import HealthCheckSpec
from edge_min.errors import ConfigError

log = logging.getLogger("edge_min.monitor")

BUILTIN_PREFIX = "builtin:"
BUILTINS = ("database", "sync", "scheduler")
# The spec's default checks and the built-in that checks the same thing without the tool.
FALLBACKS = {"service_status": "scheduler", "database_check": "database", "sync_check": "sync"}
NOT_FOUND = 127
OUTPUT_TAIL = 500  # characters of a check's output kept for /health

CheckFn = Callable[[], tuple[bool, str]]
CommandRunner = Callable[[str, float], tuple[int | None, str, bool]]


@dataclass(frozen=True)
class CheckResult:
    """One run of a check: ``status`` is ``pass`` or ``fail``; ``via`` says what ran."""

    name: str
    status: str
    output: str
    checked_at: float
    duration: float
    via: str
    returncode: int | None = None
    timed_out: bool = False

    def view(self) -> dict[str, Any]:
        """JSON-ready form for /health."""
        d = asdict(self)
        d["checked_at"] = iso(self.checked_at)
        d["duration"] = round(self.duration, 3)
        return d


def _run_command(command: str, timeout: float) -> tuple[int | None, str, bool]:
    from edge_min.platform.commands import run_command

    rc, out, timed_out, _ = run_command(command, timeout)
    return rc, out, timed_out


def _program(command: str) -> str | None:
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    return words[0] if words else None


class HealthCheck:
    """One configured check, its schedule and its last result."""

    def __init__(self, spec: HealthCheckSpec, builtins: Mapping[str, CheckFn]) -> None:
        self.spec = spec
        self.name = spec.name
        self.builtin: str | None = None
        self.fallback: str | None = None
        command = spec.command.strip()
        if command.startswith(BUILTIN_PREFIX):
            which = command[len(BUILTIN_PREFIX) :].strip()
            # The runtime's own, and whatever built-ins its subsystems contribute.
            known = [*BUILTINS, *(b for b in builtins if b not in BUILTINS)]
            if which not in known:
                raise ConfigError(
                    f"health check {spec.name!r}: unknown built-in {which!r}; "
                    f"use one of {', '.join(BUILTIN_PREFIX + b for b in known)}",
                    path=f"health_checks.{spec.name}.command",
                    value=spec.command,
                )
            self.builtin = which
        else:
            candidate = FALLBACKS.get(spec.name, spec.name)
            self.fallback = candidate if candidate in builtins else None
        self.builtins = builtins
        self.next_due: float | None = None  # monotonic; None: run at the first chance
        self.last: CheckResult | None = None
        self.consecutive_failures = 0
        self._use_fallback = False
        self._why_fallback = ""

    def run(self, clock: Clock, runner: CommandRunner | None = None) -> CheckResult:
        """Run the check now and remember the result."""
        wall, began = clock.time(), clock.monotonic()
        if self.builtin is not None:
            result = self._run_builtin(self.builtin, wall, began, clock, "")
        elif self._use_fallback and self.fallback:
            result = self._run_builtin(self.fallback, wall, began, clock, self._why_fallback)
        else:
            result = self._run_command(wall, began, clock, runner or _run_command)
        before = self.last.status if self.last else None
        self.last = result
        self.consecutive_failures = 0 if result.status == "pass" else self.consecutive_failures + 1
        self.next_due = clock.monotonic() + self.spec.interval
        # Log changes only: a check failing every 5 minutes for a day is one line, not 288.
        if result.status != before:
            detail = " ".join(result.output.split())[:200] or "no output"
            if result.status == "pass":
                if before is not None:
                    log.info("health check %s passes again", self.name)
            else:
                log.warning("health check %s failed: %s", self.name, detail)
        return result

    def _run_command(
        self, wall: float, began: float, clock: Clock, runner: CommandRunner
    ) -> CheckResult:
        program = _program(self.spec.command)
        if self.fallback and program and shutil.which(program) is None:
            # Not spawning at all when the tool is missing is cheaper and clearer.
            return self._switch(f"{program} not found", wall, began, clock)
        rc, out, timed_out = runner(self.spec.command, self.spec.timeout)
        if rc == NOT_FOUND and self.fallback and not timed_out:
            return self._switch(
                f"{program or 'a command'} not found (exit 127)", wall, began, clock
            )
        output = out.strip()[-OUTPUT_TAIL:]
        if timed_out:
            output = (f"timed out after {self.spec.timeout:g}s (killed); " + output).strip("; ")
        ok = rc == 0 and not timed_out
        duration = self.spec.timeout if timed_out else max(0.0, clock.monotonic() - began)
        return CheckResult(
            self.name, "pass" if ok else "fail", output, wall, duration, "command", rc, timed_out
        )

    def _switch(self, why: str, wall: float, began: float, clock: Clock) -> CheckResult:
        assert self.fallback is not None
        self._use_fallback = True
        self._why_fallback = why
        log.info("health check %s: %s, using builtin:%s", self.name, why, self.fallback)
        return self._run_builtin(self.fallback, wall, began, clock, why)

    def _run_builtin(
        self, which: str, wall: float, began: float, clock: Clock, why: str
    ) -> CheckResult:
        fn = self.builtins.get(which)
        if fn is None:
            ok, detail = False, f"no built-in {which!r} check on this runtime"
        else:
            try:
                ok, detail = fn()
            except Exception as exc:  # a crashing check is a failing check, not a crash
                ok, detail = False, f"{type(exc).__name__}: {exc}"
        if why:
            detail = f"{detail} ({why}; ran builtin:{which})"
        return CheckResult(
            self.name,
            "pass" if ok else "fail",
            detail[-OUTPUT_TAIL:],
            wall,
            max(0.0, clock.monotonic() - began),
            BUILTIN_PREFIX + which,
        )

    def view(self) -> dict[str, Any]:
        """The check and its last result, for /health."""
        last = self.last.view() if self.last else None
        return {
            "name": self.name,
            "status": self.last.status if self.last else "unknown",
            "interval": self.spec.interval,
            "consecutive_failures": self.consecutive_failures,
            "last": last,
        }


class HealthChecks:
    """Every configured check; ``run_due`` runs those whose interval has passed."""

    def __init__(
        self,
        specs: Sequence[HealthCheckSpec],
        builtins: Mapping[str, CheckFn],
        clock: Clock,
        runner: CommandRunner | None = None,
    ) -> None:
        self.clock = clock
        self.runner = runner
        self.checks = {s.name: HealthCheck(s, builtins) for s in specs}

    def run_due(self) -> list[CheckResult]:
        """Run every check that is due (all of them on the first call); their results."""
        out = []
        for check in self.checks.values():
            if check.next_due is None or self.clock.monotonic() >= check.next_due:
                out.append(check.run(self.clock, self.runner))
        return out

    def run(self, name: str) -> CheckResult:
        """Run one check now, due or not."""
        return self.checks[name].run(self.clock, self.runner)

    def next_due(self) -> float | None:
        """The monotonic time the next check is due (None: one has never run)."""
        dues = [c.next_due for c in self.checks.values()]
        if not dues or any(d is None for d in dues):
            return None
        return min(d for d in dues if d is not None)

    def overall(self) -> str:
        """``unhealthy`` if a check's last run failed, ``unknown`` if one never ran, else
        ``healthy``."""
        statuses = [c.last.status if c.last else "unknown" for c in self.checks.values()]
        if "fail" in statuses:
            return "unhealthy"
        if "unknown" in statuses:
            return "unknown"
        return "healthy"

    def views(self) -> list[dict[str, Any]]:
        """Each check's last result."""
        return [c.view() for c in self.checks.values()]


# Built-in checks: factories the runtime fills with its own parts.


def database_check(backend: Any) -> CheckFn:
    """Passes when the store answers a read (what ``sqlite3 db 'SELECT 1;'`` checks)."""

    def check() -> tuple[bool, str]:
        backend.count("meta")
        return True, "database answers"

    return check


def sync_check(failures: Callable[[], int], max_failures: int = 3) -> CheckFn:
    """Passes while consecutive sync failures stay at or below ``max_failures``."""

    def check() -> tuple[bool, str]:
        n = int(failures())
        if n > max_failures:
            return False, f"{n} consecutive sync failures (more than {max_failures})"
        return True, f"{n} consecutive sync failure(s)"

    return check


def scheduler_check(
    next_deadline: Callable[[], float | None], clock: Clock, grace: float = 60.0
) -> CheckFn:
    """Passes unless the scheduler's next job is overdue by more than ``grace`` seconds."""

    def check() -> tuple[bool, str]:
        deadline = next_deadline()
        if deadline is None:
            return True, "scheduler idle (no jobs)"
        late = clock.monotonic() - deadline
        if late > grace:
            return False, f"scheduler is {late:.0f}s behind its next job: the loop is stuck"
        return True, "scheduler on time"

    return check
