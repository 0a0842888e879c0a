"""End to end with a real agent and a real mosquitto: SAM3 on a file stream with text prompts
(STREAM_<NAME>_PROMPTS), from the legacy ``/core_model`` cache layout, offline.

The tiny random network scores every query above 0 (STREAM_CAM_CONFIDENCE=0 keeps them all), so each
frame's message holds one instance per DETR query and prompt (20 each), published as Roboflow
instance segmentation with the prompt as class and polygon points, tracked like any detector's boxes
(tracker ids, track events). ``PATCH /streams/cam`` with new prompts: the next messages hold only the
new class.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("instant_clip_tokenizer")

from tests.agent_process import AgentProcess
from tests.owl_factory import lossless_clip
from tests.sam3_factory import checkpoint_bytes, original_sam3_state, sam3_model, tiny_sam3_config, vocabulary_gz

SCHEMA = json.loads((Path(__file__).resolve().parent.parent / "pipelines/schemas/prediction.schema.json").read_text())
AGENT = "sam3"
QUERIES = 20


def _classes(payload: dict) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in payload["predictions"]:
        counts[row["class"]] = counts.get(row["class"], 0) + 1
    return counts


def test_sam3_stream_with_prompts_and_a_prompt_change(tmp_path: Path, mosquitto, mqtt_subscriber_factory):
    from tests.fixtures.mosquitto import free_port
    from tests.http_client import request

    cache = tmp_path / "cache"
    directory = cache / "sam3" / "sam3_final"
    directory.mkdir(parents=True)
    (directory / "weights.pt").write_bytes(checkpoint_bytes(original_sam3_state(sam3_model(tiny_sam3_config()))))
    (directory / "bpe_simple_vocab_16e6.txt.gz").write_bytes(vocabulary_gz())
    frame = np.random.default_rng(3).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    clip = lossless_clip(tmp_path / "cam.mkv", [frame] * 10)
    port = free_port()
    env = {
        "MQTT_HOST": "127.0.0.1",
        "MQTT_PORT": str(mosquitto.port),
        "AGENT_ID": AGENT,
        "MODEL_CACHE_DIR": str(cache),
        "OFFLINE_MODE": "true",
        "MODEL_ID": "sam3/sam3_final",
        "STREAMS": f"cam={clip}",
        "STREAM_CAM_LOOP": "true",
        "STREAM_CAM_MAX_FPS": "2",
        "STREAM_CAM_PROMPTS": "cat|dog",
        "STREAM_CAM_CONFIDENCE": "0",
        "HEALTH_PORT": str(port),
        "CONTROL_API": "true",
        "SHUTDOWN_TIMEOUT": "60",
    }
    sub = mqtt_subscriber_factory(
        mosquitto, [f"edge-agent/{AGENT}/cam/predictions", f"edge-agent/{AGENT}/cam/events"], qos=1
    )

    def predictions() -> list[dict]:
        return [m.json() for m in sub.messages if m.topic.endswith("/predictions")]

    with AgentProcess(env, tmp_path) as agent:
        assert sub.wait_for(lambda _: len(predictions()) >= 3, timeout=240), agent.stderr()
        first = predictions()[:3]
        for payload in first:
            jsonschema.validate(payload, SCHEMA)
            assert _classes(payload) == {"cat": QUERIES, "dog": QUERIES}
            for row in payload["predictions"]:
                assert row["class_id"] == {"cat": 0, "dog": 1}[row["class"]]
                assert row["points"] and all(0 <= p["x"] <= 128 and 0 <= p["y"] <= 96 for p in row["points"])
        # the same frame each time: tracked, with ids on the rows and track events of the prompts' classes
        assert any("tracker_id" in row for row in first[-1]["predictions"])
        assert sub.wait_for(
            lambda msgs: any(m.topic.endswith("/events") and m.json()["type"].startswith("track.") for m in msgs),
            timeout=60,
        ), agent.stderr()
        events = [m.json() for m in sub.messages if m.topic.endswith("/events")]
        assert {e["class"] for e in events if "class" in e} <= {"cat", "dog"}

        base = f"http://127.0.0.1:{port}"
        status, _, body = request(f"{base}/streams/cam", method="PATCH", body={"prompts": ["car"]})
        assert status == 200, body
        seen = len(predictions())
        assert sub.wait_for(lambda _: any(_classes(p) == {"car": QUERIES} for p in predictions()[seen:]), 120), (
            agent.stderr()
        )
        settled = len(predictions()) + 1  # a frame already in flight may still carry the old prompts
        assert sub.wait_for(lambda _: len(predictions()) >= settled + 2, timeout=120), agent.stderr()
        assert all(_classes(p) == {"car": QUERIES} for p in predictions()[settled:])
        status, _, body = request(f"{base}/streams/cam", method="PATCH", body={"prompts": [f"p{i}" for i in range(17)]})
        assert status == 400 and b"16" in body
        agent.terminate()


def test_sam3_stream_without_prompts_stops_with_a_clear_error(tmp_path: Path):
    cache = tmp_path / "cache"
    directory = cache / "sam3" / "sam3_final"
    directory.mkdir(parents=True)
    (directory / "weights.pt").write_bytes(checkpoint_bytes(original_sam3_state(sam3_model(tiny_sam3_config()))))
    (directory / "bpe_simple_vocab_16e6.txt.gz").write_bytes(vocabulary_gz())
    clip = lossless_clip(tmp_path / "cam.mkv", [np.zeros((64, 64, 3), np.uint8)] * 2)
    env = {
        "MODEL_CACHE_DIR": str(cache),
        "OFFLINE_MODE": "true",
        "MODEL_ID": "sam3/sam3_final",
        "STREAMS": f"cam={clip}",
        "STDOUT_SINK": "true",
    }
    with AgentProcess(env, tmp_path) as agent:
        rc = agent.wait(timeout=240)
        log = agent.stderr_path.read_text(errors="replace")
    assert rc == 2, log[-4000:]
    assert "STREAM_CAM_PROMPTS" in log and "'cam'" in log
