"""HTTP /healthz (JSON) and /metrics (Prometheus text) for monitoring and container health checks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

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


async def start_health_server(supervisor: Supervisor, host: str, port: int) -> web.AppRunner:
    async def healthz(_: web.Request) -> web.Response:
        stats = supervisor.stats()
        states = {name: entry.get("state") for name, entry in stats["streams"].items()}
        # Healthy while at least one stream delivers: one dead camera must not get the whole
        # container restarted and take the working cameras down with it.
        ok = any(state in HEALTHY_STATES for state in states.values())
        body: dict[str, Any] = {"ok": ok, "streams": states}
        mqtt = stats.get("sinks", {}).get("MqttSink")
        if mqtt:
            body["mqtt"] = mqtt_health(mqtt)
        return web.json_response(body, status=200 if ok else 503)

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
    await web.TCPSite(runner, host, port).start()
    return runner
