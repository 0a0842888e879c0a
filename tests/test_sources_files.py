"""Files and HTTP/HLS through the real reader: every / live / loop / max_fps, real PyAV, real
HTTP server on 127.0.0.1. Each frame carries its index in its pixels (tests/fixtures/media.py)."""

from __future__ import annotations

import asyncio
import functools
import http.server
import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.pipelines.slot import LatestFrameSlot
from edge_agent.pipelines.sources import SourceOptions, SourceSpec, StreamRunner
from tests.fixtures.media import (
    cancel_and_wait,
    collect_frames,
    read_counter,
    reader_threads,
    wait_until,
    write_hls,
)

pytestmark = pytest.mark.timeout(60)


def _runner(url: str, ev_loop: asyncio.AbstractEventLoop, **opts) -> tuple[StreamRunner, LatestFrameSlot]:
    options = SourceOptions(**opts)
    slot = LatestFrameSlot(ev_loop, wait_for_consumer=options.mode == "every")
    return StreamRunner("clip", SourceSpec.parse(url), options, slot), slot


def test_every_mode_delivers_each_frame_once_in_order_then_finishes(small_clip: Path) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        runner, slot = _runner(str(small_clip), loop, mode="every")
        task = asyncio.create_task(runner.run())
        # the consumer (10 ms per frame) is slower than the decoder (~1 ms per 320x240 frame)
        frames = await collect_frames(slot, seconds=20, delay=0.01, until=task.done)
        await asyncio.wait_for(task, 5)
        assert [read_counter(f.image) for f in frames] == list(range(90))
        assert [f.frame_id for f in frames] == list(range(90))
        assert all(f.stream == "clip" and f.image.shape == (240, 320, 3) for f in frames)
        assert all(f.image.dtype.name == "uint8" for f in frames)
        pts = [f.pts for f in frames]
        assert pts[0] == pytest.approx(0.0, abs=0.1) and all(b > a for a, b in itertools.pairwise(pts))
        assert all(b.monotonic >= a.monotonic for a, b in itertools.pairwise(frames))
        assert abs(frames[-1].capture_time - time.time()) < 5
        stats = runner.stats
        assert stats.state == "finished"
        assert (stats.frames_decoded, stats.frames_delivered, stats.dropped, stats.reconnects) == (90, 90, 0, 0)
        assert stats.last_error is None and (stats.width, stats.height) == (320, 240)
        assert slot.put_count == slot.taken_count == 90

    asyncio.run(scenario())
    assert reader_threads() == []


def test_live_mode_is_paced_like_a_camera(clip_factory) -> None:
    clip = clip_factory(2.0, 30, (320, 240))

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        runner, slot = _runner(str(clip), loop)
        started = time.monotonic()
        task = asyncio.create_task(runner.run())
        frames = await collect_frames(slot, seconds=10, until=task.done)
        await asyncio.wait_for(task, 5)
        elapsed = time.monotonic() - started
        # 60 frames at 30 fps: about two seconds, not the ~0.1 s an unpaced decode takes
        assert 1.8 <= elapsed <= 4.0, elapsed
        first, last = frames[0], frames[-1]
        assert 1.7 <= last.monotonic - first.monotonic <= 2.6
        assert len(frames) >= 50  # a fast consumer sees (almost) every frame
        assert runner.stats.state == "finished"

    asyncio.run(scenario())


def test_live_mode_drops_when_the_consumer_is_slow(clip_factory) -> None:
    clip = clip_factory(2.0, 30, (320, 240))

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        runner, slot = _runner(str(clip), loop)
        task = asyncio.create_task(runner.run())
        frames = await collect_frames(slot, seconds=10, delay=0.2, until=task.done)
        await asyncio.wait_for(task, 5)
        counters = [read_counter(f.image) for f in frames]
        assert counters == sorted(counters) and len(set(counters)) == len(counters)
        assert 6 <= len(frames) <= 16  # ~5 per second for 2 s, plus the last one
        # the newest frame wins: gaps of ~6 frames between what the slow consumer got
        assert max(b - a for a, b in itertools.pairwise(counters)) >= 4
        stats = runner.stats
        assert stats.frames_decoded == 60 and stats.dropped >= 40
        assert slot.put_count == slot.taken_count + slot.dropped + (1 if slot.has_frame else 0)

    asyncio.run(scenario())


def test_loop_restarts_the_file_and_frame_ids_keep_counting(clip_factory) -> None:
    clip = clip_factory(1.0, 30, (320, 240))

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        runner, slot = _runner(str(clip), loop, mode="every", loop=True)
        task = asyncio.create_task(runner.run())
        frames = await collect_frames(slot, seconds=15, n=75)
        assert not task.done()  # a looping file never finishes
        assert await cancel_and_wait(task) < 2.5
        assert [read_counter(f.image) for f in frames] == [i % 30 for i in range(75)]
        assert [f.frame_id for f in frames] == list(range(75))
        assert runner.stats.reconnects == 0  # looping is not a reconnect
        assert runner.stats.state == "streaming"

    asyncio.run(scenario())
    assert reader_threads() == []


