"""Streams at run time: GET /streams[/{name}], PUT /streams/{name}, DELETE /streams/{name}.

Served beside /healthz when CONTROL_API=true. ``PATCH /streams/{name}`` changes a running stream's
per-frame options in place (``prompts``, ``roi``, ``training_data``, ``confidence``, mask output,
second-model classes/padding): no restart, the next frame uses them. Added streams live until the agent stops; the
environment (STREAMS) stays the source of truth for a restart. The body of a PUT is the same
stream model the environment fills (``pipelines.stream_config.StreamConfig``: the names of the
STREAM_<NAME>_* variables in lower case, unknown keys refused), e.g.
``{"url": "rtsp://10.0.0.5/live", "model_id": "yolov8n-640", "max_fps": 5}``.

Status codes come from the error's type: 400 for a bad request or a permanent model error, 404
for an unknown stream, 409 for a name in use, 503 for a model that cannot be loaded right now.
No answer ever quotes a URL unredacted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import ValidationError

from edge_agent.agent.errors import ConfigError, StopRequested, StreamExistsError, UnknownStreamError
from edge_agent.agent.validation import check_model_id
from edge_agent.agent.web.responses import json_response
from edge_agent.models.common.errors import EdgeAgentError
from edge_agent.models.common.redaction import redact_text, url_secrets
from edge_agent.pipelines.stream_config import StreamConfig

if TYPE_CHECKING:
    from edge_agent.agent.supervisor import Supervisor


def _error(status: int, message: str, secrets: list[str] | None = None) -> web.Response:
    # the messages redact their URLs where they are written; this catches a secret quoted otherwise
    return json_response({"error": redact_text(message, secrets or [], urls=False)}, status=status)


def describe_request_errors(exc: ValidationError) -> str:
    """``field: problem; ...`` with inputs never echoed (a URL may carry a password)."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {str(err['msg']).removeprefix('Value error, ')}")
    return "; ".join(parts)


def status_for(exc: EdgeAgentError) -> int:
    if isinstance(exc, StreamExistsError):
        return 409
    if isinstance(exc, UnknownStreamError):
        return 404
    if isinstance(exc, StopRequested):
        return 503
    if isinstance(exc, ConfigError) or exc.permanent:
        return 400
    return 503  # the model could not be loaded right now (network, lock): try again later


def add_control_routes(app: web.Application, supervisor: Supervisor) -> None:
    async def list_streams(_: web.Request) -> web.Response:
        return json_response({name: supervisor.stream_stats(name) for name in list(supervisor.streams)})

    async def get_stream(request: web.Request) -> web.Response:
        try:
            return json_response(supervisor.stream_stats(request.match_info["name"]))
        except UnknownStreamError as exc:
            return _error(404, str(exc))

    async def put_stream(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            body: Any = await request.json()
        except (ValueError, UnicodeDecodeError) as exc:
            return _error(400, f"body is not JSON: {exc}")
        if not isinstance(body, dict):
            return _error(400, 'body must be a JSON object, e.g. {"url": "rtsp://10.0.0.5/live"}')
        url = body.get("url")
        secrets = url_secrets(url) if isinstance(url, str) else []
        if "name" in body:
            return _error(400, "name: comes from the path (/streams/NAME), not from the body")
        try:
            stream = StreamConfig.model_validate({**body, "name": name})
        except ValidationError as exc:
            return _error(400, describe_request_errors(exc), secrets)
        try:
            if stream.model_id:
                check_model_id(stream.model_id, "model_id")
            if stream.second_model_id:
                check_model_id(stream.second_model_id, "second_model_id")
            await supervisor.add_stream(stream)
        except EdgeAgentError as exc:
            return _error(status_for(exc), str(exc), secrets)
        return json_response(supervisor.stream_stats(name), status=201)

    async def patch_stream(request: web.Request) -> web.Response:
        """Change a running stream's per-frame options (prompts, training data, confidence...)."""
        name = request.match_info["name"]
        try:
            body: Any = await request.json()
        except (ValueError, UnicodeDecodeError) as exc:
            return _error(400, f"body is not JSON: {exc}")
        if not isinstance(body, dict) or not body:
            return _error(400, 'body must be a JSON object of options to change, e.g. {"prompts": ["a person"]}')
        try:
            supervisor.update_stream(name, body)
        except EdgeAgentError as exc:
            return _error(status_for(exc), str(exc))
        return json_response(supervisor.stream_stats(name) | {"config": supervisor.streams[name].config.public()})

    async def delete_stream(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            await supervisor.remove_stream(name)
        except UnknownStreamError as exc:
            return _error(404, str(exc))
        return json_response({"removed": name})

    app.router.add_get("/streams", list_streams)
    app.router.add_get(r"/streams/{name}", get_stream)
    app.router.add_put(r"/streams/{name}", put_stream)
    app.router.add_patch(r"/streams/{name}", patch_stream)
    app.router.add_delete(r"/streams/{name}", delete_stream)
    from edge_agent.agent.control_tracking import add_tracking_routes

    add_tracking_routes(app, supervisor)  # zones, lines, counts


__all__ = ["add_control_routes", "describe_request_errors", "status_for"]
