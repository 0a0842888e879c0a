"""HTTP /healthz (JSON) and /metrics (Prometheus text) for monitoring and container health checks.

The listening socket is bound before any model loads (:func:`bind_health_socket`), so a port in
use or an address that is not this machine's is a one-line configuration error at once, not a
traceback after minutes of model download.
"""

from __future__ import annotations

import errno
import socket
from typing import TYPE_CHECKING, Any

from aiohttp import web

from agent.errors import ConfigError
from pipelines.sinks.encoding import to_json

if TYPE_CHECKING:
    from agent.supervisor import Supervisor

HEALTHY_STATES = {"streaming", "finished"}

# MQTT sink counters (MqttSink.counters()) -> Prometheus series; kept apart so they move easily.
_MQTT_GAUGES = {
    "queued": ("edge_agent_mqtt_queued", "messages waiting for the broker (not in flight)"),
    "in_flight": ("edge_agent_mqtt_in_flight", "messages sent, not yet acknowledged"),
    "outbox_bytes": ("edge_agent_mqtt_outbox_bytes", "bytes held in the outbox"),
    "oldest_queued_age_s": ("edge_agent_mqtt_oldest_queued_age_seconds", "age of the oldest unacknowledged message"),
}
_MQTT_COUNTERS = {
    "published": ("edge_agent_mqtt_published_total", "messages handed to the broker connection"),
    "acked": ("edge_agent_mqtt_acked_total", "messages the broker acknowledged"),
    "resent": ("edge_agent_mqtt_resent_total", "messages sent again after a connection dropped"),
    "restored": ("edge_agent_mqtt_restored_total", "messages found in the outbox at start"),
    "reconnects": ("edge_agent_mqtt_reconnects_total", "successful connections after the first"),
    "connect_failures": ("edge_agent_mqtt_connect_failures_total", "failed connection attempts"),
}
_MQTT_DROP_CAUSES = {
    "overflow": "dropped_overflow",
    "rejected": "dropped_rejected",
    "undeliverable": "dropped_undeliverable",
    "closed": "dropped_closed",
}


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


def mqtt_metric_lines(counters: dict[str, Any]) -> list[str]:
    lines = [
        "# HELP edge_agent_mqtt_connected 1 while connected to the broker",
        "# TYPE edge_agent_mqtt_connected gauge",
        f"edge_agent_mqtt_connected {int(bool(counters.get('connected')))}",
    ]
    for kind, table in (("gauge", _MQTT_GAUGES), ("counter", _MQTT_COUNTERS)):
        for key, (metric, text) in table.items():
            value = counters.get(key)
            lines += [f"# HELP {metric} {text}", f"# TYPE {metric} {kind}"]
            lines.append(f"{metric} {value if isinstance(value, int | float) else 0}")
    lines += [
        "# HELP edge_agent_mqtt_dropped_total messages given up, by cause",
        "# TYPE edge_agent_mqtt_dropped_total counter",
    ]
    for cause, key in _MQTT_DROP_CAUSES.items():
        lines.append(f'edge_agent_mqtt_dropped_total{{cause="{cause}"}} {int(counters.get(key) or 0)}')
    return lines


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


def _metric_lines(stats: dict[str, Any]) -> list[str]:
    lines = [
        "# TYPE edge_agent_uptime_seconds gauge",
        f"edge_agent_uptime_seconds {stats['uptime_s']}",
    ]
    gauges = {
        "frames_decoded": "edge_agent_stream_frames_decoded_total",
        "dropped": "edge_agent_stream_frames_dropped_total",
        "reconnects": "edge_agent_stream_reconnects_total",
        "processed": "edge_agent_stream_frames_processed_total",
        "fps_in": "edge_agent_stream_fps_in",
        "fps_processed": "edge_agent_stream_fps_processed",
    }
    for key, metric in gauges.items():
        lines.append(f"# TYPE {metric} {'counter' if metric.endswith('_total') else 'gauge'}")
        for name, entry in stats["streams"].items():
            value = entry.get(key)
            if isinstance(value, int | float):
                lines.append(f'{metric}{{stream="{name}"}} {value}')
    for key in ("latency_ms", "inference_ms", "frame_age_ms"):
        metric = f"edge_agent_stream_{key}"
        lines.append(f"# TYPE {metric} gauge")
        for name, entry in stats["streams"].items():
            summary = entry.get(key)
            if summary:
                for q in ("p50", "p95"):
                    lines.append(f'{metric}{{stream="{name}",quantile="{q}"}} {summary[q]}')
    lines.append("# TYPE edge_agent_stream_up gauge")
    for name, entry in stats["streams"].items():
        lines.append(f'edge_agent_stream_up{{stream="{name}"}} {int(entry.get("state") == "streaming")}')
    mqtt = stats.get("sinks", {}).get("MqttSink")
    if mqtt:
        lines += mqtt_metric_lines(mqtt)
    return lines


async def start_health_server(supervisor: Supervisor, sock: socket.socket) -> web.AppRunner:
    """Serve /healthz, /metrics (and the control API) on ``sock`` from :func:`bind_health_socket`."""

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

    async def metrics(_: web.Request) -> web.Response:
        body = "\n".join(_metric_lines(supervisor.stats())) + "\n"
        return web.Response(text=body, content_type="text/plain", charset="utf-8")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    if supervisor.config.agent.control_api:
        from agent.control_api import add_control_routes

        add_control_routes(app, supervisor)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return runner