def test_max_fps_skips_before_conversion(small_clip: Path) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        runner, slot = _runner(str(small_clip), loop, mode="every", max_fps=10)
        task = asyncio.create_task(runner.run())
        frames = await collect_frames(slot, seconds=20, until=task.done)
        await asyncio.wait_for(task, 5)
        # 30 fps capped at 10: exactly every third frame, by pts
        assert [read_counter(f.image) for f in frames] == list(range(0, 90, 3))
        # ids count decoded frames: each is the index drawn into its picture (gaps: the cap's skips)
        assert [f.frame_id for f in frames] == list(range(0, 90, 3))
        stats = runner.stats
        assert stats.skipped_by_fps_cap == 60 and stats.frames_decoded == 90 and stats.frames_delivered == 30

    asyncio.run(scenario())


def test_live_file_with_fps_cap(clip_factory) -> None:
    clip = clip_factory(2.0, 30, (320, 240))

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        runner, slot = _runner(str(clip), loop, max_fps=5)
        task = asyncio.create_task(runner.run())
        frames = await collect_frames(slot, seconds=10, until=task.done)
        await asyncio.wait_for(task, 5)
        assert 9 <= len(frames) <= 11  # 2 s at 5 fps
        gaps = [b.monotonic - a.monotonic for a, b in itertools.pairwise(frames)]
        assert min(gaps) > 0.12  # never faster than the cap (0.2 s, minus scheduling slack)

    asyncio.run(scenario())


def test_cancel_releases_a_reader_blocked_on_the_consumer(small_clip: Path) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        runner, slot = _runner(str(small_clip), loop, mode="every")
        task = asyncio.create_task(runner.run())
        await wait_until(lambda: slot.has_frame, 10)
        await asyncio.sleep(0.2)  # the reader now waits in put() for a consumer that never comes
        assert len(reader_threads()) == 1
        assert await cancel_and_wait(task) < 1.0
        assert runner.stats.abandoned_threads == 0

    asyncio.run(scenario())
    assert reader_threads() == []


def test_unreadable_file_is_tried_a_few_times_then_failed_not_raised(tmp_path: Path) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00not a video" * 100)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        runner, _slot = _runner(str(bad), loop, backoff_initial=0.05, backoff_max=0.1, file_attempts=3)
        task = asyncio.create_task(runner.run())
        await asyncio.wait_for(task, 15)  # ends by itself: a file does not heal like a camera
        stats = runner.stats
        assert stats.state == "failed" and runner.ended, stats
        assert stats.reconnects == 2, stats  # three attempts in all
        assert (stats.last_error or "").startswith("invalid data: what came back is not a video"), stats

    asyncio.run(scenario())
    assert reader_threads() == []


# -- HLS over a real HTTP server -------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_hls_playlist_over_http(small_clip: Path, http_root: tuple[str, Path]) -> None:
    base, root = http_root
    write_hls(small_clip, root / "cam", segment_seconds=1.0)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        spec_url = f"{base}/cam/index.m3u8"
        assert SourceSpec.parse(spec_url).is_hls
        runner, slot = _runner(spec_url, loop, mode="every", read_timeout=3)
        task = asyncio.create_task(runner.run())
        frames = await collect_frames(slot, seconds=20, until=task.done)
        await asyncio.wait_for(task, 5)
        assert [read_counter(f.image) for f in frames] == list(range(90))
        assert runner.stats.state == "finished" and runner.stats.kind == "http"

    asyncio.run(scenario())


def test_http_source_that_is_down_backs_off(http_root: tuple[str, Path]) -> None:
    base, _root = http_root

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        runner, _slot = _runner(f"{base}/nothing/index.m3u8", loop, backoff_initial=0.05, backoff_max=0.2)
        task = asyncio.create_task(runner.run())
        await wait_until(lambda: runner.stats.reconnects >= 1, 10)
        assert "404" in (runner.stats.last_error or "") or "Not Found" in (runner.stats.last_error or "")
        await cancel_and_wait(task)

    asyncio.run(scenario())


def test_memory_stays_flat_when_inference_is_slower_than_the_source(hd_clip: Path) -> None:
    psutil = pytest.importorskip("psutil")
    proc = psutil.Process()

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        # 1280x720 at 30 fps is ~83 MB/s of BGR frames; a 4 fps "model" takes one in eight
        runner, slot = _runner(str(hd_clip), loop, loop=True)
        task = asyncio.create_task(runner.run())
        await collect_frames(slot, seconds=1.0, delay=0.25)
        baseline = proc.memory_info().rss
        frames = await collect_frames(slot, seconds=3.0, delay=0.25)
        growth_mb = (proc.memory_info().rss - baseline) / 2**20
        await cancel_and_wait(task)
        assert len(frames) >= 8
        assert runner.stats.dropped >= 50  # the slot replaced what the model could not take
        # a queue would have held ~80 frames (~220 MB) by now
        assert growth_mb < 40, growth_mb

    asyncio.run(scenario())
