"""DECODE=all|keyframes|auto through the real reader: H.264 clips with a known GOP served by a real
GStreamer RTSP server on 127.0.0.1 (tests/rtsp_server.py), files and HLS; each frame carries its
index in its pixels (tests/fixtures/media.py), so a test knows which frames were keyframes.

Plus the pure rules of ``sources.decoding`` against hand-computed values.
"""

from __future__ import annotations

import asyncio
import functools
import http.server
import itertools
import logging
import threading
from fractions import Fraction
from pathlib import Path

import av
import pytest

from edge_agent.pipelines.errors import SourceConfigError
from edge_agent.pipelines.slot import LatestFrameSlot
from edge_agent.pipelines.sources import SourceOptions, SourceSpec, StreamRunner
from edge_agent.pipelines.sources.decoding import (
    LONG_GOP_S,
    DecoderBudget,
    KeyframeClock,
    auto_choice,
    decoder_thread_budget,
    intra_only_reason,
    long_gop,
    long_gop_warning,
)
from edge_agent.pipelines.stream_config import StreamConfig
from tests.fixtures.media import cancel_and_wait, collect_frames, draw_frame, read_counter, wait_until, write_hls
from tests.fixtures.rtsp import RtspServer

pytestmark = pytest.mark.timeout(90)

FAST = {"backoff_initial": 0.2, "backoff_max": 1.0, "analyze_duration": 0.3, "open_timeout": 4.0}
FPS = 30
GOP = 15  # a keyframe every 0.5 s at 30 fps
LOOP_FRAMES = 120  # the 4 s clip loops every 120 frames (a multiple of GOP: keyframes stay at k*15)


# -- pure rules ----------------------------------------------------------------------------------


def test_keyframe_clock_reports_the_median_gap() -> None:
    clock = KeyframeClock()
    assert clock.interval is None
    clock.observe(None)  # RTSP's first frame may have no timestamp: counted, no gap
    clock.observe(10.0)
    assert clock.interval is None and clock.keyframes == 2
    for pts in (12.0, 14.0, 14.5, 16.0, 18.0):  # one scene-cut keyframe at 14.5
        clock.observe(pts)
    # gaps 2, 2, 0.5, 1.5, 2 -> median 2
    assert clock.interval == 2.0
    clock.observe(3.0)  # time went backwards: a looped file, a new timeline
    assert clock.interval is None
    clock.observe(8.0)
    assert clock.interval == 5.0
    clock.restart()  # a reconnect keeps what was learnt but not the last timestamp
    clock.observe(100.0)
    assert clock.interval == 5.0


def test_auto_rule() -> None:
    assert auto_choice(None, 2.0)[0] == "all"  # no cap: every frame may be wanted
    assert auto_choice(0.5, None) == ("all", "keyframe rate not measured yet")
    assert auto_choice(0.5, 2.0)[0] == "keyframes"  # cap == keyframe rate (0.5/s)
    assert auto_choice(0.5, 2.0001)[0] == "keyframes"  # measurement noise around "equal"
    assert auto_choice(0.2, 2.0)[0] == "keyframes"
    assert auto_choice(1.0, 2.0)[0] == "all"  # wants 1/s, keyframes give 0.5/s
    assert auto_choice(2.0, 0.5)[0] == "keyframes"


def test_long_gop_rule_and_warning() -> None:
    assert LONG_GOP_S == 4.0
    assert not long_gop(None) and not long_gop(2.0) and not long_gop(4.0)
    assert long_gop(10.0)
    assert long_gop(10.0, max_fps=0.5)  # wants a frame every 2 s, gets one every 10 s
    assert not long_gop(10.0, max_fps=0.1)  # wants one every 10 s: the GOP is no worse
    assert long_gop_warning("gate", 3.0) is None
    text = long_gop_warning("gate", 10.0)
    assert text is not None and "every 10.0 s" in text and "GOP" in text and "DECODE=all" in text


def test_intra_only_codecs_cannot_skip() -> None:
    assert intra_only_reason("h264", False) is None
    reason = intra_only_reason("mjpeg", True)
    assert reason is not None and "mjpeg" in reason and "nothing to skip" in reason


