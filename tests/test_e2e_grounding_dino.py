"""End to end with a real agent: Grounding DINO on file streams with text prompts
(STREAM_<NAME>_PROMPTS), published through a real mosquitto as object detection with the prompts
as classes; prompts changed on a running stream through the control API (PATCH /streams/NAME).

The checkpoint is the tiny rigged network of tests/gdino_factory in Roboflow's legacy layout, BERT
in the hub cache layout, offline: every query scores every caption token sigmoid(2), so a stream's
detections are all of its first prompt, at confidence 0.8808.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import jsonschema
import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("torch")

from tests.agent_process import AgentProcess
from tests.gdino_factory import RIGGED_LOGIT, rigged, tiny_grounding_dino, write_legacy
from tests.owl_factory import lossless_clip

SCHEMA = json.loads((Path(__file__).resolve().parent.parent / "pipelines/schemas/prediction.schema.json").read_text())
AGENT = "gdino"
FRAMES = 2
MODEL_ID = "grounding_dino/groundingdino_swint_ogc"
RIGGED = 1.0 / (1.0 + math.exp(-RIGGED_LOGIT))


def _frame(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (96, 128, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("gdino-cache")
    write_legacy(root, rigged(tiny_grounding_dino(seed=1)))
    return root


def test_streams_with_text_prompts_publish_their_classes(
    cache: Path, tmp_path: Path, mosquitto, mqtt_subscriber_factory
):
    pets = lossless_clip(tmp_path / "pets.mkv", [_frame(1)] * FRAMES)
    people = lossless_clip(tmp_path / "people.mkv", [_frame(2)] * FRAMES)
    env = {
        "MQTT_HOST": "127.0.0.1",
        "MQTT_PORT": str(mosquitto.port),
        "AGENT_ID": AGENT,
        "MODEL_CACHE_DIR": str(cache),
        "OFFLINE_MODE": "true",
        "MODEL_ID": MODEL_ID,
        "SHUTDOWN_TIMEOUT": "60",
        "STREAMS": f"pets={pets};people={people}",
        "STREAM_PETS_PROMPTS": "dog|cat",
        "STREAM_PEOPLE_PROMPTS": '["person", "car"]',
        "STREAM_PETS_MODE": "every",
        "STREAM_PEOPLE_MODE": "every",
    }
    sub = mqtt_subscriber_factory(mosquitto, [f"edge-agent/{AGENT}/+/predictions"], qos=1)
    with AgentProcess(env, tmp_path) as agent:
        rc = agent.wait(timeout=300)
        log = agent.stderr_path.read_text(errors="replace")
        assert rc == 0, log[-4000:]
    assert sub.wait_for(lambda msgs: len({m.json()["message_id"] for m in msgs}) >= 2 * FRAMES, timeout=30)
    got: dict[str, dict[int, dict]] = defaultdict(dict)
    for message in sub.messages:
        payload = message.json()
        jsonschema.validate(payload, SCHEMA)
        got[payload["stream"]][payload["frame_id"]] = payload
    assert {k: len(v) for k, v in got.items()} == {"pets": FRAMES, "people": FRAMES}
    for stream, first in (("pets", "dog"), ("people", "person")):
        for payload in got[stream].values():
            rows = payload["predictions"]
            assert rows, payload
            assert {r["class"] for r in rows} == {first} and {r["class_id"] for r in rows} == {0}
            assert all(r["confidence"] == pytest.approx(RIGGED, abs=1e-5) for r in rows)
            assert all(0 <= r["x"] <= 128 and 0 <= r["y"] <= 96 for r in rows)


def test_prompts_change_through_the_control_api(cache: Path, tmp_path: Path):
    """PATCH /streams/NAME {"prompts": [...]} swaps a running stream's classes: the next frames
    publish the new first prompt only."""
    from tests.fixtures.mosquitto import free_port
    from tests.http_client import request

    clip = lossless_clip(tmp_path / "cam.mkv", [_frame(3)] * 10)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "MODEL_CACHE_DIR": str(cache),
        "OFFLINE_MODE": "true",
        "MODEL_ID": MODEL_ID,
        "STREAMS": f"cam={clip}",
        "STREAM_CAM_LOOP": "true",
        "STREAM_CAM_MAX_FPS": "5",
        "STREAM_CAM_PROMPTS": "dog|cat",
        "STDOUT_SINK": "true",
        "HEALTH_PORT": str(port),
        "CONTROL_API": "true",
    }

    def classes(p: dict) -> set[str]:
        return {row["class"] for row in p["predictions"]}

    with AgentProcess(env, tmp_path) as agent:
        assert agent.wait_for(lambda ps: any(classes(p) == {"dog"} for p in ps), timeout=180), agent.stderr()
        status, _, body = request(f"{base}/streams/cam", method="PATCH", body={"prompts": ["truck", "dog"]})
        assert status == 200, body
        assert json.loads(body)["config"]["prompts"] == ["truck", "dog"]
        seen = len(agent.predictions())
        assert agent.wait_for(lambda ps: any(classes(p) == {"truck"} for p in ps[seen:]), timeout=90), agent.stderr()
        settled = len(agent.predictions()) + 1  # a batch already in flight may still use the old set
        assert agent.wait_for(lambda ps: len(ps) >= settled + 2, timeout=90)
        assert all(classes(p) == {"truck"} for p in agent.predictions()[settled:])
        agent.terminate()


def test_a_stream_without_prompts_is_refused_at_start(cache: Path, tmp_path: Path):
    """Grounding DINO finds only the classes it is told: a stream without PROMPTS is a
    configuration error (exit 2, the variable named), not a failure at every frame."""
    clip = lossless_clip(tmp_path / "cam.mkv", [_frame(4)] * 2)
    env = {
        "MODEL_CACHE_DIR": str(cache),
        "OFFLINE_MODE": "true",
        "MODEL_ID": MODEL_ID,
        "STREAMS": f"cam={clip}",
        "STDOUT_SINK": "true",
    }
    with AgentProcess(env, tmp_path) as agent:
        rc = agent.wait(timeout=180)
        log = agent.stderr_path.read_text(errors="replace")
    assert rc == 2, log[-3000:]
    assert "STREAM_CAM_PROMPTS" in log
