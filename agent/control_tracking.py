"""Zones, lines and counts of running streams (CONTROL_API=true), beside /streams.

* ``GET /streams/{name}/geometry``: the zones and lines in use;
* ``PUT /streams/{name}/geometry``: new zones and/or lines, ``{"zones": ..., "lines": ...}``
  in the stream model's own forms (the compact ``"bay=0.1,0.5 ..."`` string or a list of
  objects); applied to the next frame without a restart and saved in STATE_DIR, so they
  outlive a restart (they replace the environment's until deleted);
* ``DELETE /streams/{name}/geometry``: back to the environment's zones and lines;
* ``POST /streams/{name}/counts/reset``: the cumulative line counts back to 0 (published).

404 for an unknown stream, 409 for a stream without tracking, 400 for a bad body (the message
names the zone or line and the point).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import ValidationError

from edge_agent.agent.web.responses import json_response
from edge_agent.pipelines.events.step import geometry_doc

if TYPE_CHECKING:
    from edge_agent.agent.supervisor import Supervisor


def _error(status: int, message: str) -> web.Response:
    return json_response({"error": message}, status=status)


def _errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {str(err['msg']).removeprefix('Value error, ')}")
    return "; ".join(parts)


def add_tracking_routes(app: web.Application, supervisor: Supervisor) -> None:
    def tracked(name: str) -> web.Response | None:
        if name not in supervisor.streams:
            return _error(404, f"no stream {name!r}; running: {', '.join(sorted(supervisor.streams)) or 'none'}")
        step = supervisor.tracking
        if step is None or not step.tracked(name):
            return _error(409, f"stream {name!r} has no tracking (STREAM_<NAME>_TRACKING=false)")
        return None

    async def get_geometry(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        problem = tracked(name)
        if problem is not None:
            return problem
        assert supervisor.tracking is not None
        options = supervisor.tracking.options(name)
        assert options is not None
        return json_response(geometry_doc(options))

    async def put_geometry(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        problem = tracked(name)
        if problem is not None:
            return problem
        try:
            body: Any = await request.json()
        except (ValueError, UnicodeDecodeError) as exc:
            return _error(400, f"body is not JSON: {exc}")
        if not isinstance(body, dict) or not body:
            return _error(400, 'body must be a JSON object such as {"zones": "bay=0.1,0.5 0.4,0.5 0.4,0.9"}')
        assert supervisor.tracking is not None
        try:
            options = supervisor.tracking.set_geometry(name, body)
        except ValidationError as exc:
            return _error(400, _errors(exc))
        except ValueError as exc:
            return _error(400, str(exc))
        return json_response(geometry_doc(options))

    async def delete_geometry(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        problem = tracked(name)
        if problem is not None:
            return problem
        assert supervisor.tracking is not None
        return json_response(geometry_doc(supervisor.tracking.set_geometry(name, None)))

    async def reset_counts(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        problem = tracked(name)
        if problem is not None:
            return problem
        assert supervisor.tracking is not None
        supervisor.tracking.reset_counts(name)
        return json_response({"reset": name})

    app.router.add_get(r"/streams/{name}/geometry", get_geometry)
    app.router.add_put(r"/streams/{name}/geometry", put_geometry)
    app.router.add_delete(r"/streams/{name}/geometry", delete_geometry)
    app.router.add_post(r"/streams/{name}/counts/reset", reset_counts)


__all__ = ["add_tracking_routes"]
