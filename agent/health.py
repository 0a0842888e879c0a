"""The agent's HTTP port: /healthz for probes, plus the pages of ``agent/web`` (live view, pictures,
/readyz, /metrics) and the control API, behind HTTP_TOKEN when one is set."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from agent.web.errors import error_middleware
from agent.web.metrics import add_metrics_route
from agent.web.page import add_page_routes
from agent.web.pictures import add_picture_routes
from agent.web.readiness import add_readiness_route

if TYPE_CHECKING:
    from agent.supervisor import Supervisor

HEALTHY_STATES = {"streaming", "finished"}
# Longest a stop waits for requests in progress (MJPEG viewers are told to end at once).
SHUTDOWN_GRACE_S = 2.0


async def start_health_server(
    supervisor: Supervisor, host: str, port: int, token: str | None = None
) -> web.AppRunner:
    async def healthz(_: web.Request) -> web.Response:
        stats = supervisor.stats()
        states = {name: entry.get("state") for name, entry in stats["streams"].items()}
        # Healthy while at least one stream delivers: one dead camera must not get the whole
        # container restarted and take the working cameras down with it.
        ok = any(state in HEALTHY_STATES for state in states.values())
        return web.json_response({"ok": ok, "streams": states}, status=200 if ok else 503)

    app = web.Application(middlewares=[error_middleware])
    if token is not None:
        from agent.web.auth import add_token_check

        add_token_check(app, token)
    app.router.add_get("/healthz", healthz)
    add_readiness_route(app, supervisor)
    add_metrics_route(app, supervisor)
    add_page_routes(app, supervisor)
    add_picture_routes(app, supervisor)
    if supervisor.config.agent.control_api:
        from agent.control_api import add_control_routes

        add_control_routes(app, supervisor)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_GRACE_S)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
