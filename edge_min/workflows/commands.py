"""The ``workflow``, ``exec`` and ``agent`` commands (declared by the workflows subsystem)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_min.errors import EdgeError, UsageError
from edge_min.subsystem import Command, CommandContext, remeasured


def print_json(value: Any) -> None:
    """The CLI's JSON output: indented, keys sorted."""
    print(json.dumps(value, indent=2, sort_keys=True, default=str))


def _input(args: argparse.Namespace) -> Any:
    try:
        return json.loads(args.input) if args.input is not None else None
    except ValueError as exc:
        raise UsageError(f"--input is not valid JSON: {exc}") from exc


def workflow_add(ctx: CommandContext) -> int:
    """Validate and store a workflow definition file."""
    with ctx.opened() as runtime:
        row = runtime.engine.add_workflow(Path(ctx.args.file).read_text(), origin=ctx.args.file)
    print(f"{row['name']} {row['version']} ({row['id']})")
    return 0


def workflow_list(ctx: CommandContext) -> int:
    """List stored workflows."""
    from edge_min.workflows.views import workflow_view

    with ctx.opened() as runtime:
        print_json([workflow_view(r, full=False) for r in runtime.store.workflows.list()])
    return 0


def _wait_for(
    store: Any, execution_id: str, timeout: float | None, tick: Callable[[], float]
) -> Any:
    from edge_min.workflows.views import describe_execution

    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        view = describe_execution(store, execution_id)
        if view["status"] in ("succeeded", "failed", "cancelled"):
            return view
        if deadline is not None and time.monotonic() > deadline:
            raise UsageError(f"run {execution_id} still {view['status']} after {timeout}s")
        time.sleep(min(tick(), 0.05))


def workflow_run(ctx: CommandContext) -> int:
    """Queue a run for the runtime holding the data dir, or run it here when none does."""
    args = ctx.args
    value = _input(args)
    with ctx.holding() as foreground, ctx.opened(threads=foreground) as runtime:
        execution_id = runtime.engine.submit(args.name, value)
        print(execution_id, flush=True)
        if not foreground and not args.wait:
            return 0
        tick = runtime.tick if foreground else (lambda: 0.2)
        view = _wait_for(runtime.store, execution_id, args.timeout, tick)
        if args.wait:
            print_json(view)
        return 0 if view["status"] == "succeeded" else 1


def exec_list(ctx: CommandContext) -> int:
    """List runs, newest first."""
    from edge_min.workflows.views import list_executions

    with ctx.opened() as runtime:
        print_json(list_executions(runtime.store, ctx.args.status, ctx.args.limit))
    return 0


def exec_show(ctx: CommandContext) -> int:
    """Show one run with its steps."""
    from edge_min.workflows.views import describe_execution

    with ctx.opened() as runtime:
        print_json(describe_execution(runtime.store, ctx.args.id))
    return 0


def agent_add(ctx: CommandContext) -> int:
    """Validate an edge-agent-config.yaml and register the agent."""
    from edge_min.config import load_agent_config

    config = load_agent_config(ctx.args.file)
    with ctx.opened() as runtime:
        runtime.gate.check("agent add")
        # One transaction: a running runtime never sees the agent without its new baseline.
        with runtime.store.atomic():
            row = runtime.agents.add(config)
            remeasured(runtime, f"agent:{config.name}", f"agent add {ctx.args.file}")
    print(f"{row['name']} {row['version']} ({row['id']})")
    return 0


def agent_run(ctx: CommandContext) -> int:
    """Invoke an agent once and print its output JSON."""
    value = _input(ctx.args)
    with ctx.opened() as runtime:
        try:
            output = runtime.agents.run_once(ctx.args.name, value)
        except EdgeError as exc:  # the agent failed: exit 1, as a failed run does
            print(f"edge-min: error: {exc}", file=sys.stderr)
            return 1
    print(json.dumps(output, sort_keys=True))
    return 0


def agent_list(ctx: CommandContext) -> int:
    """List registered agents."""
    with ctx.opened() as runtime:
        print_json(
            [
                {"name": a["name"], "type": a["type"], "version": a["version"]}
                for a in runtime.store.agents.list()
            ]
        )
    return 0


def agent_show(ctx: CommandContext) -> int:
    """Show one agent's stored config."""
    with ctx.opened() as runtime:
        row = runtime.store.agents.get_by_name(ctx.args.name)
        if row is None:
            raise UsageError(
                f"no agent named {ctx.args.name!r}; list them with `edge-min agent list`"
            )
        print_json(row)
    return 0


def _file(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="a YAML or JSON file")


def _run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="the workflow's name")
    p.add_argument("--input", help="the run's input as JSON")
    p.add_argument("--wait", action="store_true", help="wait and print the finished run")
    p.add_argument("--timeout", type=float, help="give up waiting after this many seconds")


def _list_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--status",
        choices=["queued", "running", "succeeded", "failed", "cancelled"],
        help="only runs with this status",
    )
    p.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")


def _id(p: argparse.ArgumentParser) -> None:
    p.add_argument("id", help="the execution id")


def _agent_name(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="the agent's name")


def _agent_run_arguments(p: argparse.ArgumentParser) -> None:
    _agent_name(p)
    p.add_argument("--input", help="the input as JSON (a JSON string for text agents)")


COMMANDS = [
    Command(
        ("workflow", "add"),
        "add or replace a workflow definition",
        "edge-min workflow add examples/workflows/feedback-triage.yaml",
        workflow_add,
        _file,
    ),
    Command(("workflow", "list"), "list workflows", "edge-min workflow list", workflow_list),
    Command(
        ("workflow", "run"),
        "run a workflow",
        'edge-min workflow run feedback-triage --input \'{"text": "great"}\' --wait',
        workflow_run,
        _run_arguments,
    ),
    Command(
        ("exec", "list"),
        "list runs",
        "edge-min exec list --status failed",
        exec_list,
        _list_arguments,
    ),
    Command(
        ("exec", "show"), "show a run and its steps", "edge-min exec show 3f2a...", exec_show, _id
    ),
    Command(
        ("agent", "add"),
        "register an agent from its config file",
        "edge-min agent add text-classifier-lite.yaml",
        agent_add,
        _file,
    ),
    Command(
        ("agent", "run"),
        "invoke an agent once and print its output",
        "edge-min agent run text-classifier-lite --input '\"works great\"'",
        agent_run,
        _agent_run_arguments,
    ),
    Command(("agent", "list"), "list agents", "edge-min agent list", agent_list),
    Command(
        ("agent", "show"),
        "show an agent's config",
        "edge-min agent show notify",
        agent_show,
        _agent_name,
    ),
]
