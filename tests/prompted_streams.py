"""End-to-end scenarios shared by the text-prompted detectors (Grounding DINO, YOLO-World): a real
agent on file streams with ``STREAM_<NAME>_PROMPTS``, a prompt change through the control API, and a
stream without prompts refused at start.

Each family's test module gives its cache (a tiny checkpoint rigged so that every box scores every
prompt the same, so a stream's detections are all of its first prompt at ``rigged`` confidence) and
its model id; the assertions are the same for every family, so they live here once.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest

from tests.agent_process import AgentProcess
from tests.owl_factory import lossless_clip

SCHEMA = json.loads((Path(__file__).resolve().parent.parent / "pipelines/schemas/prediction.schema.json").read_text())
FRAMES = 2
WIDTH, HEIGHT = 128, 96


def noise_frame(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def streams_publish_their_first_prompt(
    *,
    cache: Path,
    model_id: str,
    agent_id: str,
    rigged: float,
    tmp_path: Path,
    mosquitto: Any,
    mqtt_subscriber_factory: Any,
    tolerance: float = 1e-4,
    strict_stream: bool = False,
) -> None:
    """Streams ``pets`` (``dog|cat``) and ``people`` (a JSON list) publish every frame's boxes as
    their own first prompt, schema-valid, inside the frame; with ``strict_stream`` a third stream
    whose CONFIDENCE is above the rigged score publishes frames with no boxes."""
    names = ["pets", "people"] + (["strict"] if strict_stream else [])
    clips = {
        name: lossless_clip(tmp_path / f"{name}.mkv", [noise_frame(i + 1)] * FRAMES) for i, name in enumerate(names)
    }
    env = {
        "MQTT_HOST": "127.0.0.1",
        "MQTT_PORT": str(mosquitto.port),
        "AGENT_ID": agent_id,
        "MODEL_CACHE_DIR": str(cache),
        "OFFLINE_MODE": "true",
        "MODEL_ID": model_id,
        "SHUTDOWN_TIMEOUT": "60",
        "STREAMS": ";".join(f"{name}={clip}" for name, clip in clips.items()),
        "STREAM_PETS_PROMPTS": "dog|cat",
        "STREAM_PEOPLE_PROMPTS": '["person", "car"]',
        **{f"STREAM_{name.upper()}_MODE": "every" for name in names},
    }
    if strict_stream:
        env["STREAM_STRICT_PROMPTS"] = "person"
        env["STREAM_STRICT_CONFIDENCE"] = "0.9"  # above every rigged score
    sub = mqtt_subscriber_factory(mosquitto, [f"edge-agent/{agent_id}/+/predictions"], qos=1)
    with AgentProcess(env, tmp_path) as agent:
        rc = agent.wait(timeout=300)
        log = agent.stderr_path.read_text(errors="replace")
        assert rc == 0, log[-4000:]
    wanted = len(names) * FRAMES
    assert sub.wait_for(lambda msgs: len({m.json()["message_id"] for m in msgs}) >= wanted, timeout=30)
    got: dict[str, dict[int, dict]] = defaultdict(dict)
    for message in sub.messages:
        payload = message.json()
        jsonschema.validate(payload, SCHEMA)
        got[payload["stream"]][payload["frame_id"]] = payload
    assert {k: len(v) for k, v in got.items()} == {name: FRAMES for name in names}
    if strict_stream:
        assert all(payload["predictions"] == [] for payload in got["strict"].values())
    for stream, first in (("pets", "dog"), ("people", "person")):
        for payload in got[stream].values():
            rows = payload["predictions"]
            assert rows, payload
            assert {r["class"] for r in rows} == {first} and {r["class_id"] for r in rows} == {0}
            assert all(r["confidence"] == pytest.approx(rigged, abs=tolerance) for r in rows)
            assert all(0 <= r["x"] <= WIDTH and 0 <= r["y"] <= HEIGHT for r in rows)


def prompts_change_through_the_control_api(*, cache: Path, model_id: str, tmp_path: Path) -> None:
    """PATCH /streams/NAME {"prompts": [...]} swaps a running stream's classes: the next frames
    publish the new first prompt only."""
    from tests.fixtures.mosquitto import free_port
    from tests.http_client import request

    clip = lossless_clip(tmp_path / "cam.mkv", [noise_frame(3)] * 10)
    port = free_port()
    env = {
        "MODEL_CACHE_DIR": str(cache),
        "OFFLINE_MODE": "true",
        "MODEL_ID": model_id,
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
        url = f"http://127.0.0.1:{port}/streams/cam"
        status, _, body = request(url, method="PATCH", body={"prompts": ["truck", "dog"]})
        assert status == 200, body
        assert json.loads(body)["config"]["prompts"] == ["truck", "dog"]
        seen = len(agent.predictions())
        assert agent.wait_for(lambda ps: any(classes(p) == {"truck"} for p in ps[seen:]), timeout=90), agent.stderr()
        settled = len(agent.predictions()) + 1  # a batch already in flight may still use the old set
        assert agent.wait_for(lambda ps: len(ps) >= settled + 2, timeout=90)
        assert all(classes(p) == {"truck"} for p in agent.predictions()[settled:])
        agent.terminate()


def a_stream_without_prompts_is_refused(*, cache: Path, model_id: str, tmp_path: Path) -> None:
    """A detector that finds only the classes it is told: a stream without PROMPTS is a
    configuration error (exit 2, the variable named), not a failure at every frame."""
    clip = lossless_clip(tmp_path / "cam.mkv", [noise_frame(4)] * 2)
    env = {
        "MODEL_CACHE_DIR": str(cache),
        "OFFLINE_MODE": "true",
        "MODEL_ID": model_id,
        "STREAMS": f"cam={clip}",
        "STDOUT_SINK": "true",
    }
    with AgentProcess(env, tmp_path) as agent:
        rc = agent.wait(timeout=180)
        log = agent.stderr_path.read_text(errors="replace")
    assert rc == 2, log[-3000:]
    assert "STREAM_CAM_PROMPTS" in log
