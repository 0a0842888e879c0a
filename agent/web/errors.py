"""Errors of the HTTP layer, and the one place that maps error types to status codes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from multidict import CIMultiDict

from edge_agent.agent.errors import UnknownStreamError
from edge_agent.models.common.errors import EdgeAgentError
from edge_agent.pipelines.live import ViewerLimitError
from edge_agent.pipelines.sinks.encoding import to_json


class HttpError(EdgeAgentError):
    """Base of the errors a request handler raises for the client to see."""


class TokenRequiredError(HttpError):
    """HTTP_TOKEN is set and the request carries no token, or a wrong one."""

    def __init__(self, path: str, presented: bool) -> None:
        what = "a wrong token" if presented else "no token"
        super().__init__(
            f"{path} needs the agent's HTTP_TOKEN and the request carries {what}: send "
            "'Authorization: Bearer TOKEN' (or ?token=TOKEN on GET)"
        )
        self.path = path
        self.presented = presented


class NoPictureYetError(HttpError):
    """The stream has had no inference result yet (connecting, or its camera is down)."""

    def __init__(self, name: str, state: str) -> None:
        super().__init__(f"stream {name!r} has no picture yet (state: {state}); try again shortly")
        self.name = name
        self.state = state


STATUS: dict[type[Exception], int] = {
    TokenRequiredError: 401,
    UnknownStreamError: 404,
    NoPictureYetError: 503,
    ViewerLimitError: 503,
}
RETRY_AFTER: dict[type[Exception], str] = {NoPictureYetError: "1", ViewerLimitError: "10"}


def status_of(exc: Exception) -> int | None:
    for kind in type(exc).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return None


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except (HttpError, UnknownStreamError, ViewerLimitError) as exc:
        return error_response(exc)


def error_response(exc: Exception) -> web.Response:
    status = status_of(exc) or 500
    headers: CIMultiDict[str] = CIMultiDict()
    retry = next((v for k, v in RETRY_AFTER.items() if isinstance(exc, k)), None)
    if retry is not None:
        headers["Retry-After"] = retry
    if isinstance(exc, TokenRequiredError):
        # Basic too: VLC and Home Assistant's MJPEG camera send user:TOKEN@ only when asked.
        headers.add("WWW-Authenticate", 'Bearer realm="edge-agent"')
        headers.add("WWW-Authenticate", 'Basic realm="edge-agent", charset="UTF-8"')
    return web.json_response({"error": str(exc)}, status=status, headers=headers, dumps=to_json)
