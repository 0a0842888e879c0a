"""``/readyz``: 200 once every model is loaded and every stream has started, 503 before.

A stream counts as started when its runner runs, whatever its camera does (a camera in backoff is
the runner's business, and ``/healthz`` reports it); readiness is about start-up only, so it agrees
with systemd's READY=1. The body says what is still missing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from edge_agent.pipelines.sinks.encoding import to_json

if TYPE_CHECKING:
    from edge_agent.agent.supervisor import Supervisor


def readiness(supervisor: Supervisor) -> dict[str, Any]:
    config = supervisor.config
    wanted_models = list(dict.fromkeys(config.model_of(stream) for stream in config.streams))
    missing_models = [] if supervisor.ready else [m for m in wanted_models if m not in supervisor.models]
    missing_streams = [] if supervisor.ready else [s.name for s in config.streams if s.name not in supervisor.streams]
    return {
        "ready": supervisor.ready,
        "missing": {"models": missing_models, "streams": missing_streams},
        "models": sorted(supervisor.models),
        "streams": {name: record.runner.state for name, record in list(supervisor.streams.items())},
    }


def add_readiness_route(app: web.Application, supervisor: Supervisor) -> None:
    async def readyz(_: web.Request) -> web.Response:
        body = readiness(supervisor)
        status = 200 if body["ready"] else 503
        return web.json_response(body, status=status, headers={"Cache-Control": "no-store"}, dumps=to_json)

    app.router.add_get("/readyz", readyz)
