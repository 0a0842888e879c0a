"""Per-stream pictures: ``/streams/NAME/latest.jpg`` and ``/streams/NAME/live.mjpg``.

``live.mjpg`` is ``multipart/x-mixed-replace`` MJPEG, what Home Assistant's MJPEG camera, VLC,
ffmpeg and browsers read. Every viewer of a stream gets the same encoded pictures (see
``pipelines/live.py``): a second viewer costs the network writes, not another encode. A viewer
that cannot keep up skips pictures instead of queueing them; one that stops reading for
``WRITE_TIMEOUT_S`` is dropped; one that goes away mid-picture ends its handler quietly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from edge_agent.agent.errors import UnknownStreamError
from edge_agent.agent.web.errors import NoPictureYetError
from edge_agent.pipelines.live import LivePicture, Picture

if TYPE_CHECKING:
    from edge_agent.agent.supervisor import Supervisor

log = logging.getLogger("edge_agent.web.pictures")

BOUNDARY = "edge-agent-frame"
# With no new picture for this long (camera down), the last one is sent again: players and
# proxies that time out quiet connections keep the stream, and a viewer that left is noticed.
KEEPALIVE_S = 10.0
CONNECTION_POLL_S = 0.25
WRITE_TIMEOUT_S = 15.0
NO_CACHE = {"Cache-Control": "no-store, no-cache, must-revalidate", "Pragma": "no-cache"}


def picture_headers(picture: Picture) -> dict[str, str]:
    return {
        "X-Frame-Id": str(picture.frame_id),
        "X-Frame-Time": f"{picture.capture_time:.3f}",
        "X-Picture-Seq": str(picture.seq),
        "X-Detections": str(picture.detections),
    }


def mjpeg_part(picture: Picture) -> bytes:
    head = "".join(
        [f"--{BOUNDARY}\r\n", "Content-Type: image/jpeg\r\n", f"Content-Length: {len(picture.jpeg)}\r\n"]
        + [f"{k}: {v}\r\n" for k, v in picture_headers(picture).items()]
        + ["\r\n"]
    )
    return head.encode("ascii") + picture.jpeg + b"\r\n"


async def write_bounded(response: web.StreamResponse, data: bytes, timeout: float) -> None:
    """``response.write`` that gives up after ``timeout`` (a viewer that stopped reading)."""
    task = asyncio.ensure_future(response.write(data))
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        raise TimeoutError(f"viewer read nothing for {timeout:.0f} s")
    task.result()


def add_picture_routes(app: web.Application, supervisor: Supervisor) -> None:
    live = supervisor.live

    def stream_of(request: web.Request) -> str:
        name = request.match_info["name"]
        if name not in supervisor.streams:
            raise UnknownStreamError(name, list(supervisor.streams))
        return name

    async def latest_jpg(request: web.Request) -> web.Response:
        name = stream_of(request)
        holder = live.picture(name)
        picture = await holder.latest() if holder is not None else None
        if picture is None:
            raise NoPictureYetError(name, supervisor.streams[name].runner.state)
        return web.Response(
            body=picture.jpeg, content_type="image/jpeg", headers={**NO_CACHE, **picture_headers(picture)}
        )

    async def live_mjpg(request: web.Request) -> web.StreamResponse:
        name = stream_of(request)
        holder = live.ensure(name)
        with holder.viewer():
            response = web.StreamResponse(
                headers={
                    **NO_CACHE,
                    "Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                    "X-Accel-Buffering": "no",  # nginx in front must not buffer a live stream
                }
            )
            await response.prepare(request)
            try:
                await _serve_viewer(request, holder, response)
            except (ConnectionError, TimeoutError) as exc:
                # A viewer closing its tab or player is normal: not worth more than a debug line.
                log.debug("live viewer of %s left: %s", name, exc.__class__.__name__)
        return response

    async def depth(request: web.Request) -> web.Response:
        """The stream's newest depth map whole, in Roboflow's response shape (?format=json|png16|png8)."""
        import dataclasses

        from edge_agent.pipelines.sinks.encoding import to_json

        name = stream_of(request)
        chosen = request.query.get("format", "png16")
        if chosen not in ("json", "png16", "png8"):
            return web.json_response({"error": f"format must be json, png16 or png8, not {chosen!r}"}, status=400)
        result = live.full_result(name)
        if result is None or not hasattr(result, "depth_map_format"):
            raise NoPictureYetError(name, supervisor.streams[name].runner.state)
        chosen_result: Any = dataclasses.replace(result, depth_map_format=chosen)  # type: ignore[type-var]

        def encode() -> str:  # a full map is megabytes of PNG or JSON: not on the loop
            return to_json(chosen_result.roboflow_response())

        text = await asyncio.get_running_loop().run_in_executor(None, encode)
        return web.Response(text=text, content_type="application/json", headers=NO_CACHE)

    app.router.add_get(r"/streams/{name}/depth", depth)
    app.router.add_get(r"/streams/{name}/latest.jpg", latest_jpg)
    app.router.add_get(r"/streams/{name}/live.mjpg", live_mjpg)

    async def release_viewers(_: web.Application) -> None:
        live.close_viewers()

    app.on_shutdown.append(release_viewers)


async def _serve_viewer(request: web.Request, holder: LivePicture, response: web.StreamResponse) -> None:
    seq = 0
    last: Picture | None = None
    sent_at = time.monotonic()
    while not holder.closed:
        # Short waits: a viewer that hung up is noticed (and its slot freed) within CONNECTION_POLL_S
        # even while no new picture comes (aiohttp does not cancel handlers on disconnect).
        picture = await holder.next_after(seq, CONNECTION_POLL_S)
        transport = request.transport
        if holder.closed or transport is None or transport.is_closing():
            return
        if picture is None:
            if last is None or time.monotonic() - sent_at < KEEPALIVE_S:
                continue
            picture = last
        await write_bounded(response, mjpeg_part(picture), WRITE_TIMEOUT_S)
        seq, last, sent_at = picture.seq, picture, time.monotonic()
