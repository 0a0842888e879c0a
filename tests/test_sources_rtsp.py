"""RTSP through a real server (gst-rtsp-server on 127.0.0.1, tests/rtsp_server.py): reading,
a killed server, a restarted one, a frozen one (SIGSTOP), and bad cameras next to good ones."""

from __future__ import annotations

import asyncio
import itertools
import logging
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.pipelines.slot import LatestFrameSlot
from edge_agent.pipelines.sources import SourceOptions, SourceSpec, StreamRunner
from tests.fixtures.media import cancel_and_wait, collect_frames, read_counter, reader_threads, wait_until
from tests.fixtures.rtsp import RtspServer, make_self_signed_cert

pytestmark = pytest.mark.timeout(90)

# Fast-moving settings so outages are seen and healed within a test's few seconds.
FAST = {"backoff_initial": 0.2, "backoff_max": 1.0, "analyze_duration": 0.3, "open_timeout": 4.0}


def _runner(name: str, url: str, ev_loop: asyncio.AbstractEventLoop, **opts) -> tuple[StreamRunner, LatestFrameSlot]:
    options = SourceOptions(**(FAST | opts))
    slot = LatestFrameSlot(ev_loop)
    return StreamRunner(name, SourceSpec.parse(url), options, slot), slot


@pytest.fixture
def black_hole() -> Iterator[str]:
    """An RTSP URL whose port accepts TCP connections but never answers (a hung camera)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    try:
        yield f"rtsp://127.0.0.1:{sock.getsockname()[1]}/hung"
    finally:
        sock.close()


def _closed_port_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"rtsp://127.0.0.1:{port}/nobody"


def test_reads_two_mounts_of_one_server(rtsp_server: RtspServer) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        runners = [_runner(m, rtsp_server.url(m), loop) for m in ("cam1", "cam2")]
        tasks = [asyncio.create_task(r.run()) for r, _ in runners]
        started = time.monotonic()
        results = await asyncio.gather(*(collect_frames(slot, seconds=10, n=45) for _, slot in runners))
        for (runner, _slot), frames in zip(runners, results, strict=True):
            assert len(frames) == 45, runner.stats
            assert all(f.image.shape == (240, 320, 3) for f in frames)
            assert [f.frame_id for f in frames] == sorted({f.frame_id for f in frames})
            assert all(f.stream == runner.name for f in frames)
            assert all(abs(f.capture_time - time.time()) < 10 for f in frames)
            # RTSP's very first frame may lack a timestamp (no RTP/RTCP mapping yet); the rest have one
            assert all(f.pts is not None for f in frames[2:])
            # the clip's counter advances by one per frame (modulo its 90-frame loop) when the
            # consumer keeps up: a fast consumer sees a real camera's every frame
            steps = [(read_counter(b.image) - read_counter(a.image)) % 90 for a, b in itertools.pairwise(frames)]
            assert steps.count(1) >= 35, steps
            stats = runner.stats
            assert stats.state == "streaming" and stats.kind == "rtsp"
            assert 20 <= stats.fps_in <= 40, stats
            assert stats.last_frame_age_s is not None and stats.last_frame_age_s < 1
        # connect + 45 frames at 30 fps: ~2 s
        assert time.monotonic() - started < 6
        for task in tasks:
            assert await cancel_and_wait(task) < 1.5

    asyncio.run(scenario())
    assert reader_threads() == []


def test_udp_transport(rtsp_server: RtspServer) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        runner, slot = _runner("udp", rtsp_server.url("cam1"), loop, rtsp_transport="udp")
        task = asyncio.create_task(runner.run())
        frames = await collect_frames(slot, seconds=10, n=20)
        assert len(frames) == 20 and frames[0].image.shape == (240, 320, 3)
        await cancel_and_wait(task)

    asyncio.run(scenario())


def test_killed_server_backs_off_and_recovers_on_restart(rtsp_server_factory) -> None:
    server = rtsp_server_factory()

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        runner, slot = _runner("cam", server.url(), loop)
        task = asyncio.create_task(runner.run())
        assert len(await collect_frames(slot, seconds=10, n=10)) == 10
        ids_before = runner.stats.frames_delivered

        server.kill()
        # PyAV ends quietly when the server dies; the runner must call that a disconnect
        took = await wait_until(lambda: runner.state == "backoff", 5)
        assert took < 2.0
        assert "ended" in (runner.stats.last_error or "")
        await asyncio.sleep(1.0)  # a few refused reconnects while it is down
        assert runner.state in ("backoff", "connecting")
        assert "refused" in (runner.stats.last_error or "").lower()

        server.restart()
        await wait_until(lambda: runner.state == "streaming", 10)
        frames = await collect_frames(slot, seconds=10, n=10)
        assert len(frames) == 10
        assert frames[0].frame_id >= ids_before  # ids continue across reconnects
        stats = runner.stats
        assert stats.reconnects >= 1 and stats.abandoned_threads == 0
        await cancel_and_wait(task)

    asyncio.run(scenario())
    assert reader_threads() == []


def test_frozen_server_is_detected_as_stalled_and_recovers(rtsp_server_factory) -> None:
    server = rtsp_server_factory()
    stall_timeout = 1.5

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        runner, slot = _runner("cam", server.url(), loop, stall_timeout=stall_timeout, read_timeout=5.0)
        task = asyncio.create_task(runner.run())
        assert len(await collect_frames(slot, seconds=10, n=10)) == 10

        server.pause()  # SIGSTOP: TCP stays open, no more data
        frozen_at = time.monotonic()
        await wait_until(lambda: runner.state == "stalled", stall_timeout + 3)
        detected = time.monotonic() - frozen_at
        assert stall_timeout - 0.1 <= detected <= stall_timeout + 1.0, detected
        stats = runner.stats
        assert stats.stalls == 1 and "no frame" in (stats.last_error or "")

        server.resume()
        await wait_until(lambda: runner.state == "streaming", 15)
        assert len(await collect_frames(slot, seconds=10, n=10)) == 10
        assert runner.stats.reconnects >= 1
        await cancel_and_wait(task)
        # the thread that was blocked on the frozen socket got out by itself, none was abandoned
        assert runner.stats.abandoned_threads == 0

    asyncio.run(scenario())
    assert reader_threads() == []


def test_read_timeout_also_counts_as_a_stall(rtsp_server_factory) -> None:
    server = rtsp_server_factory()

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        # the read timeout is shorter than the stall timeout: FFmpeg gives up first
        runner, slot = _runner("cam", server.url(), loop, stall_timeout=10.0, read_timeout=1.0)
        task = asyncio.create_task(runner.run())
        assert len(await collect_frames(slot, seconds=10, n=5)) == 5
        server.pause()
        frozen_at = time.monotonic()
        await wait_until(lambda: runner.state == "stalled", 8)
        assert time.monotonic() - frozen_at < 4.0
        assert "read timeout" in (runner.stats.last_error or "")
        server.resume()
        await wait_until(lambda: runner.state == "streaming", 15)
        await cancel_and_wait(task)

    asyncio.run(scenario())


def test_bad_cameras_never_slow_a_good_one(rtsp_server: RtspServer, black_hole: str, caplog) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        good, good_slot = _runner("good", rtsp_server.url("cam1"), loop)
        refused, _ = _runner("refused", _closed_port_url(), loop, backoff_initial=0.05, backoff_max=0.1)
        hung, _ = _runner("hung", black_hole, loop, open_timeout=1.0)
        # the bad ones start first: the agent must start regardless
        tasks = [asyncio.create_task(r.run()) for r in (refused, hung, good)]
        frames = await collect_frames(good_slot, seconds=10, n=90)
        assert len(frames) == 90
        span = frames[-1].monotonic - frames[0].monotonic
        assert span < 4.0, span  # 89 intervals at 30 fps = 2.97 s: the good stream kept its pace
        steps = [(read_counter(b.image) - read_counter(a.image)) % 90 for a, b in itertools.pairwise(frames)]
        assert steps.count(1) >= 80
        assert refused.stats.reconnects >= 5 and refused.state in ("backoff", "connecting")
        assert hung.stats.last_error and "open timeout" in hung.stats.last_error
        assert good.stats.state == "streaming" and good.stats.reconnects == 0
        for task in tasks:
            assert not task.done()  # nobody raised
        durations = [await cancel_and_wait(t) for t in tasks]
        assert max(durations) < 3.0

    with caplog.at_level(logging.DEBUG, logger="edge_agent.stream"):
        asyncio.run(scenario())
    # a retry storm logs its first failure, not every retry
    refused_warnings = [
        r for r in caplog.records if r.name == "edge_agent.stream.refused" and r.levelno >= logging.WARNING
    ]
    assert 1 <= len(refused_warnings) <= 2, [r.getMessage() for r in refused_warnings]


def test_cancel_during_a_hung_connect_is_bounded(black_hole: str) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        runner, _ = _runner("hung", black_hole, loop, open_timeout=30.0, thread_join_timeout=0.5)
        task = asyncio.create_task(runner.run())
        await asyncio.sleep(0.5)
        assert runner.state == "connecting"
        took = await cancel_and_wait(task)
        assert took < 1.5
        # stuck in avformat_open_input until its own timeout: abandoned (daemon) and counted
        assert runner.stats.abandoned_threads == 1

    asyncio.run(scenario())


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI for a throw-away certificate")
def test_rtsps_with_and_without_certificate_checks(rtsp_server_factory, tmp_path: Path) -> None:
    cert, key = make_self_signed_cert(tmp_path / "tls")
    server = rtsp_server_factory(tls=(cert, key))
    assert server.url().startswith("rtsps://")

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        trusted, trusted_slot = _runner("trusted", server.url(), loop, tls_verify=True, tls_ca_file=str(cert))
        lax, lax_slot = _runner("lax", server.url(), loop)  # default: no certificate check
        strict, strict_slot = _runner("strict", server.url(), loop, tls_verify=True)  # unknown issuer
        tasks = [asyncio.create_task(r.run()) for r in (trusted, lax, strict)]
        got = await asyncio.gather(*(collect_frames(s, seconds=10, n=5) for s in (trusted_slot, lax_slot)))
        assert [len(g) for g in got] == [5, 5]
        await wait_until(lambda: strict.stats.reconnects >= 1, 10)
        assert strict.stats.frames_decoded == 0 and not strict_slot.has_frame
        assert strict.stats.last_error
        for task in tasks:
            await cancel_and_wait(task)

    asyncio.run(scenario())
