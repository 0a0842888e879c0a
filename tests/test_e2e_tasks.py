"""Segmentation, keypoint and classification models served by the test Roboflow API as
``project/version``, downloaded by the agent and run on streams end to end to a real mosquitto;
every message is validated against its task's JSON Schema in ``pipelines/schemas/``.

Each served model returns the same outputs whatever the frame (640x480 clip stretched to 320x320,
source = input x (2, 1.5)), so every message must hold exactly what is computed here by hand. The
three segmentation streams share one model (one batch) with different mask outputs.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from tests.agent_process import AgentProcess
from tests.onnx_factory import constant_outputs, letterbox_env
from tools.synthworld import write_clip

SCHEMAS = Path(__file__).resolve().parent.parent / "pipelines" / "schemas"
AGENT = "tasks"


def schema(task: str) -> dict:
    return json.loads((SCHEMAS / f"{task}.schema.json").read_text())


def _scores(values) -> bytes:  # type: ignore[no-untyped-def]
    """A classifier whose output for every image is ``values``: (B, C)."""
    return constant_outputs({"output0": np.asarray(values, np.float32)})


def _seg_model() -> bytes:
    # One box: input 40..120 x 80..160 -> source 80..240 x 120..240, inside prototype 0's block
    # (cells 5..35 x 15..45 = source 40..280 x 90..270), so the mask is the box's pixels.
    protos = np.full((32, 80, 80), -10.0, np.float32)
    protos[0, 15:45, 5:35] = 10.0
    out0 = np.zeros((4 + 1 + 32, 2), np.float32)
    out0[:6, 0] = (80, 120, 80, 80, 0.9, 1.0)
    out0[:5, 1] = (200, 200, 20, 20, 0.3)  # below the stream thresholds
    return constant_outputs({"output0": out0, "output1": protos})


def _rfdetr_seg_model() -> bytes:
    boxes = np.array([[0.25, 0.375, 0.125, 0.25]], np.float32)  # source 120..200 x 120..240
    logits = np.array([[4.0]], np.float32)
    masks = np.full((1, 80, 80), -5.0, np.float32)
    masks[0, 20:40, 10:40] = 5.0  # source 80..320 x 120..240: wider than the box
    return constant_outputs({"dets": boxes, "labels": logits, "masks": masks})


def _pose_model() -> bytes:
    out0 = np.zeros((4 + 1 + 6, 1), np.float32)
    out0[:, 0] = (100, 100, 40, 40, 0.9, 90, 95, 0.8, 110, 130, 0.0)  # tail at 0: never listed
    return constant_outputs({"output0": out0})


# stream -> (task, modelType, onnx, classes, weights file in the cache, STREAM_ overrides)
STREAMS = {
    "seg": ("instance-segmentation", "yolov8n-seg", _seg_model, ["shape"], "weights.onnx", {}),
    "segsimple": (
        "instance-segmentation",
        "yolov8n-seg",
        _seg_model,
        ["shape"],
        "weights.onnx",
        {"MASK_OUTPUT": "simplified", "MASK_TOLERANCE": "3"},
    ),
    "segnone": (
        "instance-segmentation",
        "yolov8n-seg",
        _seg_model,
        ["shape"],
        "weights.onnx",
        {"MASK_OUTPUT": "none", "CONFIDENCE": "0.5"},
    ),
    "detrseg": ("instance-segmentation", "rfdetr-seg-small", _rfdetr_seg_model, ["thing"], "weights.onnx", {}),
    "pose": ("keypoint-detection", "yolov8n-pose", _pose_model, ["person"], "weights.onnx", {}),
    "cls": (
        "classification",
        "vit",
        lambda: _scores([1.0, 3.0, 0.0]),
        ["a", "b", "c"],
        "best.onnx",
        {"CONFIDENCE": "0.1"},
    ),
    "multi": (
        "multi-label-classification",
        "resnet18",
        lambda: _scores([2.0, -1.0, 0.0]),
        ["a", "b", "c"],
        "best.onnx",
        {"CONFIDENCE": "0.45"},
    ),
}
MODEL_OF = {"seg": "seg", "segsimple": "seg", "segnone": "seg"}  # streams sharing one served model
BOX_CORNERS = {(80.5, 120.5), (80.5, 239.5), (239.5, 239.5), (239.5, 120.5)}


def _check(name: str, m: dict) -> None:
    preds = m["predictions"]
    if name in ("seg", "segsimple", "segnone"):
        assert len(preds) == 1
        p = preds[0]
        assert (p["x"], p["y"], p["width"], p["height"], p["class"]) == (160, 180, 160, 120, "shape")
        if name == "segnone":
            assert "points" not in p and "mask_format" not in p
        else:
            assert p["mask_format"] == "polygon"
            assert {(q["x"], q["y"]) for q in p["points"]} == BOX_CORNERS
    elif name == "detrseg":
        (p,) = preds
        assert (p["x"], p["y"], p["width"], p["height"]) == (160, 180, 80, 120)
        xs = [q["x"] for q in p["points"]]
        assert min(xs) < 100 and max(xs) > 300  # the mask is wider than the box (not cropped)
    elif name == "pose":
        (p,) = preds
        assert [(k["class"], k["x"], k["y"], k["confidence"]) for k in p["keypoints"]] == [
            ("nose", 180.0, 142.5, pytest.approx(0.8))
        ]
    elif name == "cls":
        e = np.exp([1.0, 3.0, 0.0])
        probs = e / e.sum()  # b 0.8438, a 0.1142, c 0.0420 (< 0.1: dropped)
        assert m["top"] == "b" and m["confidence"] == round(float(probs[1]), 4)
        assert [(p["class"], p["confidence"]) for p in preds] == [
            ("b", round(float(probs[1]), 4)),
            ("a", round(float(probs[0]), 4)),
        ]
    elif name == "multi":
        assert m["predicted_classes"] == ["a", "c"]  # sigmoid: 0.8808, 0.2689, 0.5
        assert preds["b"] == {"confidence": round(float(1 / (1 + np.exp(1.0))), 4), "class_id": 1}


@pytest.mark.slow
def test_every_task_from_api_to_mqtt(tmp_path: Path, model_server, mosquitto, mqtt_subscriber_factory) -> None:  # type: ignore[no-untyped-def]
    clip = tmp_path / "clip.mp4"
    write_clip(clip, seconds=1, width=640, height=480, seed=3, max_speed=0.0)
    env = {
        "MQTT_HOST": "127.0.0.1",
        "MQTT_PORT": str(mosquitto.port),
        "AGENT_ID": AGENT,
        "API_BASE_URL": model_server.base_url,
        "MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "STREAMS": ";".join(f"{name}={clip}" for name in STREAMS),
    }
    for name, (task, model_type, make, classes, _, overrides) in STREAMS.items():
        project = MODEL_OF.get(name, name)
        if project == name:
            model_server.add_model(
                project,
                "1",
                make(),
                environment=letterbox_env(320, 320, "Stretch to"),
                classes=classes,
                task_type=task,
                model_type=model_type,
                keypoints_metadata=[{"object_class_id": 0, "keypoints": {"0": "nose", "1": "tail"}}]
                if task == "keypoint-detection"
                else None,
            )
        env[f"STREAM_{name.upper()}_MODEL_ID"] = f"{project}/1"
        env[f"STREAM_{name.upper()}_MODE"] = "every"
        for key, value in overrides.items():
            env[f"STREAM_{name.upper()}_{key}"] = value
    sub = mqtt_subscriber_factory(mosquitto, [f"edge-agent/{AGENT}/+/predictions"], qos=1)
    with AgentProcess(env, tmp_path) as agent:
        rc = agent.wait(timeout=240)
        assert rc == 0, agent.stderr()
    stderr = agent.stderr_path.read_text(errors="replace")
    sub.wait_for(lambda msgs: len({m.json()["message_id"] for m in msgs}) >= 30 * len(STREAMS), timeout=20)
    got: dict[str, list[dict]] = defaultdict(list)
    for message in sub.messages:
        payload = message.json()
        got[payload["stream"]].append(payload)
    assert {n: len(got[n]) for n in STREAMS} == dict.fromkeys(STREAMS, 30), stderr[-3000:]
    for name, (task, model_type, _, _, weights, _) in STREAMS.items():
        messages = got[name]
        assert len({m["frame_id"] for m in messages}) == 30, f"{name} ({model_type}): {len(messages)} messages"
        for m in messages:
            jsonschema.validate(m, schema(task))
            assert m["image"] == {"width": 640, "height": 480}
            _check(name, m)
        assert (tmp_path / "cache" / MODEL_OF.get(name, name) / "1" / weights).is_file()
    # The detection schema does not describe a classification message: the schemas are per task.
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(got["multi"][0], schema("prediction"))
