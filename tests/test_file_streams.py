"""Files are not cameras (issue 11, item 2), through ``edge-agent run`` on real files.

A truncated recording plays its decodable frames once (or loops them with frame ids still
counting up) and the agent ends by itself; a file that cannot be read is tried a few times, then
marked failed; when no stream can produce frames the agent says so and exits (2 when every stream
failed); ``/dev/null`` is not a camera.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import av
import pytest

from edge_agent.pipelines.sources.spec import SourceSpec
from tests.agent_cli import assert_refused, run_cli
from tests.fixtures.media import make_clip

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def truncated_recording(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A 60-frame H.264 MP4 with its index up front (like a camera's recording), cut in half."""
    directory = tmp_path_factory.mktemp("truncated")
    source = make_clip(directory / "source.mp4", seconds=2.0, fps=30, size=(320, 240))
    whole = directory / "faststart.mp4"
    with av.open(str(source)) as src, av.open(str(whole), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    data = whole.read_bytes()
    cut = directory / "recording.mp4"
    cut.write_bytes(data[: len(data) // 2])
    return cut, 60


def _predictions(stdout: str) -> list[dict]:
    # prediction lines only: a tracked stream's events are printed too (told apart by "type")
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return [m for m in lines if "predictions" in m]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"MODEL_CACHE_DIR": str(tmp_path / "cache"), "STDOUT_SINK": "true", **extra}


def test_truncated_recording_in_every_mode_plays_once_and_the_agent_exits(tmp_path: Path, truncated_recording) -> None:  # type: ignore[no-untyped-def]
    clip, total = truncated_recording
    started = time.monotonic()
    result = run_cli("run", env=_env(tmp_path, STREAMS=f"rec={clip}", STREAM_REC_MODE="every"), timeout=120)
    assert result.returncode == 0, result.stderr
    frame_ids = [m["frame_id"] for m in _predictions(result.stdout)]
    assert 0 < len(frame_ids) < total, len(frame_ids)
    assert frame_ids == list(range(len(frame_ids))), "a frame was played twice or skipped"
    assert "every stream has finished" in result.stderr
    assert time.monotonic() - started < 60


def test_truncated_recording_loops_with_frame_ids_counting_up(tmp_path: Path, truncated_recording) -> None:  # type: ignore[no-untyped-def]
    clip, total = truncated_recording
    env = _env(tmp_path, STREAMS=f"rec={clip}", STREAM_REC_MODE="every", STREAM_REC_LOOP="true")
    result = run_cli("run", "--seconds", "8", env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    frame_ids = [m["frame_id"] for m in _predictions(result.stdout)]
    assert frame_ids == list(range(len(frame_ids))), "frame ids went back or jumped"
    assert len(frame_ids) > total, f"{len(frame_ids)} frames in 8 s: it did not loop"


@pytest.mark.parametrize("content", [b"", b"hello, this is not a video\n" * 100])
def test_a_file_that_is_not_a_video_fails_after_a_few_attempts_and_the_agent_exits_2(
    tmp_path: Path, content: bytes
) -> None:
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(content)
    started = time.monotonic()
    result = run_cli("run", env=_env(tmp_path, STREAMS=f"bad={bad}"), timeout=120)
    assert_refused(result, "no stream can produce frames", "bad")
    assert result.stderr.count("down:") + result.stderr.count("still down") <= 3, "retried more than a few times"
    assert time.monotonic() - started < 30


def test_one_failed_file_does_not_fail_the_others(tmp_path: Path) -> None:
    good = make_clip(tmp_path / "good.mp4", seconds=1.0, fps=30, size=(320, 240))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"garbage" * 100)
    env = _env(tmp_path, STREAMS=f"good={good};bad={bad}", STREAM_GOOD_MODE="every")
    result = run_cli("run", env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert [m["frame_id"] for m in _predictions(result.stdout) if m["stream"] == "good"] == list(range(30))
    assert "failed: bad" in result.stderr


def test_dev_null_is_not_a_camera(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="not a video capture device"):
        SourceSpec.parse("/dev/null")
    env = _env(tmp_path, STREAMS="cam=/dev/null")
    line = assert_refused(run_cli("config", env=env), "/dev/null", "not a video capture device")
    assert assert_refused(run_cli("run", env=env)) == line
    assert SourceSpec.parse("/dev/video97").kind == "v4l2"  # a camera not plugged in yet is fine
