"""The live view's pictures: each stream's newest frame and prediction, drawn only when watched.

The result router hands every result to :meth:`LiveView.update`. While a stream is watched (an
MJPEG viewer, or a picture asked for in the last ``WATCH_LINGER_S``) it keeps a reference to the
newest frame and its typed prediction, latest only: no copy, no drawing, no encoding. Unwatched,
it keeps nothing, not even the frame's memory; the first request then waits for the next result.

Drawing is shared: a stream's newest result is drawn and encoded at most once however many
viewers there are, and at most ``max_fps`` times per second (a viewer asking sooner gets the
picture already made). Drawing and encoding run in one worker thread of the live view's own,
started on the first picture, so viewers never take the event loop's time or more than one core.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from edge_agent.models.maths.predictions import Prediction
from edge_agent.pipelines.annotate import render_jpeg
from edge_agent.pipelines.errors import StreamError
from edge_agent.pipelines.frames import Frame

# (image, prediction, colors, quality[, overlay]) -> JPEG
Renderer = Callable[..., bytes]

# A stream counts as watched this long after its last picture request or MJPEG viewer: the page
# asks every 1/max_fps, and a viewer that reconnects finds a frame ready.
WATCH_LINGER_S = 30.0
# How long a request for an unwatched stream waits for the stream's next result.
FIRST_PICTURE_WAIT_S = 5.0


def model_colors(model: Any) -> dict[str, str]:
    """The model's class colours (Roboflow's COLORS, via ``ModelArtifacts``), or none."""
    colors = getattr(getattr(model, "artifacts", None), "colors", None)
    return dict(colors) if isinstance(colors, Mapping) else {}


class LiveViewOptions(BaseModel):
    """How much the live view may cost (LIVE_VIEW_* settings)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_fps: float = Field(default=5.0, gt=0, le=60)
    max_viewers: int = Field(default=4, ge=1, le=1000)
    jpeg_quality: int = Field(default=80, ge=10, le=100)


class ViewerLimitError(StreamError):
    """A stream already has as many MJPEG viewers as LIVE_VIEW_MAX_VIEWERS allows."""

    def __init__(self, stream: str, limit: int) -> None:
        super().__init__(f"stream {stream!r} already has {limit} live viewer(s) (LIVE_VIEW_MAX_VIEWERS={limit})")
        self.stream = stream
        self.limit = limit


@dataclass(frozen=True, slots=True)
class Picture:
    """One encoded picture: the JPEG and what it shows."""

    seq: int  # pictures encoded for this stream so far, 1-based
    version: int  # which result of the stream it shows (LivePicture.version when drawn)
    frame_id: int
    capture_time: float
    detections: int
    jpeg: bytes
    made: float  # monotonic


@dataclass(slots=True)
class _Latest:
    frame: Frame
    prediction: Prediction
    colors: Mapping[str, str] | None
    version: int
    overlay: Any = None


