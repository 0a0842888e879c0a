"""End to end with a real agent and a real mosquitto: OWLv2 on streams with visual prompts
(STREAM_<NAME>_TRAINING_DATA), the network from the Hugging Face cache layout, offline.

The reference image of the example boxes is the frame of stream ``same`` (a lossless FFV1 clip, so
the decoded frames are the reference's pixels): its two examples are found where they were drawn,
at OWLv2's own default threshold (0.99). Stream ``other`` shows different pixels: nothing there.
The references' embeddings land in the model cache (MODEL_CACHE_DIR/owlv2-embeddings).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import jsonschema
import pytest

pytest.importorskip("transformers")

from tests.agent_process import AgentProcess
from tests.owl_factory import lossless_clip, tiny_owlv2, write_hub_snapshot
from tests.test_owlv2 import VERSION, _training_file, noise_frame

SCHEMA = json.loads((Path(__file__).resolve().parent.parent / "pipelines/schemas/prediction.schema.json").read_text())
AGENT = "owl"
FRAMES = 3


def test_owlv2_streams_with_example_boxes(tmp_path: Path, mosquitto, mqtt_subscriber_factory):
    cache = tmp_path / "cache"
    write_hub_snapshot(cache / "hf_home" / "hub", VERSION, tiny_owlv2())
    frame = noise_frame()
    training = _training_file(tmp_path, frame)
    same = lossless_clip(tmp_path / "same.mkv", [frame] * FRAMES)
    other = lossless_clip(tmp_path / "other.mkv", [noise_frame(9)] * FRAMES)
    env = {
        "MQTT_HOST": "127.0.0.1",
        "MQTT_PORT": str(mosquitto.port),
        "AGENT_ID": AGENT,
        "MODEL_CACHE_DIR": str(cache),
        "OFFLINE_MODE": "true",
        "CORE_MODEL_OWLV2_ENABLED": "true",
        "MODEL_ID": f"owlv2/{VERSION}",
        "SHUTDOWN_TIMEOUT": "60",
        "STREAMS": f"same={same};other={other}",
        "STREAM_SAME_TRAINING_DATA": str(training),
        "STREAM_OTHER_TRAINING_DATA": str(training),
        "STREAM_SAME_MODE": "every",
        "STREAM_OTHER_MODE": "every",
    }
    sub = mqtt_subscriber_factory(mosquitto, [f"edge-agent/{AGENT}/+/predictions"], qos=1)
    with AgentProcess(env, tmp_path) as agent:
        rc = agent.wait(timeout=240)
        log = agent.stderr_path.read_text(errors="replace")
        assert rc == 0, log[-4000:]
    assert sub.wait_for(lambda msgs: len({m.json()["message_id"] for m in msgs}) >= 2 * FRAMES, timeout=30)
    got: dict[str, dict[int, dict]] = defaultdict(dict)
    for message in sub.messages:
        payload = message.json()
        jsonschema.validate(payload, SCHEMA)
        got[payload["stream"]][payload["frame_id"]] = payload
    assert {k: len(v) for k, v in got.items()} == {"same": FRAMES, "other": FRAMES}
    for m in got["same"].values():
        rows = {p["class"]: p for p in m["predictions"]}
        assert set(rows) == {"tag", "badge"}
        assert (rows["tag"]["x"], rows["tag"]["y"], rows["tag"]["width"]) == pytest.approx((40, 40, 20), abs=0.05)
        assert (rows["badge"]["x"], rows["badge"]["y"]) == pytest.approx((100, 80), abs=0.05)
        assert all(p["confidence"] > 0.99 for p in m["predictions"])
    for m in got["other"].values():
        assert m["predictions"] == []
    assert len(list((cache / "owlv2-embeddings" / VERSION).glob("*.npz"))) == 1


def test_visual_prompts_change_through_the_control_api(tmp_path: Path):
    """PATCH /streams/NAME swaps a running stream's training data: the next frames find only the
    new examples; a field that cannot change on a running stream is refused (400)."""
    from tests.fixtures.mosquitto import free_port
    from tests.http_client import request

    cache = tmp_path / "cache"
    write_hub_snapshot(cache / "hf_home" / "hub", VERSION, tiny_owlv2())
    frame = noise_frame()
    training = _training_file(tmp_path, frame)
    only_tag = tmp_path / "only-tag.json"
    data = json.loads(training.read_text())
    data[0]["boxes"] = [data[0]["boxes"][0]]
    only_tag.write_text(json.dumps(data))
    clip = lossless_clip(tmp_path / "same.mkv", [frame] * 10)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "MODEL_CACHE_DIR": str(cache),
        "OFFLINE_MODE": "true",
        "CORE_MODEL_OWLV2_ENABLED": "true",
        "MODEL_ID": f"owlv2/{VERSION}",
        "STREAMS": f"cam={clip}",
        "STREAM_CAM_LOOP": "true",
        "STREAM_CAM_MAX_FPS": "5",
        "STREAM_CAM_TRAINING_DATA": str(training),
        "STDOUT_SINK": "true",
        "HEALTH_PORT": str(port),
        "CONTROL_API": "true",
    }

    def classes(p: dict) -> set[str]:
        return {row["class"] for row in p["predictions"]}

    with AgentProcess(env, tmp_path) as agent:
        assert agent.wait_for(lambda ps: any(classes(p) == {"tag", "badge"} for p in ps), timeout=120), agent.stderr()
        status, _, body = request(f"{base}/streams/cam", method="PATCH", body={"url": "/elsewhere.mp4"})
        assert status == 400 and b"cannot change on a running stream" in body
        status, _, body = request(f"{base}/streams/cam", method="PATCH", body={"training_data": str(only_tag)})
        assert status == 200, body
        assert json.loads(body)["config"]["training_data"] == str(only_tag)
        seen = len(agent.predictions())
        assert agent.wait_for(lambda ps: any(classes(p) == {"tag"} for p in ps[seen:]), timeout=60), agent.stderr()
        settled = len(agent.predictions()) + 1  # a batch already in flight may still use the old set
        assert agent.wait_for(lambda ps: len(ps) >= settled + 2, timeout=60)
        assert all(classes(p) == {"tag"} for p in agent.predictions()[settled:])
        agent.terminate()
