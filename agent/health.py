"""The agent's HTTP port: /healthz for probes, plus the pages of ``agent/web`` (live view, pictures,
/readyz, /metrics) and the control API, behind HTTP_TOKEN when one is set.

The listening socket is bound before any model loads (:func:`bind_health_socket`), so a port in
use or an address that is not this machine's is a one-line configuration error at once, not a
traceback after minutes of model download.
"""

from __future__ import annotations

import errno
import socket
from typing import TYPE_CHECKING, Any

from aiohttp import web

from edge_agent.agent.errors import ConfigError
from edge_agent.agent.web.errors import error_middleware
from edge_agent.agent.web.metrics import add_metrics_route
from edge_agent.agent.web.page import add_page_routes
from edge_agent.agent.web.pictures import add_picture_routes
from edge_agent.agent.web.readiness import add_readiness_route
from edge_agent.pipelines.sinks.encoding import to_json

if TYPE_CHECKING:
    from edge_agent.agent.supervisor import Supervisor

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


def json_response(data: Any, status: int = 200) -> web.Response:
    """aiohttp's json_response with the agent's one JSON encoder (strict JSON, NaN -> null)."""
    return web.json_response(data, status=status, dumps=to_json)


def bind_health_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``; :class:`ConfigError` naming HEALTH_HOST or
    HEALTH_PORT when the address is not this machine's, the port is taken or needs privileges."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(
            f"HEALTH_HOST={host!r} does not resolve ({reason}); accepted: an address of this machine, "
            "e.g. 127.0.0.1 (local only), 0.0.0.0 (every interface) or ::"
        ) from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart within TIME_WAIT
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"HEALTH_PORT={port} is already in use on {host} (another edge-agent or another service?); "
                "choose a free port or stop the other process"
            ) from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise ConfigError(
                f"HEALTH_PORT={port} needs privileges this user does not have; use a port above 1023"
            ) from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ConfigError(
                f"HEALTH_HOST={host!r} is not an address of this machine; accepted: 127.0.0.1 (local only), "
                "0.0.0.0 (every interface), :: or the address of one of its interfaces"
            ) from None
        raise ConfigError(f"cannot listen on HEALTH_HOST={host!r} HEALTH_PORT={port}: {exc.strerror or exc}") from None
    return sock


def check_health_address(host: str) -> None:
    """HEALTH_HOST must be an address of this machine (checked by binding a free port on it)."""
    bind_health_socket(host, 0).close()


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
    return runner