class LivePicture:
    """One stream's newest result and the picture made from it. Loop-thread only."""

    def __init__(self, stream: str, options: LiveViewOptions, submit: Callable[..., asyncio.Future[bytes]]) -> None:
        self.stream = stream
        self.options = options
        self._submit = submit
        self._latest: _Latest | None = None
        self._picture: Picture | None = None
        self._pending: asyncio.Future[Picture] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.version = 0  # results of the stream so far, kept or not
        self.encodes = 0
        self.viewers = 0
        self.closed = False
        self._watched_until = 0.0

    @property
    def min_interval(self) -> float:
        return 1.0 / self.options.max_fps

    @property
    def watched(self) -> bool:
        return self.viewers > 0 or time.monotonic() < self._watched_until

    def update(
        self, frame: Frame, prediction: Prediction, colors: Mapping[str, str] | None, overlay: Any = None
    ) -> None:
        """While watched, keep a reference to the newest result and wake whoever waits for one;
        else let go of the previous one."""
        self.version += 1
        self._latest = _Latest(frame, prediction, colors, self.version, overlay) if self.watched else None
        self._wake()

    @property
    def holds_frame(self) -> bool:
        """A frame is referenced (only while watched)."""
        return self._latest is not None

    @property
    def has_result(self) -> bool:
        """The stream has had a result (a picture can be had, after at most one more result)."""
        return self.version > 0

    def close(self) -> None:
        """The stream is gone or the server stops: viewers end, the frame is let go."""
        self.closed = True
        self._latest = None
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def latest(self) -> Picture | None:
        """The newest picture, made now if the last one is older than the newest result and than
        1/max_fps. Unwatched until now, the stream's next result is waited for (at most
        FIRST_PICTURE_WAIT_S); ``None`` when there is none and no picture was made before."""
        self._watched_until = time.monotonic() + WATCH_LINGER_S
        latest = self._latest
        if latest is None and self.version > 0 and not self.closed:
            await self._next_update(FIRST_PICTURE_WAIT_S)
            latest = self._latest
        if latest is None:
            return self._picture
        picture = self._picture
        if picture is not None and (
            picture.version >= latest.version or time.monotonic() - picture.made < self.min_interval
        ):
            return picture
        return await self._make()

    async def next_after(self, seq: int, timeout: float) -> Picture | None:
        """A picture newer than ``seq`` (for an MJPEG viewer), waiting for a new result and for the
        fps cap; ``None`` when none came within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not self.closed:
            picture = self._picture
            if picture is not None and picture.seq > seq:
                return picture
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            latest = self._latest
            if latest is not None and (picture is None or latest.version > picture.version):
                due = (picture.made + self.min_interval) if picture is not None else 0.0
                wait = due - time.monotonic()
                if wait <= 0 or self._pending is not None:
                    await self._make()
                else:
                    await asyncio.sleep(min(wait, remaining))
                continue
            await self._next_update(remaining)
        return None

    async def _next_update(self, timeout: float) -> None:
        """Until the next result (or close), at most ``timeout`` seconds."""
        if self._waiter is None or self._waiter.done():
            self._waiter = asyncio.get_running_loop().create_future()
        # asyncio.wait leaves the shared future alone on timeout or cancellation.
        await asyncio.wait({self._waiter}, timeout=timeout)

    async def _make(self) -> Picture:
        """Draw and encode the newest result once; concurrent callers share the same work."""
        if self._pending is None:
            latest = self._latest
            assert latest is not None
            self._pending = asyncio.ensure_future(self._render(latest))
            self._pending.add_done_callback(self._clear_pending)
        # shield: a viewer that goes away must not cancel the picture the others wait for.
        return await asyncio.shield(self._pending)

    def _clear_pending(self, _: asyncio.Future[Picture]) -> None:
        self._pending = None

    async def _render(self, latest: _Latest) -> Picture:
        started = time.monotonic()
        frame = latest.frame
        jpeg = await self._submit(frame, latest.prediction, latest.colors, self.options.jpeg_quality, latest.overlay)
        self.encodes += 1
        previous = self._picture
        picture = Picture(
            seq=(previous.seq if previous is not None else 0) + 1,
            version=latest.version,
            frame_id=frame.frame_id,
            capture_time=frame.capture_time,
            detections=len(latest.prediction),
            jpeg=jpeg,
            made=started,
        )
        self._picture = picture
        return picture

    @contextlib.contextmanager
    def viewer(self) -> Iterator[None]:
        """Count one MJPEG viewer for as long as the block runs; ViewerLimitError past the limit."""
        if self.viewers >= self.options.max_viewers:
            raise ViewerLimitError(self.stream, self.options.max_viewers)
        self.viewers += 1
        try:
            yield
        finally:
            self.viewers -= 1
            self._watched_until = time.monotonic() + WATCH_LINGER_S


class LiveView:
    """Every stream's :class:`LivePicture`, the model colours, and the one drawing thread."""

    def __init__(self, options: LiveViewOptions | None = None, *, renderer: Renderer = render_jpeg) -> None:
        self.options = options or LiveViewOptions()
        self._renderer = renderer
        self._pictures: dict[str, LivePicture] = {}
        self._colors: dict[str, Mapping[str, str]] = {}
        self._executor: ThreadPoolExecutor | None = None
        # Per stream, the newest result that has more to give than its message (a depth map):
        # served whole over HTTP on demand. Only a reference to the newest one is kept.
        self._full: dict[str, Prediction] = {}
        self.answers: dict[str, dict[str, Any]] = {}  # stream -> newest VLM answer (prompt, text, time)

    def set_answer(self, stream: str, answer: dict[str, Any]) -> None:
        """The newest vision-language answer about ``stream`` (shown beside its picture)."""
        self.answers[stream] = answer

    def set_colors(self, model_id: str, colors: Mapping[str, str]) -> None:
        self._colors[model_id] = dict(colors)

    def track(self, stream: str) -> LivePicture:
        """Start keeping results of ``stream`` (the supervisor calls it when a stream starts)."""
        picture = self._pictures.get(stream)
        if picture is None or picture.closed:
            picture = self._pictures[stream] = LivePicture(stream, self.options, self._submit)
        return picture

    def update(self, stream: str, model_id: str, frame: Frame, prediction: Prediction, overlay: Any = None) -> None:
        """Called by the result router for every result; O(1), no pixels touched. Results of
        streams not tracked (a late result of a removed stream) are not kept. ``overlay``: what
        else to draw (zones, lines, trails: ``pipelines/events/overlay.py``)."""
        picture = self._pictures.get(stream)
        if picture is not None:
            picture.update(frame, prediction, self._colors.get(model_id), overlay)
            if callable(getattr(prediction, "roboflow_response", None)):
                self._full[stream] = prediction

    def full_result(self, stream: str) -> Prediction | None:
        """The stream's newest result whose whole Roboflow response can be asked for (depth maps)."""
        return self._full.get(stream)

    def watched(self, stream: str) -> bool:
        """Whether a result of ``stream`` would be kept now (worth making an overlay for)."""
        picture = self._pictures.get(stream)
        return picture is not None and picture.watched

    def picture(self, stream: str) -> LivePicture | None:
        return self._pictures.get(stream)

    def ensure(self, stream: str) -> LivePicture:
        """The stream's picture holder (a viewer may connect before the first result)."""
        return self.track(stream)

    def forget(self, stream: str) -> None:
        self.answers.pop(stream, None)
        picture = self._pictures.pop(stream, None)
        self._full.pop(stream, None)
        if picture is not None:
            picture.close()

    def close_viewers(self) -> None:
        """End every viewer (the HTTP server stops); results keep being tracked."""
        for name, picture in list(self._pictures.items()):
            picture.close()
            self._pictures[name] = LivePicture(name, self.options, self._submit)

    def encodes(self) -> dict[str, int]:
        return {name: p.encodes for name, p in self._pictures.items()}

    def viewers(self) -> dict[str, int]:
        return {name: p.viewers for name, p in self._pictures.items()}

    def _submit(
        self, frame: Frame, prediction: Any, colors: Mapping[str, str] | None, quality: int, overlay: Any = None
    ) -> Any:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="live-view")
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._executor, self._render, frame, prediction, colors, quality, overlay)

    def _render(
        self, frame: Frame, prediction: Any, colors: Mapping[str, str] | None, quality: int, overlay: Any = None
    ) -> bytes:
        # frame.image in this thread: inference has converted it already, but if not, the
        # conversion must not run on the loop either.
        if overlay is None:
            return self._renderer(frame.image, prediction, colors, quality)
        return self._renderer(frame.image, prediction, colors, quality, overlay)

    def close(self) -> None:
        for picture in self._pictures.values():
            picture.close()
        self._pictures.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


__all__ = ["LivePicture", "LiveView", "LiveViewOptions", "Picture", "ViewerLimitError"]
