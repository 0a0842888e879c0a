"""The live view's pictures: nothing drawn without a viewer, one encode per picture for any number
of viewers, the fps cap, the viewer limit, and the router keeping only the newest result."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from edge_agent.models.maths.predictions import Detections
from edge_agent.pipelines.annotate import render_jpeg
from edge_agent.pipelines.frames import Frame
from edge_agent.pipelines.live import LivePicture, LiveView, LiveViewOptions, ViewerLimitError
from edge_agent.pipelines.results import InferenceResult, ResultRouter


class CountingRenderer:
    """The real renderer, counting its calls and the threads it ran on."""

    def __init__(self) -> None:
        self.calls = 0
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, image: Any, prediction: Any, colors: Mapping[str, str] | None, quality: int) -> bytes:
        with self._lock:
            self.calls += 1
            self.threads.add(threading.current_thread().name)
        return render_jpeg(image, prediction, colors, quality)


def frame(index: int, stream: str = "cam") -> Frame:
    image = np.full((120, 160, 3), index % 256, np.uint8)
    return Frame(stream, index, time.time(), None, image, time.monotonic())


def boxes() -> Detections:
    return Detections(
        np.array([[10.0, 10.0, 60.0, 60.0]]), np.array([0.9], np.float32), np.array([0]), ("cat",), (160, 120)
    )


def watch(holder: LivePicture) -> None:
    """Mark a stream as watched, as a picture request does."""
    holder._watched_until = time.monotonic() + 60


def test_no_viewer_means_no_drawing_no_thread_and_no_frame_kept() -> None:
    async def main() -> None:
        renderer = CountingRenderer()
        live = LiveView(renderer=renderer)
        holder = live.track("cam")
        last = frame(0)
        for i in range(200):
            last = frame(i)
            live.update("cam", "m", last, boxes())
        kept = weakref.ref(last.image)  # the pixels: what holding a frame would cost
        del last
        gc.collect()
        assert kept() is None, "an unwatched stream's frame is still referenced"
        await asyncio.sleep(0.05)
        assert renderer.calls == 0
        assert not [t for t in threading.enumerate() if t.name.startswith("live-view")]
        assert holder.version == 200 and holder.has_result and not holder.watched and not holder.holds_frame
        live.close()

    asyncio.run(main())


def test_first_request_of_an_unwatched_stream_waits_for_its_next_result() -> None:
    async def main() -> None:
        renderer = CountingRenderer()
        live = LiveView(renderer=renderer)
        holder = live.track("cam")
        live.update("cam", "m", frame(1), boxes())  # unwatched: not kept
        request = asyncio.ensure_future(holder.latest())
        await asyncio.sleep(0.05)
        assert not request.done() and holder.watched
        live.update("cam", "m", frame(2), boxes())  # watched now: kept and drawn
        picture = await asyncio.wait_for(request, 2.0)
        assert picture is not None and picture.frame_id == 2 and renderer.calls == 1
        # Watched for a while after: the next result is kept without waiting.
        live.update("cam", "m", frame(3), boxes())
        await asyncio.sleep(1 / live.options.max_fps)
        again = await asyncio.wait_for(holder.latest(), 0.5)
        assert again is not None and again.frame_id == 3
        live.close()

    asyncio.run(main())


def test_concurrent_requests_share_one_encode_off_the_loop() -> None:
    async def main() -> None:
        renderer = CountingRenderer()
        live = LiveView(renderer=renderer)
        holder = live.track("cam")
        watch(holder)
        live.update("cam", "m", frame(1), boxes())
        pictures = await asyncio.gather(*(holder.latest() for _ in range(5)))
        assert renderer.calls == 1
        assert len({id(p) for p in pictures}) == 1 and pictures[0] is not None
        assert pictures[0].frame_id == 1 and pictures[0].detections == 1
        assert renderer.threads == {"live-view_0"}, renderer.threads
        # No new result: asking again re-uses the picture.
        assert await holder.latest() is pictures[0] and renderer.calls == 1
        live.close()

    asyncio.run(main())


def test_latest_is_capped_to_max_fps() -> None:
    async def main() -> None:
        renderer = CountingRenderer()
        live = LiveView(LiveViewOptions(max_fps=2), renderer=renderer)
        holder = live.track("cam")
        watch(holder)
        live.update("cam", "m", frame(1), boxes())
        first = await holder.latest()
        live.update("cam", "m", frame(2), boxes())
        # Younger than 1/max_fps: the same picture again, though a newer result exists.
        assert await holder.latest() is first and renderer.calls == 1
        await asyncio.sleep(0.55)
        second = await holder.latest()
        assert second is not None and first is not None
        assert second.frame_id == 2 and second.seq == first.seq + 1 and renderer.calls == 2
        live.close()

    asyncio.run(main())


def test_two_mjpeg_viewers_get_the_same_pictures_from_one_encode_each() -> None:
    async def main() -> None:
        renderer = CountingRenderer()
        live = LiveView(LiveViewOptions(max_fps=20), renderer=renderer)
        holder = live.track("cam")
        received: dict[str, list[int]] = {"a": [], "b": []}
        made: list[float] = []

        async def viewer(key: str) -> None:
            seq = 0
            with holder.viewer():
                while len(received[key]) < 8:
                    picture = await holder.next_after(seq, timeout=5.0)
                    assert picture is not None
                    received[key].append(picture.frame_id)
                    if key == "a":
                        made.append(picture.made)
                    seq = picture.seq

        async def camera() -> None:
            for i in range(1, 400):  # a 200 fps camera: far above the cap
                live.update("cam", "m", frame(i), boxes())
                await asyncio.sleep(0.005)
                if len(received["a"]) >= 8 and len(received["b"]) >= 8:
                    return

        await asyncio.gather(viewer("a"), viewer("b"), camera())
        assert received["a"] == received["b"]
        assert renderer.calls == len(received["a"]), (renderer.calls, received)
        gaps = np.diff(made)
        assert (gaps >= 1 / 20 - 1e-3).all(), gaps  # never two encodes within 1/max_fps
        assert holder.viewers == 0
        live.close()

    asyncio.run(main())


def test_viewer_limit_and_close_end_viewers() -> None:
    async def main() -> None:
        live = LiveView(LiveViewOptions(max_viewers=1), renderer=CountingRenderer())
        holder = live.track("cam")
        with holder.viewer():
            with pytest.raises(ViewerLimitError) as err:
                with holder.viewer():
                    pass
            assert err.value.stream == "cam" and err.value.limit == 1
            assert "LIVE_VIEW_MAX_VIEWERS=1" in str(err.value)
            waiting = asyncio.ensure_future(holder.next_after(0, timeout=30.0))
            await asyncio.sleep(0.01)
            live.forget("cam")  # the stream is removed: its viewers are let go at once
            assert await asyncio.wait_for(waiting, 1.0) is None
        assert holder.viewers == 0 and holder.closed
        live.close()

    asyncio.run(main())


def test_router_keeps_only_the_newest_result_of_tracked_streams() -> None:
    async def main() -> None:
        live = LiveView(renderer=CountingRenderer())
        live.set_colors("m", {"cat": "#00ff00"})
        router = ResultRouter("agent", [], live=live)
        watch(live.track("cam"))
        frames = [frame(i) for i in range(3)]
        for f in frames:
            router(InferenceResult(f, boxes(), "m", 1.0, 1.0, 1))
        router(InferenceResult(frame(9, stream="gone"), boxes(), "m", 1.0, 1.0, 1))
        assert live.picture("gone") is None, "a result of an untracked (removed) stream was kept"
        picture = await live.picture("cam").latest()  # type: ignore[union-attr]
        assert picture is not None and picture.frame_id == 2
        # The model's colour was used: the box's left edge is green.
        import cv2

        decoded = cv2.imdecode(np.frombuffer(picture.jpeg, np.uint8), cv2.IMREAD_COLOR)
        b, g, r = (int(v) for v in decoded[35, 10])
        assert g > 200 and b < 60 and r < 60, (b, g, r)
        live.close()

    asyncio.run(main())
