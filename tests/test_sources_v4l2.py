"""V4L2 cameras: a missing device is camera trouble (retried, reported), never a crash. With a real
camera at /dev/video0 (not on CI) a smoke test reads from it."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from edge_agent.pipelines.slot import LatestFrameSlot
from edge_agent.pipelines.sources import SourceOptions, SourceSpec, StreamRunner
from tests.fixtures.media import cancel_and_wait, collect_frames, reader_threads, wait_until

pytestmark = pytest.mark.timeout(60)


def _free_video_node() -> str:
    for n in range(90, 200):
        if not Path(f"/dev/video{n}").exists():
            return f"/dev/video{n}"
    raise RuntimeError("no unused /dev/videoN name")


def test_unplugged_camera_is_retried_with_a_clear_error() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        options = SourceOptions(backoff_initial=0.05, backoff_max=0.2, video_size="640x480", input_format="mjpeg")
        runner = StreamRunner("usb", SourceSpec.parse(_free_video_node()), options, LatestFrameSlot(loop))
        task = asyncio.create_task(runner.run())
        await wait_until(lambda: runner.stats.reconnects >= 2, 10)
        stats = runner.stats
        assert stats.kind == "v4l2" and stats.state in ("backoff", "connecting")
        assert "No such file or directory" in (stats.last_error or "")
        assert not task.done()
        await cancel_and_wait(task)

    asyncio.run(scenario())
    assert reader_threads() == []


@pytest.mark.skipif(
    not os.access("/dev/video0", os.R_OK) or bool(os.environ.get("CI")), reason="needs a real camera at /dev/video0"
)
def test_real_camera_smoke() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        slot = LatestFrameSlot(loop)
        runner = StreamRunner("usb", SourceSpec.parse("/dev/video0"), SourceOptions(), slot)
        task = asyncio.create_task(runner.run())
        frames = await collect_frames(slot, seconds=15, n=5)
        await cancel_and_wait(task)
        assert len(frames) == 5 and frames[0].image.ndim == 3, runner.stats

    asyncio.run(scenario())
