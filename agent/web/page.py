"""The live page (``/``) and the status it polls (``/live.json``).

One self-contained HTML file (``index.html``: markup, CSS and script inline, no external assets,
no build step). Its script is allowed by hash in a strict Content-Security-Policy, so nothing else
can run in the page; stream data is put in with ``textContent`` only.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from edge_agent.pipelines.sinks.encoding import to_json

if TYPE_CHECKING:
    from edge_agent.agent.supervisor import Supervisor

PAGE_FILE = Path(__file__).resolve().parent / "index.html"


@cache
def page() -> tuple[bytes, str]:
    """The page's bytes and its Content-Security-Policy (with the inline script's hash)."""
    html = PAGE_FILE.read_text(encoding="utf-8")
    scripts = re.findall(r"<script>(.*?)</script>", html, re.S)
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in scripts)
    policy = (
        "default-src 'none'; img-src 'self' blob: data:; connect-src 'self'; style-src 'unsafe-inline'; "
        f"script-src {hashes}; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
    return html.encode("utf-8"), policy


def live_status(supervisor: Supervisor) -> dict[str, Any]:
    """What the page shows: every stream's state and numbers, and whether it has a picture."""
    stats = supervisor.stats()
    streams = []
    for name, entry in stats["streams"].items():
        holder = supervisor.live.picture(name)
        streams.append(
            {
                "name": name,
                "state": entry.get("state"),
                "model_id": entry.get("model_id"),
                "fps_in": entry.get("fps_in"),
                "fps_processed": entry.get("fps_processed", 0.0),
                "frame_age_ms": entry.get("frame_age_ms"),
                "latency_ms": entry.get("latency_ms"),
                "inference_ms": entry.get("inference_ms"),
                "reconnects": entry.get("reconnects", 0),
                "last_error": entry.get("last_error"),
                "last_frame_age_s": entry.get("last_frame_age_s"),
                "width": entry.get("width"),
                "decoding": entry.get("decoding"),
                "keyframe_interval_s": entry.get("keyframe_interval_s"),
                "long_gop": entry.get("long_gop", False),
                "height": entry.get("height"),
                "picture": bool(holder is not None and holder.has_result),
                "viewers": holder.viewers if holder is not None else 0,
                "vlm": supervisor.live.answers.get(name),
            }
        )
    return {
        "agent_id": stats["agent_id"],
        "uptime_s": stats["uptime_s"],
        "ready": supervisor.ready,
        "max_fps": supervisor.live.options.max_fps,
        "streams": streams,
    }


def add_page_routes(app: web.Application, supervisor: Supervisor) -> None:
    async def index(_: web.Request) -> web.Response:
        body, policy = page()
        return web.Response(
            body=body,
            content_type="text/html",
            charset="utf-8",
            headers={
                "Content-Security-Policy": policy,
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
                "Cache-Control": "no-cache",
            },
        )

    async def status(_: web.Request) -> web.Response:
        return web.json_response(live_status(supervisor), headers={"Cache-Control": "no-store"}, dumps=to_json)

    app.router.add_get("/", index)
    app.router.add_get("/live.json", status)
