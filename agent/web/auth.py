"""HTTP_TOKEN on the HTTP port: everything but the probes needs it once a token is set.

A client shows the token as ``Authorization: Bearer TOKEN`` (Prometheus, curl, scripts), as the
password of HTTP Basic auth (VLC's and Home Assistant's ``http://user:TOKEN@host/...``), or, on GET
only, as the ``edge_agent_token`` cookie (the live page's own pictures: the browser sends it with
every ``<img>`` and fetch) or a ``?token=`` query parameter (links, MJPEG URLs of players that
cannot send headers). Cookies and query tokens are refused for anything but GET, so another web
site cannot make a logged-in browser change streams through the control API.

Opening ``/?token=TOKEN`` or posting the login form sets the cookie and redirects to the page
without the token in the address bar.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

from edge_agent.agent.web.errors import TokenRequiredError

COOKIE = "edge_agent_token"
COOKIE_MAX_AGE_S = 30 * 24 * 3600
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/login"})
_SAFE_METHODS = frozenset({"GET", "HEAD"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,"><title>edge-agent: token needed</title>
<style>body{font:16px system-ui,sans-serif;margin:2em auto;max-width:28em;padding:0 1em}
input,button{font:inherit;padding:.4em;width:100%;box-sizing:border-box;margin:.3em 0}</style></head>
<body><h1>edge-agent</h1><p>%MESSAGE%</p>
<form method="post" action="login"><label>HTTP_TOKEN <input name="token" type="password" autocomplete="current-password"
 required autofocus></label><button type="submit">Open the live view</button></form></body></html>
"""


def presented_token(request: web.Request) -> str | None:
    """The token a request carries, if any (see the module docstring for where it may be)."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value
    if scheme.lower() == "basic" and value:
        try:
            user, _, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return password or user
    if request.method in _SAFE_METHODS:
        return request.cookies.get(COOKIE) or request.query.get("token") or None
    return None


def _login_page(message: str, status: int) -> web.Response:
    return web.Response(
        text=LOGIN_PAGE.replace("%MESSAGE%", message),
        status=status,
        content_type="text/html",
        headers={"Cache-Control": "no-store", "WWW-Authenticate": 'Bearer realm="edge-agent"'},
    )


def _with_cookie(response: web.StreamResponse, token: str) -> web.StreamResponse:
    response.set_cookie(COOKIE, token, max_age=COOKIE_MAX_AGE_S, path="/", httponly=True, samesite="Strict")
    return response


def add_token_check(app: web.Application, token: str) -> None:
    """Require ``token`` on every route of ``app`` but the probes; add the login form's route."""
    expected = token.encode()

    def matches(presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented.encode(), expected)

    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS:
            return await handler(request)
        presented = presented_token(request)
        if not matches(presented):
            if request.path == "/" and request.method in _SAFE_METHODS:
                message = "That token is wrong." if presented else "This agent asks for its HTTP_TOKEN."
                return _login_page(message, 401)
            raise TokenRequiredError(request.path, presented is not None)
        if request.path == "/" and "token" in request.query:
            # From now on the cookie carries it; the address bar and history lose it.
            return _with_cookie(web.Response(status=303, headers={"Location": "./"}), token)
        return await handler(request)

    async def login(request: web.Request) -> web.StreamResponse:
        form = await request.post()
        presented = form.get("token")
        if not isinstance(presented, str) or not matches(presented.strip()):
            return _login_page("That token is wrong.", 401)
        return _with_cookie(web.Response(status=303, headers={"Location": "./"}), token)

    app.middlewares.append(require_token)
    app.router.add_post("/login", login)
