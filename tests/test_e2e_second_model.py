"""End to end with a real agent and a real mosquitto: a second model on a detector's boxes.

One detector (an ONNX model with two fixed boxes: a "plate" around a line of text and a "car"
around a red square) serves three streams of the same clip:

* ``plates``: PP-OCR (real PP-OCRv4 weights) on the plate crops only (SECOND_CLASSES), with a
  margin (SECOND_PADDING): the plate's row carries the text read and its box mapped back to frame
  pixels, inside the crop;
* ``colours``: CLIP on the car crops with the stream's prompts (PROMPTS go to the second model,
  since the detector takes none): the red square's crop is "a red thing";
* ``plain``: no second model: the detector's messages as they always were.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest

from tests.agent_process import AgentProcess
from tests.clip_factory import colour_tokens, text_table, textual_model, visual_model
from tests.fixtures.model_server import onnx_package
from tests.ocr_factory import det_files, rec_files, text_frame
from tests.onnx_factory import constant_detector, letterbox_env
from tests.test_e2e_foundation import _clip_of

SCHEMA = json.loads((Path(__file__).resolve().parent.parent / "pipelines/schemas/prediction.schema.json").read_text())
AGENT = "second"
FRAMES = 3
TEXT, ORIGIN, SCALE = "TRUCK 2024", (40, 150), 2.0
RED_SQUARE = (400, 300, 560, 440)
PADDING = 12


def _scene() -> tuple[np.ndarray, tuple[float, float, float, float]]:
    frame = text_frame([(TEXT, ORIGIN, SCALE)])
    x0, y0, x1, y1 = RED_SQUARE
    frame[y0:y1, x0:x1] = (0, 0, 230)
    (w, h), baseline = cv2.getTextSize(TEXT, cv2.FONT_HERSHEY_SIMPLEX, SCALE, round(2 * SCALE))
    plate = (ORIGIN[0] - 16.0, ORIGIN[1] - h - 16.0, ORIGIN[0] + w + 16.0, ORIGIN[1] + baseline + 16.0)
    return frame, plate


def _detector(plate: tuple[float, ...]) -> bytes:
    """Two fixed boxes, given in the 320x320 input that 640x480 frames are stretched to."""
    prediction = np.zeros((4 + 2, 2), np.float32)
    for anchor, ((x0, y0, x1, y1), cls) in enumerate(((plate, 0), (RED_SQUARE, 1))):
        sx, sy = 320 / 640, 320 / 480
        prediction[:4, anchor] = ((x0 + x1) / 2 * sx, (y0 + y1) / 2 * sy, (x1 - x0) * sx, (y1 - y0) * sy)
        prediction[4 + cls, anchor] = 0.9
    return constant_detector(prediction)


def test_second_models_on_a_detectors_boxes(tmp_path: Path, model_server, mosquitto, mqtt_subscriber_factory):
    frame, plate = _scene()
    clip = _clip_of(tmp_path / "scene.mp4", [frame] * FRAMES)
    model_server.add_model(
        "det", "1", _detector(plate), environment=letterbox_env(320, 320, "Stretch to"), classes=["plate", "car"]
    )
    model_server.add_package_model("pp-ocrv6-det/small", [onnx_package("det1", det_files())], "pp-ocrv6-det")
    model_server.add_package_model("pp-ocrv6-rec/small", [onnx_package("rec1", rec_files())], "pp-ocrv6-rec")
    model_server.add_core_model(
        "clip",
        "ViT-B-16",
        {"visual.onnx": visual_model(64), "textual.onnx": textual_model(text_table(colour_tokens()))},
    )
    env = {
        "MQTT_HOST": "127.0.0.1",
        "MQTT_PORT": str(mosquitto.port),
        "AGENT_ID": AGENT,
        "API_BASE_URL": model_server.base_url,
        "MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "MODEL_ID": "det/1",
        "SHUTDOWN_TIMEOUT": "60",
        "STREAMS": f"plates={clip};colours={clip};plain={clip}",
        "STREAM_PLATES_SECOND_MODEL_ID": "pp_ocr",
        "STREAM_PLATES_SECOND_CLASSES": "plate",
        "STREAM_PLATES_SECOND_PADDING": str(PADDING),  # a text detector wants some margin around the text
        "STREAM_COLOURS_SECOND_MODEL_ID": "clip/ViT-B-16",
        "STREAM_COLOURS_SECOND_CLASSES": '["car"]',
        "STREAM_COLOURS_PROMPTS": "a red thing|a blue thing",
    }
    for name in ("PLATES", "COLOURS", "PLAIN"):
        env[f"STREAM_{name}_MODE"] = "every"
    sub = mqtt_subscriber_factory(mosquitto, [f"edge-agent/{AGENT}/+/predictions"], qos=1)
    with AgentProcess(env, tmp_path) as agent:
        rc = agent.wait(timeout=240)
        log = agent.stderr_path.read_text(errors="replace")
        assert rc == 0, log[-4000:]
    assert sub.wait_for(lambda msgs: len({m.json()["message_id"] for m in msgs}) >= 3 * FRAMES, timeout=30)
    got: dict[str, dict[int, dict]] = defaultdict(dict)
    for message in sub.messages:
        payload = message.json()
        jsonschema.validate(payload, SCHEMA)
        got[payload["stream"]][payload["frame_id"]] = payload
    assert {k: len(v) for k, v in got.items()} == {"plates": FRAMES, "colours": FRAMES, "plain": FRAMES}

    for m in got["plates"].values():
        assert m["model_id"] == "det/1" and m["second_model_id"] == "pp_ocr" and m["second_model_ms"] > 0
        rows = {p["class"]: p for p in m["predictions"]}
        assert set(rows) == {"plate", "car"} and "second_model" not in rows["car"]
        read = rows["plate"]["second_model"]
        assert read["model_id"] == "pp_ocr" and read["result"] == TEXT
        (fragment,) = read["predictions"]
        assert fragment["class"] == TEXT
        # the fragment's box is in frame pixels, inside the plate's crop
        x0, y0, x1, y1 = plate[0] - PADDING, plate[1] - PADDING, plate[2] + PADDING, plate[3] + PADDING
        fx0, fx1 = fragment["x"] - fragment["width"] / 2, fragment["x"] + fragment["width"] / 2
        fy0, fy1 = fragment["y"] - fragment["height"] / 2, fragment["y"] + fragment["height"] / 2
        assert x0 - 1 <= fx0 < fx1 <= x1 + 1 and y0 - 1 <= fy0 < fy1 <= y1 + 1, (fragment, plate)
        assert fx0 < ORIGIN[0] + 10 and fy1 > ORIGIN[1] - 10  # it is the text, not a corner of the crop

    for m in got["colours"].values():
        assert m["second_model_id"] == "clip/ViT-B-16"
        rows = {p["class"]: p for p in m["predictions"]}
        assert "second_model" not in rows["plate"]
        scores = rows["car"]["second_model"]
        assert scores["top"] == "a red thing" and len(scores["similarity"]) == 2

    for m in got["plain"].values():
        assert "second_model_id" not in m and all("second_model" not in p for p in m["predictions"])
        assert sorted(p["class"] for p in m["predictions"]) == ["car", "plate"]


SEG_SCHEMA = json.loads(
    (Path(__file__).resolve().parent.parent / "pipelines/schemas/instance-segmentation.schema.json").read_text()
)
SAM_FRAMES = 2


def test_detector_and_sam2_chain_masks_lie_inside_the_boxes(
    tmp_path: Path, model_server, mosquitto, mqtt_subscriber_factory
):
    """A detector + SAM2 (tiny random weights, Roboflow's legacy weights.pt) on a stream: published
    as instance segmentation with the detector's classes, every mask inside its box."""
    from tests.sam_factory import checkpoint_bytes, original_sam2_state, sam2_model, tiny_sam2_config

    frame, plate = _scene()
    clip = _clip_of(tmp_path / "scene.mp4", [frame] * SAM_FRAMES)
    model_server.add_model(
        "det", "1", _detector(plate), environment=letterbox_env(320, 320, "Stretch to"), classes=["plate", "car"]
    )
    weights = checkpoint_bytes(original_sam2_state(sam2_model(tiny_sam2_config())))
    model_server.add_core_model("sam2", "hiera_tiny", {"weights.pt": weights})
    env = {
        "MQTT_HOST": "127.0.0.1",
        "MQTT_PORT": str(mosquitto.port),
        "AGENT_ID": AGENT,
        "API_BASE_URL": model_server.base_url,
        "MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "MODEL_ID": "det/1",
        "SHUTDOWN_TIMEOUT": "120",
        "STREAMS": f"gate={clip}",
        "STREAM_GATE_MODE": "every",
        "STREAM_GATE_SECOND_MODEL_ID": "sam2/hiera_tiny",
        "STATS_INTERVAL": "1",
    }
    sub = mqtt_subscriber_factory(mosquitto, [f"edge-agent/{AGENT}/+/predictions"], qos=1)
    stats = mqtt_subscriber_factory(mosquitto, [f"edge-agent/{AGENT}/stats"], qos=0)
    with AgentProcess(env, tmp_path) as agent:
        rc = agent.wait(timeout=400)
        log = agent.stderr_path.read_text(errors="replace")
        assert rc == 0, log[-4000:]
    assert "second model sam2/hiera_tiny ready (takes boxes as prompts)" in log
    assert sub.wait_for(lambda msgs: len({m.json()["message_id"] for m in msgs}) >= SAM_FRAMES, timeout=30)
    messages = {m.json()["frame_id"]: m.json() for m in sub.messages}
    assert sorted(messages) == list(range(SAM_FRAMES))  # MODE=every: none dropped at the second model
    boxes = {"plate": plate, "car": RED_SQUARE}
    points_seen = 0
    for m in messages.values():
        jsonschema.validate(m, SEG_SCHEMA)
        assert m["model_id"] == "det/1" and m["second_model_id"] == "sam2/hiera_tiny"
        assert sorted(p["class"] for p in m["predictions"]) == ["car", "plate"]
        for p in m["predictions"]:
            assert p["mask_format"] == "polygon" and p["confidence"] == pytest.approx(0.9)
            x0, y0, x1, y1 = boxes[p["class"]]
            assert (p["x"], p["y"]) == pytest.approx(((x0 + x1) / 2, (y0 + y1) / 2), abs=0.5)  # the detector's box
            for point in p["points"]:  # pixel centres of mask pixels, all inside the box
                assert x0 - 1 <= point["x"] <= x1 + 1 and y0 - 1 <= point["y"] <= y1 + 1, (p["class"], point)
            points_seen += len(p["points"])
    assert points_seen > 0  # the random network does segment something in the boxes
    # the stream's stats count the second model's work (none dropped: MODE=every)
    gate = [m.json()["streams"].get("gate", {}) for m in stats.messages]
    assert any(g.get("second_model_id") == "sam2/hiera_tiny" and g.get("second_model_runs", 0) >= 1 for g in gate)
    assert all(g.get("second_model_dropped", 0) == 0 and g.get("second_model_errors", 0) == 0 for g in gate)


def test_sam2_as_a_streams_own_model_is_refused(tmp_path: Path):
    """SAM2 needs prompts; a stream's frames bring none: exit 2 naming the way to run it."""
    from tests.sam_factory import checkpoint_bytes, original_sam2_state, sam2_model, tiny_sam2_config

    cache = tmp_path / "cache"
    (cache / "sam2" / "hiera_tiny").mkdir(parents=True)
    weights = checkpoint_bytes(original_sam2_state(sam2_model(tiny_sam2_config())))
    (cache / "sam2" / "hiera_tiny" / "weights.pt").write_bytes(weights)
    frame, _ = _scene()
    clip = _clip_of(tmp_path / "scene.mp4", [frame])
    env = {
        "MODEL_CACHE_DIR": str(cache),
        "OFFLINE_MODE": "true",
        "MODEL_ID": "sam2/hiera_tiny",
        "STREAMS": f"cam={clip}",
    }
    with AgentProcess(env, tmp_path) as agent:
        rc = agent.wait(timeout=120)
        log = agent.stderr_path.read_text(errors="replace")
    assert rc == 2, log
    assert "STREAM_CAM_SECOND_MODEL_ID=sam2/hiera_tiny" in log
