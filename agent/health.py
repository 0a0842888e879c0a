"""The agent's HTTP port: /healthz for probes, plus the pages of ``agent/web`` (live view, pictures,
/readyz, /metrics) and the control API, behind HTTP_TOKEN when one is set.

The listening socket is bound before any model loads (:func:`bind_health_socket`), so a port in
use or an address that is not this machine's is a one-line configuration error at once, not a
traceback after minutes of model download.
"""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING, Any

from aiohttp import web

from edge_agent.agent.web.errors import error_middleware
from edge_agent.agent.web.listen import bind_health_socket, check_health_address
from edge_agent.agent.web.metrics import add_metrics_route
from edge_agent.agent.web.page import add_page_routes
from edge_agent.agent.web.pictures import add_picture_routes
from edge_agent.agent.web.readiness import add_readiness_route
from edge_agent.agent.web.responses import json_response

if TYPE_CHECKING:
    from edge_agent.agent.supervisor import Supervisor

log = logging.getLogger("edge_agent.health")

__all__ = [
    "bind_health_socket",
    "check_health_address",
    "json_response",
    "listening_line",
    "mqtt_health",
    "start_health_server",
]

HEALTHY_STATES = {"streaming", "finished"}
# Longest a stop waits for requests in progress (MJPEG viewers are told to end at once).
SHUTDOWN_GRACE_S = 2.0


def mqtt_health(counters: dict[str, Any]) -> dict[str, Any]:
    """The MQTT part of /healthz: informative only, a broker outage never fails the probe."""
    return {
        "connected": counters.get("connected"),
        "queued": counters.get("queued"),
        "in_flight": counters.get("in_flight"),
        "oldest_queued_age_s": counters.get("oldest_queued_age_s"),
        "outbox": counters.get("outbox"),
        "last_error": counters.get("last_error"),
    }


def listening_line(host: str, port: int, control_api: bool, token: bool) -> str:
    """The one log line that says where the HTTP port serves what, and whether a token is needed."""
    every = host in ("0.0.0.0", "::", "")
    shown = socket.gethostname() if every else host
    base = f"http://{f'[{shown}]' if ':' in shown else shown}:{port}"
    parts = [f"live view {base}/", f"metrics {base}/metrics"]
    if control_api:
        parts.append(f"control API {base}/streams")
    parts.append(f"probes {base}/healthz, {base}/readyz")
    where = " (listening on every interface)" if every else ""
    if token:
        access = "HTTP_TOKEN needed on all but the probes (Authorization: Bearer, or log in on the page)"
    else:
        access = "no token needed"
    return f"HTTP port{where}: {', '.join(parts)}; {access}"


async def start_health_server(supervisor: Supervisor, sock: socket.socket, token: str | None = None) -> web.AppRunner:
    """Serve the HTTP port on ``sock`` (from :func:`bind_health_socket`); every route but the
    probes behind ``token`` when one is given. Started before the models load (``/readyz``)."""

    async def healthz(_: web.Request) -> web.Response:
        stats = supervisor.stats()
        states = {name: entry.get("state") for name, entry in stats["streams"].items()}
        # Healthy while at least one stream delivers: one dead camera must not get the whole
        # container restarted and take the working cameras down with it.
        ok = any(state in HEALTHY_STATES for state in states.values())
        body: dict[str, Any] = {"ok": ok, "streams": states, "models": sorted(stats.get("models", {}))}
        mqtt = stats.get("sinks", {}).get("MqttSink")
        if mqtt:
            body["mqtt"] = mqtt_health(mqtt)
        return json_response(body, status=200 if ok else 503)

    app = web.Application(middlewares=[error_middleware])
    if token is not None:
        from edge_agent.agent.web.auth import add_token_check

        add_token_check(app, token)
    app.router.add_get("/healthz", healthz)
    add_readiness_route(app, supervisor)
    add_metrics_route(app, supervisor)
    add_page_routes(app, supervisor)
    add_picture_routes(app, supervisor)
    from edge_agent.agent.web.events import add_event_routes

    add_event_routes(app, supervisor)
    if supervisor.config.agent.control_api:
        from edge_agent.agent.control_api import add_control_routes

        add_control_routes(app, supervisor)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_GRACE_S)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    host, port = sock.getsockname()[:2]
    log.info("%s", listening_line(host, port, supervisor.config.agent.control_api, token is not None))
    return runner
