"""The local API's routes for workflows, runs and agents.

=======  ==============================  ==========  =========================================
method   path                            permission  answer
=======  ==============================  ==========  =========================================
GET      /workflows                      read        stored workflows
POST     /workflows                      write       add or replace a definition (YAML/JSON)
GET      /workflows/{name}               read        one workflow with its definition
POST     /workflows/{name}/run           execute     queue a run; body is the input JSON
GET      /executions?status=S            read        runs, newest first
GET      /executions/{id}                read        one run with its steps
POST     /executions/{id}/cancel         execute     cancel a run
GET      /agents                         read        registered agents
POST     /agents                         configure   add an agent from its config (YAML/JSON)
GET      /agents/{name}                  read        one agent's config
POST     /agents/{name}/invoke           execute     run the agent once; body is its input
=======  ==============================  ==========  =========================================

Reads use the serving thread's own connection (``api.reads()``); writes run on the
runtime's loop thread (``api.on_loop``), the only one that touches the engine.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from edge_min.routing import ApiError, Request, Response
from edge_min.subsystem import ApiContext, ApiRoute, remeasured
from edge_min.workflows.views import describe_execution, list_executions, workflow_view

if TYPE_CHECKING:
    from edge_min.workflows.subsystem import Workflows


def body_text(request: Request) -> str:
    """A body that is YAML or JSON text (a definition, an agent config)."""
    if not request.body:
        raise ApiError(400, "empty_body", "send the definition as YAML or JSON in the body")
    try:
        return request.body.decode()
    except UnicodeDecodeError as exc:
        raise ApiError(400, "bad_body", "the body must be UTF-8 text") from exc


def workflow_routes(sub: Workflows, api: ApiContext) -> list[ApiRoute]:
    """Every route of workflows, runs and agents over ``sub``'s engine and agents."""

    def workflows(_: Request) -> list[dict[str, Any]]:
        return [workflow_view(row, full=False) for row in api.reads().workflows.list()]

    def add_workflow(request: Request) -> Response:
        text = body_text(request)

        def add() -> Any:
            row = sub.engine.add_workflow(text, origin="request body")
            sub.refresh_triggers()
            return row

        return Response(201, workflow_view(api.on_loop(add), full=True))

    def workflow(request: Request) -> dict[str, Any]:
        row = api.reads().workflows.get_by_name(request.params["name"])
        if row is None:
            raise ApiError(404, "not_found", f"no workflow named {request.params['name']!r}")
        return workflow_view(row, full=True)

    def run_workflow(request: Request) -> Response:
        name, value = request.params["name"], request.json()
        execution_id = api.on_loop(lambda: sub.engine.submit(name, value))
        return Response(202, {"execution_id": execution_id})

    def executions(request: Request) -> list[dict[str, Any]]:
        limit_text = request.query.get("limit", "100")
        if not limit_text.isdigit():
            raise ApiError(400, "bad_query", f"limit must be a whole number, got {limit_text!r}")
        status = request.query.get("status")
        return list_executions(api.reads(), status, int(limit_text))

    def execution(request: Request) -> dict[str, Any]:
        return describe_execution(api.reads(), request.params["id"])

    def cancel(request: Request) -> dict[str, Any]:
        execution_id = request.params["id"]
        api.on_loop(lambda: sub.engine.cancel(execution_id))
        return describe_execution(api.reads(), execution_id)

    def agents(_: Request) -> list[dict[str, Any]]:
        return [
            {"name": a["name"], "type": a["type"], "version": a["version"], "id": a["id"]}
            for a in api.reads().agents.list()
        ]

    def add_agent(request: Request) -> Response:
        from edge_min.config import parse_agent_config

        text = body_text(request)
        try:
            data = json.loads(text)
        except ValueError:
            import yaml

            data = yaml.safe_load(text)
        config = parse_agent_config(data, source="request body")

        def add() -> dict[str, Any]:
            with sub.engine.store.atomic():  # the agent and its re-measured baseline together
                row = sub.agents.add(config)
                remeasured(sub.host, f"agent:{config.name}", f"POST /agents ({request.caller})")
            return row

        row = api.on_loop(add)
        return Response(201, {"name": row["name"], "id": row["id"], "version": row["version"]})

    def invoke(request: Request) -> Any:
        name, value = request.params["name"], request.json()
        # The executor is made on the loop thread; the (blocking) call runs on this one.
        api.on_loop(lambda: sub.agents.prepare(name))
        return sub.agents.run_once(name, value)

    def agent(request: Request) -> dict[str, Any]:
        row = api.reads().agents.get_by_name(request.params["name"])
        if row is None:
            raise ApiError(404, "not_found", f"no agent named {request.params['name']!r}")
        return dict(row)

    return [
        ApiRoute("GET", "/workflows", "read", workflows),
        ApiRoute("POST", "/workflows", "write", add_workflow),
        ApiRoute("GET", "/workflows/{name}", "read", workflow),
        ApiRoute("POST", "/workflows/{name}/run", "execute", run_workflow),
        ApiRoute("GET", "/executions", "read", executions),
        ApiRoute("GET", "/executions/{id}", "read", execution),
        ApiRoute("POST", "/executions/{id}/cancel", "execute", cancel),
        ApiRoute("GET", "/agents", "read", agents),
        ApiRoute("POST", "/agents", "configure", add_agent),
        ApiRoute("GET", "/agents/{name}", "read", agent),
        ApiRoute("POST", "/agents/{name}/invoke", "execute", invoke),
    ]
