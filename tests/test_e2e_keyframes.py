"""DECODE through a real agent process: ``STREAM_<NAME>_DECODE`` from the environment, a real RTSP
server (GStreamer, 127.0.0.1) serving an H.264 clip with a keyframe every 0.5 s, a constant ONNX
detector; the keyframe interval and the decoding mode in the stream's stats (control API, the
same entry as the stats messages), /live.json and /metrics."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from tests.agent_process import AgentProcess
from tests.fixtures.mosquitto import free_port
from tests.http_client import get_json
from tests.live_agent import known_objects_model, sample, scrape, wait_for

pytestmark = pytest.mark.timeout(120)

GOP, FPS = 15, 30


def test_agent_decodes_keyframes_and_reports_the_interval(tmp_path: Path, clip_factory, rtsp_server_factory) -> None:  # type: ignore[no-untyped-def]
    clip = clip_factory(4.0, FPS, (320, 240), gop=GOP)
    server = rtsp_server_factory({"cam": clip, "all": clip})
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "MODEL_ID": str(known_objects_model(tmp_path / "model")),
        "HEALTH_PORT": str(port),
        "STDOUT_SINK": "true",
        "CONTROL_API": "true",
        "MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "STREAMS": f"cam={server.url('cam')};other={server.url('all')}",
        "STREAM_CAM_DECODE": "keyframes",
        "STREAM_OTHER_DECODE": "auto",
        "STREAM_OTHER_MAX_FPS": "5",  # above the 2/s keyframe rate: auto decodes all
    }
    with AgentProcess(env, tmp_path) as agent:
        assert agent.wait_for(lambda p: sum(m["stream"] == "cam" for m in p) >= 8, 60), agent.stderr()

        def live() -> dict | None:  # type: ignore[type-arg]
            status, body = get_json(f"{base}/live.json", timeout=5)
            streams = {s["name"]: s for s in body["streams"]} if status == 200 else {}
            ready = all(streams.get(n, {}).get("keyframe_interval_s") for n in ("cam", "other"))
            return streams if ready else None

        streams = wait_for(live, 30, "keyframe intervals on /live.json")
        assert streams["cam"]["decoding"] == "keyframes"
        assert streams["cam"]["keyframe_interval_s"] == pytest.approx(GOP / FPS, abs=0.02)
        assert streams["cam"]["long_gop"] is False
        assert streams["other"]["decoding"] == "all"

        metrics = scrape(base)
        assert sample(metrics, "edge_agent_stream_keyframe_interval_seconds", stream="cam") == pytest.approx(
            0.5, abs=0.02
        )
        assert sample(metrics, "edge_agent_stream_decoding_keyframes_only", stream="cam") == 1
        assert sample(metrics, "edge_agent_stream_decoding_keyframes_only", stream="other") == 0
        status, stats = get_json(f"{base}/streams/cam", timeout=5)  # the stats messages' entry
        assert status == 200 and stats["decode"] == "keyframes" and stats["decoding"] == "keyframes", stats
        assert stats["decoder_threads"] == 1 and stats["keyframe_interval_s"] == pytest.approx(0.5, abs=0.02)
        status, stats = get_json(f"{base}/streams/other", timeout=5)
        assert stats["decode"] == "auto" and "> keyframe rate" in stats["decode_reason"], stats
        agent.terminate()

    cam = [m for _, m in agent.lines if m.get("stream") == "cam" and "predictions" in m]
    # one result per keyframe: frame ids count up by one, frame times 0.5 s apart (the GOP)
    ids = [m["frame_id"] for m in cam]
    assert ids == list(range(ids[0], ids[0] + len(ids))), ids
    gaps = [b["frame_time"] - a["frame_time"] for a, b in itertools.pairwise(cam[2:])]
    assert all(g == pytest.approx(GOP / FPS, abs=0.2) for g in gaps), gaps
