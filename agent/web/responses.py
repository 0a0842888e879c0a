"""JSON answers of the agent's HTTP port, all through one encoder."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from edge_agent.pipelines.sinks.encoding import to_json


def json_response(data: Any, status: int = 200) -> web.Response:
    """aiohttp's json_response with the agent's one JSON encoder (strict JSON, NaN -> null)."""
    return web.json_response(data, status=status, dumps=to_json)
