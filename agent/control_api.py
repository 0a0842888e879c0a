"""Streams at run time: GET /streams, PUT /streams/{name}, DELETE /streams/{name}.

Served beside /healthz when CONTROL_API=true. Added streams live until the agent stops; the
environment (STREAMS) stays the source of truth for a restart. The body of a PUT uses the same
names as the STREAM_<NAME>_* variables, in lower case, e.g.
``{"url": "rtsp://10.0.0.5/live", "model_id": "yolov8n-640", "max_fps": 5}``.
"""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from typing import TYPE_CHECKING, Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.errors import ConfigError
from agent.settings import STREAM_NAME_RE, StreamConfig
from models.errors import EdgeAgentError

if TYPE_CHECKING:
    from agent.supervisor import Supervisor


class StreamRequest(BaseModel):
    """A stream as the control API takes it; unknown keys are refused, not ignored."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    url: str = Field(min_length=1)
    model_id: str | None = None
    mode: Literal["live", "every"] = "live"
    max_fps: float | None = Field(default=None, gt=0)
    confidence: float | None = Field(default=None, gt=0, le=1)
    loop: bool = False
    rtsp_transport: Literal["tcp", "udp"] = "tcp"
    video_size: str | None = Field(default=None, pattern=r"^\d{2,5}x\d{2,5}$")
    framerate: float | None = Field(default=None, gt=0)
    input_format: str | None = None
    tls_verify: bool = False
    tls_ca_file: str | None = None


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _describe(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())


def _stats_of(supervisor: Supervisor, name: str) -> dict[str, Any]:
    stats = supervisor.runners[name].stats
    entry = asdict(stats) if is_dataclass(stats) and not isinstance(stats, type) else dict(stats)
    entry["model_id"] = supervisor.stream_models.get(name)
    return entry


def add_control_routes(app: web.Application, supervisor: Supervisor) -> None:
    async def list_streams(_: web.Request) -> web.Response:
        return web.json_response({name: _stats_of(supervisor, name) for name in list(supervisor.runners)})

    async def put_stream(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if not STREAM_NAME_RE.match(name):
            return _error(400, f"stream name {name!r} is invalid; accepted: 1-63 letters, digits, '_' and '-'")
        try:
            body = StreamRequest.model_validate(await request.json())
        except ValueError as exc:  # bad JSON, or a ValidationError
            text = _describe(exc) if isinstance(exc, ValidationError) else f"body is not JSON: {exc}"
            return _error(400, text)
        fields = body.model_dump()
        fields["model_id"] = fields["model_id"] or supervisor.config.agent.model_id
        stream = StreamConfig(name=name, **fields)
        try:
            await supervisor.add_stream(stream)
        except ConfigError as exc:
            status = 409 if "exists already" in str(exc) else 400
            return _error(status, str(exc))
        except EdgeAgentError as exc:  # the model could not be loaded right now (network...)
            return _error(503, str(exc))
        return web.json_response(_stats_of(supervisor, name), status=201)

    async def delete_stream(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            await supervisor.remove_stream(name)
        except KeyError:
            return _error(404, f"no stream named {name!r}; streams: {', '.join(supervisor.runners) or 'none'}")
        return web.json_response({"removed": name})

    app.router.add_get("/streams", list_streams)
    app.router.add_put(r"/streams/{name}", put_stream)
    app.router.add_delete(r"/streams/{name}", delete_stream)


__all__ = ["StreamRequest", "add_control_routes"]
