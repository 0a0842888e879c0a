"""HTTP /healthz (JSON) and /metrics (Prometheus text) for monitoring and container health checks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from agent.supervisor import Supervisor

HEALTHY_STATES = {"streaming", "finished"}


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
    return lines


async def start_health_server(supervisor: Supervisor, host: str, port: int) -> web.AppRunner:
    async def healthz(_: web.Request) -> web.Response:
        stats = supervisor.stats()
        states = {name: entry.get("state") for name, entry in stats["streams"].items()}
        # Healthy while at least one stream delivers: one dead camera must not get the whole
        # container restarted and take the working cameras down with it.
        ok = any(state in HEALTHY_STATES for state in states.values())
        return web.json_response({"ok": ok, "streams": states}, status=200 if ok else 503)

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