def test_decoder_thread_budget() -> None:
    assert decoder_thread_budget(1, 2) == 2
    assert decoder_thread_budget(2, 2) == 1
    assert decoder_thread_budget(64, 2) == 1
    assert decoder_thread_budget(2, 8) == 4
    assert decoder_thread_budget(3, 8) == 2
    assert decoder_thread_budget(0, 4) == 4
    assert decoder_thread_budget(1, 8, keyframes=True) == 1
    budget = DecoderBudget(cores=8)
    for _ in range(4):
        budget.join()
    assert budget.streams == 4 and budget.threads() == 2 and budget.threads(keyframes=True) == 1
    budget.leave()
    assert budget.threads() == 2  # 8 // 3
    for _ in range(5):
        budget.leave()
    assert budget.streams == 0


def test_decode_option_is_validated() -> None:
    assert SourceOptions(decode=" KeyFrames ").decode == "keyframes"
    assert StreamConfig(name="gate", url="rtsp://h/x", decode="auto").decode == "auto"
    assert SourceOptions().decode == "all"
    with pytest.raises(SourceConfigError, match=r"decode must be 'all' or 'keyframes' or 'auto', got 'iframes'"):
        SourceOptions(decode="iframes")


# -- real streams --------------------------------------------------------------------------------


def _runner(url: str, ev_loop: asyncio.AbstractEventLoop, **opts) -> tuple[StreamRunner, LatestFrameSlot]:
    options = SourceOptions(**(FAST | opts))
    slot = LatestFrameSlot(ev_loop)
    return StreamRunner("cam", SourceSpec.parse(url), options, slot), slot


@pytest.fixture
def gop_server(rtsp_server_factory, clip_factory) -> RtspServer:
    """An RTSP server looping a 320x240 30 fps clip with a keyframe every 15 frames."""
    clip = clip_factory(LOOP_FRAMES / FPS, FPS, (320, 240), gop=GOP)
    return rtsp_server_factory({"cam": clip})


def _check_keyframes_only(frames: list, interval: float) -> None:
    counters = [read_counter(f.image) for f in frames]
    assert all(c % GOP == 0 for c in counters), counters
    for a, b, ca, cb in zip(frames, frames[1:], counters, counters[1:], strict=False):
        # stream time between two delivered frames: the keyframes' distance in the clip
        expected = ((cb - ca) % LOOP_FRAMES) / FPS
        assert expected > 0, counters
        if a.pts is not None and b.pts is not None:
            assert b.pts - a.pts == pytest.approx(expected, abs=0.02), (a, b)
            # and the capture times follow the keyframes' own timestamps (RTSP's first frame has
            # no timestamp yet and comes out of the probe late: the pairs with one are checked)
            assert b.capture_time - a.capture_time == pytest.approx(expected, abs=0.2), (ca, cb)
        assert b.frame_id == a.frame_id + 1  # frame_id counts decoded frames: only keyframes here
    assert interval == pytest.approx(GOP / FPS, abs=0.02)


def test_keyframes_mode_delivers_only_keyframes_at_their_times(gop_server: RtspServer) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        runner, slot = _runner(gop_server.url("cam"), loop, decode="keyframes")
        task = asyncio.create_task(runner.run())
        frames = await collect_frames(slot, seconds=12, n=7)
        stats = runner.stats
        await cancel_and_wait(task)
        assert len(frames) == 7, stats
        assert stats.decode == "keyframes" and stats.decoding == "keyframes", stats
        assert stats.keyframe_interval_s is not None
        _check_keyframes_only(frames, stats.keyframe_interval_s)
        # nothing but keyframes went through the decoder's output
        assert stats.frames_decoded <= stats.frames_delivered + 1, stats
        assert stats.decoder_threads == 1 and not stats.long_gop
        assert stats.dropped == 0

    asyncio.run(scenario())


