"""The monitoring subsystem: metrics, health checks and alerts over every other subsystem.

It gathers what the others contribute (their ``metrics()``, ``health_checks()``,
``alert_actions()`` and the first ``uplink()``), so it opens last: ``SUBSYSTEMS`` ends with
it. Contributes the monitor's timed jobs, ``GET /health``, ``/alerts`` and ``/metrics``
(with ``edge_min_job_errors_total`` from the runtime's job error policy), and the
``health`` command.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from edge_min import __version__
from edge_min.errors import EdgeError
from edge_min.routing import Request, Response
from edge_min.subsystem import (
    ApiContext,
    ApiRoute,
    CheckFn,
    Command,
    CommandContext,
    Job,
    Subsystem,
)

if TYPE_CHECKING:
    import argparse

    from edge_min.monitor import Monitor


class Monitoring(Subsystem):
    """The runtime's ``Monitor``."""

    name = "monitor"
    needs = ("storage",)

    monitor: Monitor

    def open(self) -> None:
        """Make the monitor from the config and the other subsystems' contributions."""
        from edge_min.monitor import Monitor, SqlMonitorStore
        from edge_min.store.subsystem import Storage

        host = self.host
        checks: dict[str, CheckFn] = {}
        actions: dict[str, Callable[..., Any]] = {}
        uplinks = []
        for sub in host.subsystems():
            if sub is self:
                continue
            checks.update(sub.health_checks())
            actions.update(sub.alert_actions())
            uplinks.append(sub.uplink())
        uplink = next((u for u in uplinks if u is not None), None)
        storage = host.get(Storage)
        self.monitor = Monitor(
            host.config.monitoring_config,
            host.clock,
            settings=host.config.monitoring,
            store=SqlMonitorStore(storage.store.backend),
            resources=host.platform.resources(str(host.paths.root)),
            runtime_metrics=self._metrics,
            builtins=checks,
            send_metrics=_sender(uplink, "metrics"),
            send_notification=_sender(uplink, "alerts"),
            is_online=lambda: host.online,
            cleanup_tmp=actions.get("cleanup_temp"),
            restart_sync=actions.get("restart_sync"),
        )

    def _metrics(self) -> dict[str, float]:
        values: dict[str, float] = {}
        for sub in self.host.subsystems():
            if sub is not self:
                values.update(sub.metrics())
        return values

    def jobs(self) -> Sequence[Job]:
        """Sampling, health checks and uploads at their configured intervals."""
        return [Job(j.name, j.every, j.fn, j.first) for j in self.monitor.jobs()]

    def routes(self, api: ApiContext) -> Sequence[ApiRoute]:
        """``GET /health``, ``/alerts`` and ``/metrics``."""
        monitor = self.monitor
        runtime = self.host

        def health(_: Request) -> Response:
            # "ok" while healthy (or before the first checks ran); 503 once unhealthy, so a
            # load balancer or systemd watchdog sees it without parsing the body.
            view = dict(monitor.status())
            overall = view.pop("status", "healthy")
            status = "ok" if overall in ("healthy", "starting") else overall
            body = {"status": status, "health": overall, "version": __version__, **view}
            return Response(503 if overall == "unhealthy" else 200, body)

        def alerts(_: Request) -> list[dict[str, Any]]:
            return list(monitor.alerts_view())

        def metrics(_: Request) -> Response:
            from edge_min.monitor import PROMETHEUS_CONTENT_TYPE

            errors: Mapping[str, int] = getattr(runtime, "job_errors", {})
            text = monitor.prometheus() + job_errors_text(errors)
            return Response(200, text, content_type=PROMETHEUS_CONTENT_TYPE)

        return [
            ApiRoute("GET", "/health", "read", health),
            ApiRoute("GET", "/alerts", "read", alerts),
            ApiRoute("GET", "/metrics", "read", metrics),
        ]

    @classmethod
    def commands(cls) -> Sequence[Command]:
        """``health``."""
        return [
            Command(
                ("health",),
                "show health checks; exit 1 when unhealthy",
                "edge-min health --json",
                health_command,
                _health_arguments,
            )
        ]


def job_errors_text(errors: Mapping[str, int]) -> str:
    """``edge_min_job_errors_total{job=...}`` in the Prometheus text format."""
    from edge_min.monitor.prometheus import PREFIX, Family, render

    family = Family(
        PREFIX + "job_errors_total",
        "counter",
        "Failed runs of each timed job since start (logged, then retried with backoff)",
        [({"job": name}, count) for name, count in sorted(errors.items())],
    )
    return render([family])


def _sender(uplink: Callable[[str, Any], None] | None, what: str) -> Callable[[Any], None]:
    def send(payload: Any) -> None:
        if uplink is None:
            # Nothing is lost: the monitor keeps it queued until a sync manager sends it.
            raise EdgeError(f"no sync manager attached; {what} stay queued")
        uplink(f"/api/{what}", payload)

    return send


def _health_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the full status as JSON")


def _print_health(view: dict[str, Any]) -> None:
    print(f"health: {view.get('health', view.get('status'))}")
    for check in view.get("checks", []):
        last = check.get("last") or {}
        output = " ".join(str(last.get("output", "")).split())[:60]
        print(
            f"  {check['name']:<18} {check['status']:<7} via {last.get('via', '-'):<20} "
            f"{last.get('duration', 0):>6}s  {output}"
        )
    firing = view.get("alerts_firing") or []
    print(f"alerts firing: {', '.join(firing) if firing else 'none'}")
    metrics = view.get("metrics") or {}
    if metrics:
        print(f"metrics buffered: {metrics.get('buffered')} (dropped {metrics.get('dropped')})")


def health_command(ctx: CommandContext) -> int:
    """Print each health check's result; exit 1 when unhealthy."""
    from edge_min.errors import UsageError
    from edge_min.security.local import LocalApiError, call_local_api

    config, paths = ctx.context()
    with ctx.holding() as here:
        if here:  # no runtime: open the data directory and run the checks once here
            with ctx.opened(syncing=True) as runtime:  # the sync check is one of them
                runtime.monitor.collect()
                runtime.monitor.run_due_checks()
                view = dict(runtime.monitor.status())
                view["health"] = view["status"]
    if not here:
        base = ctx.running_url() or f"http://{config.api.host}:{config.api.port}"
        try:
            view = call_local_api(config, paths.root, base, "GET", "/health")
        except LocalApiError as exc:
            if exc.answer is None:
                raise UsageError(
                    f"the runtime holds {paths.root} but {base}/health did not answer: {exc}"
                ) from exc
            view = exc.answer  # 503 while unhealthy, with the checks
    if ctx.args.json:
        print(json.dumps(view, indent=2, sort_keys=True, default=str))
    else:
        _print_health(view)
    return 1 if view.get("health", view.get("status")) == "unhealthy" else 0
