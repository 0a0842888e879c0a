"""``/readyz``: 200 once every model is loaded and every stream has started, 503 before.

A stream counts as started when its runner runs, whatever its camera does (a camera in backoff is
the runner's business, and ``/healthz`` reports it); readiness is about start-up only, so it agrees
with systemd's READY=1. The body says what is still missing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from agent.supervisor import Supervisor


def readiness(supervisor: Supervisor) -> dict[str, Any]:
    streams = supervisor.config.streams
    wanted_models = list(dict.fromkeys(stream.model_id for stream in streams))
    missing_models = [] if supervisor.ready else [m for m in wanted_models if m not in supervisor.stages]
    missing_streams = [] if supervisor.ready else [s.name for s in streams if s.name not in supervisor.runners]
    return {
        "ready": supervisor.ready,
        "missing": {"models": missing_models, "streams": missing_streams},
        "models": sorted(supervisor.stages),
        "streams": {name: runner.state for name, runner in list(supervisor.runners.items())},
    }


def add_readiness_route(app: web.Application, supervisor: Supervisor) -> None:
    async def readyz(_: web.Request) -> web.Response:
        body = readiness(supervisor)
        return web.json_response(body, status=200 if body["ready"] else 503, headers={"Cache-Control": "no-store"})

    app.router.add_get("/readyz", readyz)