def test_decoders_share_the_cores_out(gop_server: RtspServer) -> None:
    """An 8-core budget shared by four streams: those decoding everything get 8 // 4 = 2 slice
    threads each, a keyframes-only one 1, and decoder_threads set by hand wins."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        budget = DecoderBudget(cores=8)
        runners = []
        for decode, threads in (("all", 0), ("all", 0), ("keyframes", 0), ("all", 3)):
            options = SourceOptions(**(FAST | {"decode": decode, "decoder_threads": threads}))
            runner = StreamRunner(
                "cam", SourceSpec.parse(gop_server.url("cam")), options, LatestFrameSlot(loop), budget=budget
            )
            runners.append(runner)
        tasks = [asyncio.create_task(r.run()) for r in runners]
        await wait_until(lambda: all(r.stats.state == "streaming" for r in runners), 15)
        threads = [r.stats.decoder_threads for r in runners]
        assert budget.streams == 4
        for task in tasks:
            await cancel_and_wait(task)
        assert threads == [2, 2, 1, 3]  # 8 cores // 4 streams; keyframes: 1; set by hand: 3
        assert budget.streams == 0  # the readers left when they stopped

    asyncio.run(scenario())


def test_all_mode_measures_the_keyframe_interval_too(gop_server: RtspServer) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        runner, slot = _runner(gop_server.url("cam"), loop)
        task = asyncio.create_task(runner.run())
        frames = await collect_frames(slot, seconds=12, n=45)
        await wait_until(lambda: runner.stats.keyframe_interval_s is not None, 5)
        stats = runner.stats
        await cancel_and_wait(task)
        counters = [read_counter(f.image) for f in frames]
        assert sum(c % GOP != 0 for c in counters) >= 30, counters  # inter frames too
        assert stats.decoding == "all" and stats.keyframe_interval_s == pytest.approx(0.5, abs=0.02)

    asyncio.run(scenario())


def test_auto_decodes_keyframes_when_the_cap_is_at_or_below_the_keyframe_rate(gop_server: RtspServer) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        # keyframes come 2/s: a 2 fps cap is met by keyframes alone, a 5 fps cap is not
        slow, slow_slot = _runner(gop_server.url("cam"), loop, decode="auto", max_fps=2)
        fast, fast_slot = _runner(gop_server.url("cam"), loop, decode="auto", max_fps=5)
        tasks = [asyncio.create_task(r.run()) for r in (slow, fast)]
        await wait_until(lambda: slow.stats.decoding == "keyframes", 10)
        slow_slot.take()  # what came before the switch
        slow_frames, fast_frames = await asyncio.gather(
            collect_frames(slow_slot, seconds=12, n=5), collect_frames(fast_slot, seconds=12, n=12)
        )
        slow_stats, fast_stats = slow.stats, fast.stats
        for task in tasks:
            await cancel_and_wait(task)
        assert slow_stats.decoding == "keyframes" and "<= keyframe rate" in (slow_stats.decode_reason or "")
        _check_keyframes_only(slow_frames, slow_stats.keyframe_interval_s or 0)
        assert fast_stats.decoding == "all" and "> keyframe rate" in (fast_stats.decode_reason or "")
        assert any(read_counter(f.image) % GOP for f in fast_frames)
        assert fast_stats.keyframe_interval_s == pytest.approx(0.5, abs=0.02)

    asyncio.run(scenario())


def test_long_gop_is_warned_and_its_quiet_spells_are_not_stalls(
    rtsp_server_factory, clip_factory, caplog: pytest.LogCaptureFixture
) -> None:
    # a keyframe every 5 s (50 frames at 10 fps); stall_timeout 3 s is shorter than the GOP
    clip = clip_factory(10.0, 10, (320, 240), gop=50)
    server = rtsp_server_factory({"cam": clip})

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        runner, slot = _runner(server.url("cam"), loop, decode="keyframes", stall_timeout=3.0)
        task = asyncio.create_task(runner.run())
        frames = await collect_frames(slot, seconds=20, n=3)
        stats = runner.stats
        await cancel_and_wait(task)
        assert [read_counter(f.image) % 50 for f in frames] == [0, 0, 0], stats
        assert stats.stalls == 0 and stats.reconnects == 0, stats
        assert stats.keyframe_interval_s == pytest.approx(5.0, abs=0.05) and stats.long_gop

    with caplog.at_level(logging.WARNING, logger="edge_agent.stream"):
        asyncio.run(scenario())
    warnings = [r.getMessage() for r in caplog.records if "keyframes come every 5.0 s" in r.getMessage()]
    assert len(warnings) == 1, caplog.text  # said once, not on every keyframe
    assert "GOP" in warnings[0]


def test_no_keyframe_within_keyframe_wait_falls_back(
    rtsp_server_factory, clip_factory, caplog: pytest.LogCaptureFixture
) -> None:
    clip = clip_factory(4.0, FPS, (320, 240), gop=60)  # a keyframe every 2 s

    server = rtsp_server_factory({"cam": clip})

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        runner, slot = _runner(server.url("cam"), loop, decode="keyframes", keyframe_wait=0.5)
        task = asyncio.create_task(runner.run())
        await wait_until(lambda: runner.stats.decoding == "all" and runner.stats.frames_decoded > 5, 10)
        frames = await collect_frames(slot, seconds=5, n=10)
        await cancel_and_wait(task)
        assert any(read_counter(f.image) % 60 for f in frames)
        assert "no keyframe for 0.5 s" in (runner.stats.decode_reason or "")

    with caplog.at_level(logging.WARNING, logger="edge_agent.stream"):
        asyncio.run(scenario())
    assert "no keyframe for 0.5 s" in caplog.text


# -- files, HLS, and codecs that cannot skip ------------------------------------------------------


def _encode(path: Path, codec: str, frames: int = 20, fps: int = 10, gop: int = 5) -> Path:
    """A 160x128 clip of ``codec`` with a keyframe every ``gop`` frames, counter-stamped."""
    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = 256, 128
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        stream.time_base = Fraction(1, fps)
        stream.codec_context.gop_size = gop
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(draw_frame(i, 256, 128), format="bgr24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


@pytest.mark.parametrize(
    ("codec", "why"),
    [
        # every MJPEG frame is a keyframe: nothing to skip (the codec says so: intra only)
        ("mjpeg", "every frame of mjpeg is a keyframe"),
        # FFmpeg's VP9 decoder ignores skip_frame: it keeps returning inter frames
        ("libvpx-vp9", "the vp9 decoder does not skip non-key frames"),
    ],
)
def test_a_codec_that_cannot_skip_falls_back_to_all(
    tmp_path: Path, codec: str, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    try:
        clip = _encode(tmp_path / "clip.mkv", codec)
    except (av.error.FFmpegError, ValueError) as exc:  # an FFmpeg build without the encoder
        pytest.skip(f"cannot encode {codec} here: {exc}")

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        runner, slot = _runner(str(clip), loop, decode="keyframes", mode="live")
        task = asyncio.create_task(runner.run())
        frames = await collect_frames(slot, seconds=10, until=task.done)
        await asyncio.wait_for(task, 5)
        stats = runner.stats
        counters = [read_counter(f.image) for f in frames]
        # paced live at 10 fps with a fast consumer: every frame (or all but the first ones
        # decoded before the decoder showed it ignores the skip)
        assert len(counters) >= 17 and counters == sorted(counters), counters
        assert any(c % 5 for c in counters), counters
        assert stats.state == "finished"

    with caplog.at_level(logging.INFO, logger="edge_agent.stream"):
        asyncio.run(scenario())
    assert why in caplog.text


def test_mjpeg_camera_over_rtsp_falls_back_to_all(
    rtsp_server_factory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An MJPEG camera (RTP/JPEG from the real RTSP server): every frame is a keyframe, so
    DECODE=keyframes has nothing to skip; every frame comes through and the log says why."""
    clip = _encode(tmp_path / "mjpeg.mkv", "mjpeg", frames=30, fps=10)
    server = rtsp_server_factory({"cam": clip})

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        runner, slot = _runner(server.url("cam"), loop, decode="keyframes")
        task = asyncio.create_task(runner.run())
        frames = await collect_frames(slot, seconds=12, n=12)
        stats = runner.stats
        await cancel_and_wait(task)
        steps = [(read_counter(b.image) - read_counter(a.image)) % 30 for a, b in itertools.pairwise(frames)]
        assert steps.count(1) >= 9, steps  # consecutive frames, not one per GOP
        assert stats.codec == "mjpeg" and stats.decoding == "all", stats
        assert "nothing to skip" in (stats.decode_reason or "")

    with caplog.at_level(logging.WARNING, logger="edge_agent.stream"):
        asyncio.run(scenario())
    assert "every frame of mjpeg is a keyframe" in caplog.text


def test_file_in_live_mode_and_hls_decode_keyframes(tmp_path: Path, clip_factory) -> None:
    clip = clip_factory(4.0, FPS, (320, 240), gop=GOP)
    root = tmp_path / "www"
    write_hls(clip, root / "cam", segment_seconds=1.0)
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        hls = f"http://127.0.0.1:{server.server_address[1]}/cam/index.m3u8"
        for url in (str(clip), hls):
            runner, slot = _runner(url, loop, decode="keyframes", mode="live", read_timeout=3)
            task = asyncio.create_task(runner.run())
            frames = await collect_frames(slot, seconds=15, until=task.done)
            await asyncio.wait_for(task, 5)
            counters = [read_counter(f.image) for f in frames]
            assert counters == list(range(0, LOOP_FRAMES, GOP)), (url, counters)
            for a, b in itertools.pairwise(frames):  # paced like the camera would have sent them
                assert b.capture_time - a.capture_time == pytest.approx(GOP / FPS, abs=0.2)
            assert runner.stats.frames_decoded == len(counters)

    try:
        asyncio.run(scenario())
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass
