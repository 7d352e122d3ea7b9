"""Read-only views of workflows and executions, shared by the CLI and the API."""

from __future__ import annotations

from typing import Any

from edge_min.errors import NotFound


def workflow_view(row: dict[str, Any], *, full: bool) -> dict[str, Any]:
    """A stored workflow as JSON; ``full`` adds the parsed definition."""
    view = {
        "id": row["id"],
        "name": row["name"],
        "version": row["version"],
        "updated_at": row["updated_at"],
        "sync_status": row["sync_status"],
    }
    if full:
        view["definition"] = row["definition"]
    return view


def _step_view(row: dict[str, Any]) -> dict[str, Any]:
    metrics = row.get("metrics") or {}
    return {
        "step": row["id"].split(":", 1)[1],
        "id": row["id"],
        "agent_id": row["agent_id"],
        "status": row["status"],
        "attempt": metrics.get("attempt"),
        "input": row.get("input"),
        "output": row.get("output"),
        "error": metrics.get("error"),
        "started_at": row["started_at"],
        "completed_at": row.get("completed_at"),
        "metrics": metrics,
    }


def describe_execution(store: Any, execution_id: str) -> dict[str, Any]:
    """One run with its workflow's name and every step recorded so far."""
    row = store.executions.get(execution_id)
    if row is None:
        raise NotFound(f"no execution {execution_id!r}; list them with `edge-min exec list`")
    wf = store.workflows.get(row["workflow_id"])
    steps = [_step_view(s) for s in store.agent_executions.list(workflow_execution_id=execution_id)]
    return {
        "id": row["id"],
        "workflow": wf["name"] if wf else None,
        "workflow_id": row["workflow_id"],
        "status": row["status"],
        "input": row.get("input"),
        "output": row.get("output"),
        "started_at": row["started_at"],
        "completed_at": row.get("completed_at"),
        "steps": steps,
    }


def list_executions(store: Any, status: str | None = None, limit: int = 100) -> list[dict]:
    """Runs, newest first, optionally of one status."""
    rows = store.executions.list(status=status, limit=limit)
    names = {w["id"]: w["name"] for w in store.workflows.list()}
    return [
        {
            "id": r["id"],
            "workflow": names.get(r["workflow_id"]),
            "status": r["status"],
            "started_at": r["started_at"],
            "completed_at": r.get("completed_at"),
        }
        for r in rows
    ]
