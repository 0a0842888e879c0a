"""Every detector family, served by the test Roboflow API as ``project/version`` with its modelType,
downloaded by the agent and run on a stream end to end to a real mosquitto.

Each served model returns one known candidate set whatever the frame, so the message for every frame
must hold exactly the detections computed here by hand (640x480 clip, stretch to 320x320).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from tests.agent_process import AgentProcess
from tests.onnx_factory import constant_detector, constant_outputs, letterbox_env
from tools.synthworld import write_clip

SCHEMA = json.loads((Path(__file__).resolve().parent.parent / "pipelines/schemas/prediction.schema.json").read_text())
AGENT = "families"
SX, SY = 640 / 320, 480 / 320


def _families() -> dict[str, tuple[str, bytes, list[str], list[tuple[str, list[float]]]]]:
    """stream name -> (modelType, onnx, classes, expected [(class, xyxy source box)])."""
    v5 = np.zeros((3, 7), np.float32)
    v5[0] = (160, 160, 40, 40, 0.9, 0.1, 0.8)
    v5[1] = (162, 160, 40, 40, 0.85, 0.1, 0.7)  # suppressed by NMS
    v8 = np.zeros((6, 2), np.float32)
    v8[:, 0] = (100, 100, 20, 40, 0.9, 0.0)
    v8[:, 1] = (101, 100, 20, 40, 0.8, 0.0)  # suppressed by NMS
    e2e = np.zeros((300, 6), np.float32)
    e2e[0] = (10, 20, 50, 60, 0.9, 1)
    e2e[1] = (11, 20, 51, 60, 0.8, 1)  # kept: end-to-end models are not NMSed
    nas_boxes = np.array([[200, 200, 240, 260], [0, 0, 4, 4]], np.float32)
    nas_scores = np.array([[0.1, 0.95], [0.2, 0.1]], np.float32)
    detr_boxes = np.array([[0.5, 0.5, 0.25, 0.5], [0.1, 0.1, 0.1, 0.1]], np.float32)
    detr_logits = np.array([[-9.0, 3.0], [-9.0, -9.0]], np.float32)

    def box(x1: float, y1: float, x2: float, y2: float) -> list[float]:
        return [x1 * SX, y1 * SY, x2 * SX, y2 * SY]

    return {
        "v5": ("yolov5v2s", constant_outputs({"output0": v5}), ["a", "b"], [("b", box(140, 140, 180, 180))]),
        "v8": ("yolov8n", constant_detector(v8), ["a", "b"], [("a", box(90, 80, 110, 120))]),
        "v10": (
            "yolov10n",
            constant_outputs({"output0": e2e}),
            ["a", "b"],
            [("b", box(10, 20, 50, 60)), ("b", box(11, 20, 51, 60))],
        ),
        "y26": (
            "yolo26n",
            constant_outputs({"output0": e2e}),
            ["a", "b"],
            [("b", box(10, 20, 50, 60)), ("b", box(11, 20, 51, 60))],
        ),
        "nas": (
            "yolo_nas_s",
            constant_outputs({"boxes": nas_boxes, "scores": nas_scores}),
            ["a", "b"],
            [("b", box(200, 200, 240, 260))],
        ),
        "detr": (
            "rfdetr-base",
            constant_outputs({"dets": detr_boxes, "labels": detr_logits}),
            ["background_class83422", "thing"],
            [("thing", box(120, 80, 200, 240))],
        ),
    }


@pytest.mark.slow
def test_every_detector_family_from_api_to_mqtt(
    tmp_path: Path,
    model_server,
    mosquitto,
    mqtt_subscriber_factory,  # type: ignore[no-untyped-def]
) -> None:
    clip = tmp_path / "clip.mp4"
    write_clip(clip, seconds=1, width=640, height=480, seed=3, max_speed=0.0)
    families = _families()
    env = {
        "MQTT_HOST": "127.0.0.1",
        "MQTT_PORT": str(mosquitto.port),
        "AGENT_ID": AGENT,
        "API_BASE_URL": model_server.base_url,
        "MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "STREAMS": ";".join(f"{name}={clip}" for name in families),
    }
    for name, (model_type, onnx_bytes, classes, _) in families.items():
        model_server.add_model(
            name,
            "1",
            onnx_bytes,
            environment=letterbox_env(320, 320, "Stretch to"),
            classes=classes,
            model_type=model_type,
        )
        env[f"STREAM_{name.upper()}_MODEL_ID"] = f"{name}/1"
        env[f"STREAM_{name.upper()}_MODE"] = "every"
    sub = mqtt_subscriber_factory(mosquitto, [f"edge-agent/{AGENT}/+/predictions"], qos=1)
    with AgentProcess(env, tmp_path) as agent:
        rc = agent.wait(timeout=180)  # every stream is a file: the agent ends when they are done
        assert rc == 0, agent.stderr()
    assert sub.wait_for(lambda msgs: len({m.json()["message_id"] for m in msgs}) >= 30 * len(families), timeout=20)
    got: dict[str, list[dict]] = defaultdict(list)
    for message in sub.messages:
        payload = message.json()
        got[payload["stream"]].append(payload)
    for name, (model_type, _, _, expected) in families.items():
        messages = got[name]
        assert len({m["frame_id"] for m in messages}) == 30, f"{name} ({model_type}): {len(messages)} messages"
        for m in messages:
            jsonschema.validate(m, SCHEMA)
            assert m["model_id"] == f"{name}/1" and m["image"] == {"width": 640, "height": 480}
            preds = sorted(m["predictions"], key=lambda p: p["x"])
            assert [p["class"] for p in preds] == [c for c, _ in sorted(expected, key=lambda e: e[1][0])], name
            for p, (_, (x1, y1, x2, y2)) in zip(preds, sorted(expected, key=lambda e: e[1][0]), strict=True):
                assert abs(p["x"] - (x1 + x2) / 2) <= 0.5 and abs(p["y"] - (y1 + y2) / 2) <= 0.5, (name, p)
                assert abs(p["width"] - (x2 - x1)) <= 0.5 and abs(p["height"] - (y2 - y1)) <= 0.5, (name, p)
    assert (tmp_path / "cache" / "v5" / "1" / "yolov5s_weights.onnx").is_file()  # Roboflow's file name
    assert (tmp_path / "cache" / "v8" / "1" / "weights.onnx").is_file()
